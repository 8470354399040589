"""Writing performance suites as plain pytest modules.

A suite's ``conftest.py`` calls :func:`add_options` from ``pytest_addoption``;
its test module calls :func:`define_perf_tests` with its cases. Each test checks
and times one case on the ``target`` fixture, saves the samples beside the run's
records and records the outcome through ``target.conclude``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.perf import samples as samples_io
from harness.perf.cases import PerfCase
from harness.perf.measure import measure_case
from harness.perf.settings import ScenarioSettings

PERF_MARKER = "performance"
#: ``Capabilities.extra`` flag of a target that runs under an emulator (qemu-user)
EMULATED = "emulated"
#: ``Capabilities.extra`` flag of a chip target that runs on the vendor's simulator
SIMULATOR = "simulator"
#: option dest -> ScenarioSettings field
OPTION_FIELDS = {
    "perf_min_duration": "min_duration_s",
    "perf_min_queries": "min_queries",
    "perf_warmup": "warmup_s",
    "perf_batch": "batch_size",
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("shipei-perf", "Shipei performance scenarios")
    group.addoption("--perf-min-duration", type=float, dest="perf_min_duration",
                    metavar="SECONDS", help="minimum timed duration per case (default 10)")
    group.addoption("--perf-min-queries", type=int, dest="perf_min_queries", metavar="N",
                    help="minimum queries (single-stream) or samples (offline) (default 1024)")
    group.addoption("--perf-warmup", type=float, dest="perf_warmup", metavar="SECONDS",
                    help="untimed warm-up per case (default 2)")
    group.addoption("--perf-batch", type=int, dest="perf_batch", metavar="N",
                    help="offline batch size (default 8)")


def settings_for(config: pytest.Config, base: ScenarioSettings) -> ScenarioSettings:
    """``base`` with the ``--perf-*`` options given on the command line applied."""
    changes: dict[str, Any] = {}
    for dest, name in OPTION_FIELDS.items():
        value = config.getoption(dest, default=None)
        if value is None or (name == "batch_size" and base.scenario != "offline"):
            continue
        changes[name] = value
    try:
        return base.with_(**changes)
    except ValueError as exc:
        raise pytest.UsageError(f"--perf-* options: {exc}") from None


def untimed_reason(label: str, extra: Mapping[str, Any]) -> str | None:
    """Why a target's timings are no performance figures (it runs under an emulator, or
    on a chip's simulator on this host's CPU), or None when they are."""
    if extra.get(EMULATED):
        return (f"{label} runs under emulation: its timings are not performance figures, "
                "so the case is not timed")
    if extra.get(SIMULATOR):
        return (f"{label} runs on the chip's simulator on this host's CPU: its timings are "
                "not the chip's, so the case is not timed")
    return None


def check_performance(target: Any, case: PerfCase) -> None:
    """Check and time ``case`` on the ``target`` fixture and record the outcome."""
    config = target.session.config
    if hasattr(config, "workerinput"):
        pytest.skip("performance cases do not run under pytest-xdist: parallel cases "
                    "would time each other")
    reason = untimed_reason(target.label, target.capabilities.extra)
    if reason:
        target.conclude(case.suite, case.name, Outcome("skip", reason), dict(case.tags))
        return
    case = PerfCase(case.suite, case.name, case.model, settings_for(config, case.settings),
                    case.load, case.rtol, case.atol, case.tags)
    result = measure_case(case, target.host, target.capabilities, target.timeout())
    if result.samples is not None:
        paths = target.session.open_run()
        stem = samples_io.file_stem(target.label, case.name)
        relative, logs = samples_io.save(paths.run_dir, stem, result.samples, result.logs)
        result.outcome.metrics["samples_file"] = relative
        result.outcome.metrics["loadgen_logs"] = logs
    tags = dict(case.tags, scenario=case.settings.scenario, model=case.model)
    target.conclude(case.suite, case.name, result.outcome, tags)


def _make_test(case: PerfCase) -> Callable[..., None]:
    def test(target: Any) -> None:
        check_performance(target, case)

    test.__name__ = test.__qualname__ = case.name
    test.__doc__ = f"{case.suite}: {case.settings.scenario} {case.model}"
    return test


def define_perf_tests(namespace: MutableMapping[str, Any], cases: Iterable[PerfCase]) -> int:
    """One test function per case in ``namespace``, marked ``performance``."""
    count = 0
    for case in cases:
        if not case.name.startswith("test") or case.name in namespace:
            raise ValueError(f"bad or repeated case name {case.name!r}")
        test = pytest.mark.shipei_case(suite=case.suite, case=case.name)(_make_test(case))
        test.shipei_perf_case = case  # type: ignore[attr-defined]  # for selection hooks
        namespace[case.name] = getattr(pytest.mark, PERF_MARKER)(test)
        count += 1
    return count
