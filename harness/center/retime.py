"""The audit's re-timing: a seeded sample of a bundle's timed cases is timed again on the
center's own copy of the target with the vendor's settings, and the vendor's samples are
judged against the center's (:func:`harness.center.timing_audit.compare_timings`).

Intake can only check a bundle's timings against themselves, and says "inconclusive" when
a busy machine could explain what it sees; this is the second look that can decide. The
vendor may be slower than the center (a busy or slower machine); more than
``MAX_SPEEDUP`` times faster on the same hardware, against a quiet center run, is refused;
anything the center cannot compare fairly (other hardware, a busy center) stays
inconclusive and says so.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.center import timing_audit
from harness.center.bundle import RUNS_DIR, OpenedBundle
from harness.cert.sections import is_timed
from harness.results.record_files import load_run


@dataclass(frozen=True)
class TimingComparison:
    case: str
    status: str  # timing_audit's CONSISTENT, REFUSED or INCONCLUSIVE
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"case": self.case, "status": self.status, "reason": self.reason}


def timed_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bundle's passing timed cases, in (case, run) order."""
    return sorted((r for r in records if is_timed(str(r.get("suite")))
                   and r.get("status") == "pass"),
                  key=lambda r: (str(r.get("case")), str(r.get("run_id"))))


def draw_timed(records: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``size`` timed records, picked with ``random.Random(seed)`` (0: none)."""
    timed = timed_records(records)
    if size <= 0 or not timed:
        return []
    return random.Random(seed).sample(timed, min(size, len(timed)))


def _vendor_case(bundle: OpenedBundle, record: dict[str, Any]) -> timing_audit.TimedCase:
    prefix = f"{RUNS_DIR}/{record.get('run_id')}"
    info = json.loads(bundle.files.get(f"{prefix}/run.json", b"{}") or b"{}")
    return timing_audit.from_files(record, bundle.files, prefix, info.get("environment"))


#: runs ``shipei run`` for one case: (sample keys, run id, arguments after ``--``) ->
#: the records of the sample (:func:`harness.center.audit.rerun` with its locations bound)
Rerun = Callable[[list[tuple[str, str]], str, list[str]], list[dict[str, Any]]]


def retime(bundle: OpenedBundle, chosen: list[dict[str, Any]], rerun: Rerun,
           results_dir: Path, run_id: str) -> list[TimingComparison]:
    """Time each chosen record's case again here and compare; one comparison each."""
    found = []
    for index, record in enumerate(chosen, 1):
        case = str(record.get("case"))
        own_run = f"{run_id}-timing-{index}"
        try:
            vendor = _vendor_case(bundle, record)
        except (timing_audit.SamplesUnreadable, ValueError) as exc:
            found.append(TimingComparison(case, timing_audit.REFUSED,
                                          f"the vendor's samples: {exc}"))
            continue
        ours = rerun([(str(record.get("suite")), case)], own_run,
                     timing_audit.perf_run_arguments(record))
        if not ours or ours[0].get("status") != "pass":
            status = ours[0].get("status") if ours else "no record"
            found.append(TimingComparison(case, timing_audit.INCONCLUSIVE,
                                          f"the center's re-timing did not pass ({status}); "
                                          "nothing to compare with"))
            continue
        info, _ = load_run(results_dir / own_run)
        try:
            center = timing_audit.from_run(ours[0], results_dir / own_run,
                                           info.get("environment"))
        except timing_audit.SamplesUnreadable as exc:
            found.append(TimingComparison(case, timing_audit.INCONCLUSIVE,
                                          f"the center's own samples: {exc}"))
            continue
        verdict = timing_audit.compare_timings(vendor, center)
        found.append(TimingComparison(case, verdict.status, verdict.reason))
    return found
