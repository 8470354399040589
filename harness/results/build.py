"""Building case records and the statistics of a run: pure functions over records, used
by the pytest plugin, selection (resume), merge and the CLI alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.results.case_record import RECORD_SCHEMA_VERSION, Status
from harness.cases.case import Outcome
from harness.verdicts.expectations import Expectation
from harness.results.record_files import json_safe, now_iso
from harness.driver.registry import TargetRequest
from harness.driver.target import refused_by_of

#: blame a non-pass on whom (schema 1.1 ``blame``); outcomes may say so themselves
INFRA_BLAME = "infrastructure"


def blame_of(outcome: Outcome) -> str:
    """Who a non-pass is charged to: the outcome's own word, else by its status."""
    said = str(getattr(outcome, "blame", "") or "")
    if said:
        return said
    status = Status(outcome.status)
    if status is Status.INFRA_ERROR:
        return INFRA_BLAME
    return "target" if status.is_target_failure else ""


def build_record(label: str, suite: str, case: str, outcome: Outcome,
                 expectation: Expectation | None, as_expected: bool, tags: dict[str, Any],
                 duration_s: float, worker_restarts: int) -> dict[str, Any]:
    """One case record (without run id and node id, which the writer adds)."""
    request = TargetRequest.parse(label)
    record = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "target": label,
        "target_name": request.name,
        "configuration": request.configuration,
        "suite": suite,
        "case": case,
        "status": outcome.status,
        "expected_status": expectation.status if expectation else "pass",
        "expectation_reason": expectation.reason if expectation else "",
        "as_expected": as_expected,
        "message": outcome.message,
        "metrics": outcome.metrics,
        "timings": outcome.timings,
        "duration_s": duration_s,
        "placement": outcome.placement,
        "tags": tags,
        "worker_restarts": worker_restarts,
        "finished_at": now_iso(),
    }
    blame = blame_of(outcome)
    if blame:
        record["blame"] = blame
    refused_by = refused_by_of(outcome.message)
    if refused_by:
        record["refused_by"] = refused_by
    return json_safe(record)


def time_per_target(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent on each target's cases (the sum of their durations)."""
    totals: dict[str, float] = {}
    for record in records:
        totals[record["target"]] = totals.get(record["target"], 0.0) + float(
            record.get("duration_s") or 0.0)
    return {k: round(v, 3) for k, v in totals.items()}


def count_statuses(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        per_target = counts.setdefault(record["target"], {})
        per_target[record["status"]] = per_target.get(record["status"], 0) + 1
        if not record.get("as_expected", True):
            per_target["unexpected"] = per_target.get("unexpected", 0) + 1
    return counts


def has_unexpected(records: Iterable[dict[str, Any]]) -> bool:
    """Whether any effective record ended unexpectedly (a flaky retry included)."""
    return any(not r.get("as_expected", True) for r in records)
