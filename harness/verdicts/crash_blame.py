"""Charging a crash to the case that caused it.

A runtime whose state one case corrupts may abort in the next case the same worker
runs, which passes alone. So a case that crashed (the target's crash, not a kill from
outside, nor a crash its expectations already list) is run once more, alone, in a fresh
worker before it is charged:

- it crashes again: the crash is its own; its record holds both attempts;
- it does not, another case ran before it in the worker that died, and in a second
  fresh worker running that case and then it, it crashes again: the case gets
  the verdict of its run alone (both attempts in its record, ``crash_charged_to``
  naming the other case), and the other case gets a second record, a ``crash`` with
  blame ``target`` and ``left_runtime_corrupted`` set. Records fold by their attempt
  (:func:`harness.results.case_record.fold_attempts`), so that record becomes the other case's
  effective verdict in reports, gates and certificates;
- otherwise (nothing ran before it in that worker, or it does not crash after that
  case either) nobody else can be blamed: its two attempts are two records, which fold
  to ``flaky``.

:class:`WorkerHistory` remembers, per target, the last case each worker ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.cases.case import Case, Outcome
from harness.results.record_files import json_safe, now_iso

#: the record field that marks a record charging a case with a later case's crash
CORRUPTED_FIELD = "left_runtime_corrupted"
#: the record field of a case whose first crash was charged to the case before it
CHARGED_FIELD = "crash_charged_to"


def worth_retrying(outcome: Outcome) -> bool:
    """Whether an outcome is a target's crash in a worker (one to re-run alone)."""
    return outcome.status == "crash" and outcome.blame == "target" \
        and outcome.worker_pid is not None


@dataclass(frozen=True)
class RanCase:
    """A case a worker ran to its end: the case, its record and node id."""

    worker_pid: int
    case: Case
    record: dict[str, Any]
    nodeid: str

    @property
    def name(self) -> str:
        return f"{self.record['suite']}::{self.record['case']}"


class WorkerHistory:
    """The last case each target's worker ran (per target label)."""

    def __init__(self) -> None:
        self._last: dict[str, RanCase] = {}

    def ran(self, label: str, case: Case, outcome: Outcome, record: dict[str, Any],
            nodeid: str) -> None:
        if outcome.worker_pid is not None:
            self._last[label] = RanCase(outcome.worker_pid, case, record, nodeid)

    def before(self, label: str, crash: Outcome) -> RanCase | None:
        """The case the crashed worker ran before ``crash``'s, if any."""
        last = self._last.get(label)
        return last if last is not None and last.worker_pid == crash.worker_pid else None


def first_attempt(crash: Outcome, as_expected: bool) -> dict[str, Any]:
    """The crashed first attempt, as a record's ``previous_attempts`` entry (the writer
    numbers it)."""
    return {"attempt": 1, "status": crash.status, "as_expected": as_expected,
            "message": crash.message, "finished_at": now_iso()}


def alone_note(retry: Outcome) -> str:
    return ("crashed again alone in a fresh worker" if retry.status == "crash"
            else f"{retry.status} alone in a fresh worker")


def corruption_record(previous: RanCase, victim: str, crash: Outcome, retry: Outcome,
                      as_expected: bool) -> dict[str, Any]:
    """The record charging ``previous`` with the crash of ``victim``, the case its worker
    ran next (``crash``), which did not crash alone (``retry``)."""
    record = dict(previous.record)
    record.update(
        status="crash", blame="target", as_expected=as_expected, nodeid=previous.nodeid,
        message=f"left the runtime corrupted: {victim}, run next in the same worker, "
                f"crashed ({crash.message}) and {alone_note(retry)}",
        metrics={**crash.metrics, "crashed_case": victim, "crashed_case_alone": retry.status},
        timings={}, duration_s=0.0, finished_at=now_iso(),
        **{CORRUPTED_FIELD: victim})
    record.pop("previous_attempts", None)
    return json_safe(record)
