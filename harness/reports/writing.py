"""Reports written when a run ends (and by ``shipei report`` from records alone), and the
terminal summary. Which reports are written is the plugins' business
(``shipei_write_reports``, :mod:`harness.hookspec`; the built-in ones are in
:mod:`harness.reports.builtin`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results.case_record import REPORTED_STATUSES
from harness.results.record_files import RunPaths


def write_reports(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]
                  ) -> list[Path]:
    """Every plugin's reports for a run, in registration order."""
    from harness.hooks import plugin_manager

    results = plugin_manager().hook.shipei_write_reports(paths=paths, run_info=run_info,
                                                         records=records)
    return [path for files in reversed(results) for path in files]


def status_table(records: list[dict[str, Any]]) -> list[str]:
    """Counts by status per target, as aligned text lines."""
    statuses = [str(s) for s in REPORTED_STATUSES]
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
