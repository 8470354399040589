"""Reports written when a run ends (and by ``shipei report`` from records alone), and the
terminal summary. Which reports are written is the plugins' business
(``shipei_write_reports``, :mod:`harness.hookspec`; the built-in ones are in
:mod:`harness.reports.builtin`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results.case_record import REPORTED_STATUSES, CaseRecord
from harness.results.record_files import RunPaths


def write_reports(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]
                  ) -> list[Path]:
    """Every plugin's reports for a run (from its effective records as JSON objects), in
    registration order; the plugins get the records typed."""
    from harness.hooks import plugin_manager

    typed = [CaseRecord.from_dict(r) for r in records]
    results = plugin_manager().hook.shipei_write_reports(paths=paths, run_info=run_info,
                                                         records=typed)
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


def missing_cases(records: list[dict[str, Any]], run_info: dict[str, Any], run_id: str
                  ) -> list[str]:
    """A warning line when the run did not finish (killed) or records fewer cases than it
    selected; none for a complete run."""
    selected = (run_info.get("selection") or {}).get("selected")
    recorded = len({(r.get("target"), r.get("suite"), r.get("case")) for r in records})
    unfinished = not run_info.get("finished_at")
    if isinstance(selected, int) and recorded < selected:
        return [f"INCOMPLETE: {selected - recorded} of {selected} selected cases have no "
                f"record{' (the run did not finish)' if unfinished else ''}; "
                f"shipei run --resume {run_id} runs them / 未完成：{selected - recorded} 个用例"
                "没有记录"]
    if unfinished:
        return [f"INCOMPLETE: run {run_id} did not finish (killed?); cases after the last "
                f"record may be missing; shipei run --resume {run_id} runs them / 未完成"]
    return []


def terminal_summary(records: list[dict[str, Any]], run_info: dict[str, Any],
                     paths: RunPaths, files: list[Path], slowest: int = 5) -> list[str]:
    lines = ["", f"Shipei run {paths.run_id}", *status_table(records), *missing_cases(
        records, run_info, paths.run_id)]
    wall = run_info.get("target_wall_s") or {}
    timed = [r for r in records if r.get("duration_s")]
    timed_targets = {r["target"] for r in timed}
    for target, seconds in sorted(wall.items()):
        lines.append(f"  wall time on {target}: {seconds:.1f} s" if target in timed_targets
                     else f"  wall time on {target}: not timed (its cases record no duration)")
    by_time = sorted(timed, key=lambda r: r["duration_s"], reverse=True)[:slowest]
    if by_time:
        lines.append(f"slowest {len(by_time)} cases:")
        lines += [f"  {r.get('duration_s', 0.0):8.3f} s  {r['target']}  {r['suite']}::{r['case']}"
                  for r in by_time]
    lines.append(f"records: {paths.records}")
    lines.append(f"run:     {paths.run_json}")
    lines += [f"report:  {f}" for f in files]
    return lines
