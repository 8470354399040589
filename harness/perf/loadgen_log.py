"""Reading MLPerf LoadGen's ``mlperf_log_detail.txt`` (``:::MLLOG {json}`` lines)."""

from __future__ import annotations

import json
from typing import Any

LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
_PREFIX = ":::MLLOG "


def parse_detail(text: str) -> dict[str, Any]:
    """Every ``key: value`` LoadGen logged; a repeated key keeps its last value."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith(_PREFIX):
            continue
        try:
            entry = json.loads(line[len(_PREFIX):])
        except json.JSONDecodeError:
            continue
        values[entry.get("key", "")] = entry.get("value")
    return values


def results(detail: dict[str, Any]) -> dict[str, Any]:
    """LoadGen's verdict and figures: validity, what was unmet, its latencies (ns)."""
    found = {key.removeprefix("result_"): value for key, value in detail.items()
             if key.startswith("result_")}
    found["valid"] = found.get("validity") == "VALID"
    found["errors"] = int(detail.get("num_errors", 0) or 0)
    found["version"] = str(detail.get("loadgen_version", ""))
    if "early_stopping_met" in detail:
        found["early_stopping_met"] = detail["early_stopping_met"]
        found["early_stopping_result"] = " ".join(
            str(detail.get("early_stopping_result", "")).split())
    for key in ("effective_min_duration_ms", "effective_min_query_count",
                "effective_samples_per_query", "effective_target_qps",
                "effective_target_latency_ns"):
        if key in detail:
            found[key] = detail[key]
    return found


def unmet(result: dict[str, Any]) -> list[str]:
    """What made a LoadGen result INVALID, in words."""
    reasons = []
    if result.get("min_duration_met") is False:
        reasons.append("minimum duration not reached")
    if result.get("min_queries_met") is False:
        reasons.append("minimum query count not reached")
    if result.get("early_stopping_met") is False:
        reasons.append("early-stopping criterion not met"
                       + (f" ({result['early_stopping_result']})"
                          if result.get("early_stopping_result") else ""))
    if not reasons and not result.get("valid"):
        reasons.append(f"LoadGen reported {result.get('validity', 'no result')}")
    return reasons
