"""Reports written when a run ends (and by ``shipei report`` from records alone)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cases import REPORTED_STATUSES
from harness.junit import write_junit
from harness.modelzoo.report import write_models_report
from harness.perf.report import write_performance_report
from harness.records import RunPaths

ReportWriter = Callable[[RunPaths, dict[str, Any], list[dict[str, Any]]], list[Path]]


def _junit(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]
           ) -> list[Path]:
    return [write_junit(paths.report_dir / "junit.xml", records)]


def _matrix(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]
            ) -> list[Path]:
    """The coverage matrix, when a run put operator cases on more than one target."""
    operator_targets = {r["target"] for r in records if r.get("suite") == "operators"}
    if len(operator_targets) < 2:
        return []
    from harness import matrix

    return matrix.write_reports(matrix.build([(run_info, records)]), paths.report_dir)


#: Writers run in order; each returns the files it wrote.
REPORT_WRITERS: list[ReportWriter] = [
    _junit,
    _matrix,  # matrix.csv, matrix-cases.csv, matrix.html
    write_performance_report,  # performance.html
    write_models_report,  # models.html
]


def write_reports(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]
                  ) -> list[Path]:
    written: list[Path] = []
    for writer in REPORT_WRITERS:
        written.extend(writer(paths, run_info, records))
    return written


def status_table(records: list[dict[str, Any]]) -> list[str]:
    """Counts by status per target, as aligned text lines."""
    statuses = REPORTED_STATUSES
    per_target: dict[str, dict[str, int]] = {}
    unexpected: dict[str, int] = {}
    for record in records:
        counts = per_target.setdefault(record["target"], dict.fromkeys(statuses, 0))
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        if not record.get("as_expected", True):
            unexpected[record["target"]] = unexpected.get(record["target"], 0) + 1
    width = max([len("target")] + [len(t) for t in per_target])
    lines = ["  ".join(["target".ljust(width), *(s.rjust(7) for s in statuses),
                        "unexpected".rjust(10)])]
    for name, counts in sorted(per_target.items()):
        lines.append("  ".join([name.ljust(width), *(str(counts[s]).rjust(7) for s in statuses),
                                str(unexpected.get(name, 0)).rjust(10)]))
    return lines


def terminal_summary(records: list[dict[str, Any]], run_info: dict[str, Any],
                     paths: RunPaths, files: list[Path], slowest: int = 5) -> list[str]:
    lines = ["", f"Shipei run {paths.run_id}", *status_table(records)]
    wall = run_info.get("target_wall_s") or {}
    for target, seconds in sorted(wall.items()):
        lines.append(f"  wall time on {target}: {seconds:.1f} s")
    by_time = sorted(records, key=lambda r: r.get("duration_s") or 0.0, reverse=True)[:slowest]
    if by_time:
        lines.append(f"slowest {len(by_time)} cases:")
        lines += [f"  {r.get('duration_s', 0.0):8.3f} s  {r['target']}  {r['suite']}::{r['case']}"
                  for r in by_time]
    lines.append(f"records: {paths.records}")
    lines.append(f"run:     {paths.run_json}")
    lines += [f"report:  {f}" for f in files]
    return lines
