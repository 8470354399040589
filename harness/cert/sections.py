"""Where a suite's records appear on a certificate, and what the timed ones were
measured with.

A suite declares its ``certificate_section`` (:class:`harness.cases.suite_registry.SuiteSpec`):
``conformance`` (pass counts), ``models`` (the model accuracy table), ``performance``
(latency figures) or None (not shown). Suites no spec describes (runs made before suites
declared it) fall back on the names Shipei has always used.
"""

from __future__ import annotations

from typing import Any

from harness.cases.suite_registry import suite_spec

#: fallbacks for suites without a spec
MODEL_SUITES = ("models", "model_file")
PERFORMANCE_SUITE = "performance"
#: settings a profile's ``[performance]`` table can set a minimum for -> their unit
PERFORMANCE_SETTINGS = {"min_queries": "queries", "min_duration_s": "seconds"}


def certificate_section(suite: str) -> str | None:
    spec = suite_spec(suite)
    if spec is not None:
        return spec.certificate_section
    if suite in MODEL_SUITES:
        return "models"
    return "performance" if suite == PERFORMANCE_SUITE else "conformance"


def is_timed(suite: str) -> bool:
    """Whether a suite's records are timed figures (its section is ``performance``), as its
    :class:`~harness.cases.suite_registry.SuiteSpec` declares."""
    return certificate_section(suite) == "performance"


def timed_passes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The passing records of performance-section suites."""
    return [r for r in records if r["status"] == "pass" and is_timed(r["suite"])]


def settings_of(record: dict[str, Any]) -> dict[str, Any]:
    """The measurement settings a timed case recorded (``metrics.settings``)."""
    settings = (record.get("metrics") or {}).get("settings")
    return settings if isinstance(settings, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def recorded_settings(records: list[dict[str, Any]]) -> dict[str, float]:
    """The least of each setting over the passing timed cases (what a certificate
    states); a setting is left out unless every such case recorded it."""
    settings = [settings_of(r) for r in timed_passes(records)]
    found: dict[str, float] = {}
    for key in PERFORMANCE_SETTINGS:
        values = [s.get(key) for s in settings]
        if values and all(_number(v) for v in values):
            found[key] = min(values)  # type: ignore[type-var]
    return found
