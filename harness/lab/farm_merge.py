"""Joining a farm's child runs into one run, with ``shipei merge``'s rules.

Each child names its place's URL in its target label (``serial-board,url=rfc2217://…``),
so the children are not parts of one run as they stand: their labels, node ids and
``run.json`` target entries differ by the URL alone. :func:`join` reads each shard's
children as one part under the farm's own label (the URL dropped, the place kept in each
record's ``place``), numbers a re-queued shard's attempts after the lost place's, and
hands the parts to :func:`harness.results.merge.merge_runs`, which checks them (one
environment, one target identity, no case twice) and writes the joined run and its
reports. The child runs stay as they were written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness.lab.farm import Farm, FarmError, Job, place_label
from harness.results.merge import MergeError, MergeResult, Part, merge_runs
from harness.results.record_files import RecordError, load_run, write_json


def _relabel_info(info: dict[str, Any], child_label: str, label: str) -> dict[str, Any]:
    info = copy.deepcopy(info)
    targets = info.get("targets") or {}
    if child_label in targets:
        described = targets.pop(child_label)
        request = dict(described.get("request") or {})
        options = {k: v for k, v in (request.get("options") or {}).items() if k != "url"}
        described["request"] = dict(request, label=label, options=options)
        extra = (described.get("capabilities") or {}).get("extra")
        if isinstance(extra, dict):
            extra.pop("url", None)  # where one place's port answers, not what the board is
        targets[label] = described
    info["targets"] = targets
    return info


def _relabel_record(record: dict[str, Any], child_label: str, label: str, place: str,
                    run_id: str, attempt_base: int) -> dict[str, Any]:
    record = dict(record)
    if record.get("target") == child_label:
        record["target"] = label
    nodeid = str(record.get("nodeid", ""))
    record["nodeid"] = nodeid.replace(f"[{child_label}]", f"[{label}]")
    record["attempt"] = attempt_base + int(record.get("attempt") or 1)
    record["place"] = place
    record["place_run_id"] = run_id
    return record


def shard_part(farm: Farm, job: Job) -> Part:
    """One shard's children (the first place's run and its re-runs) as one part."""
    label = farm.plan.target
    records: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    attempts: dict[tuple[str, str], int] = {}
    for child in job.runs:
        run_dir = farm.plan.results_dir / child.run_id
        if not (run_dir / "run.json").exists():
            continue  # died before it opened its run: it recorded nothing
        try:
            info, raw = load_run(run_dir, all_attempts=True)
        except (OSError, RecordError) as exc:
            raise FarmError(f"cannot join run {child.run_id}: {exc}") from None
        child_label = place_label(label, child.place.url)
        infos.append(_relabel_info(info, child_label, label))
        base = dict(attempts)
        for record in raw:
            key = (str(record.get("suite")), str(record.get("case")))
            joined = _relabel_record(record, child_label, label, child.place.name,
                                     child.run_id, base.get(key, 0))
            attempts[key] = max(attempts.get(key, 0), joined["attempt"])
            records.append(joined)
    if not infos:
        raise FarmError(f"shard {job.shard}: no child run wrote a run folder "
                        f"({', '.join(c.run_id for c in job.runs)})")
    info = dict(infos[0])
    last = infos[-1]
    info.update(finished_at=last.get("finished_at"),
                exit_status=max(int(i.get("exit_status") or 0) for i in infos),
                wall_time_s=sum(float(i.get("wall_time_s") or 0.0) for i in infos),
                selection={"selected": job.size() or len(attempts), "shard": None})
    return Part(farm.plan.results_dir / job.runs[0].run_id, info, records)


def join(farm: Farm, jobs: list[Job]) -> MergeResult:
    """Merge the farm's children into run ``farm.run_id`` (with its reports) and add the
    farm's account (places, re-queues, wall time) to its ``run.json``."""
    parts = [shard_part(farm, job) for job in jobs if job.runs]
    gave_up = any(job.gave_up for job in jobs)
    try:
        result = merge_runs(parts, farm.plan.results_dir, farm.plan.reports_dir,
                            farm.run_id, allow_partial=gave_up)
    except MergeError as exc:
        raise FarmError(f"cannot join the places' runs: {exc}") from None
    result.info["farm"] = farm.summary()
    result.info["wall_time_s"] = farm.summary()["wall_time_s"]
    write_json(Path(result.paths.run_json), result.info)
    return result
