"""Joining runs made apart (the shards of a CI matrix, the boards of a farm) into one run.

:func:`merge_runs` refuses parts that do not belong together, unless told:

- a different environment (platform fingerprint, Python, runtime versions) or
  different targets (``allow_mixed``);
- a case recorded in more than one part (``allow_overlap``: the later part wins);
- an incomplete set: a shard missing, a shard whose records stop short of
  what it selected, or a run that never finished (``allow_partial``).

The merged run is an ordinary run folder: ``run.json`` (the parts' provenance
under ``merged_from``) and ``records.jsonl``, with the usual reports, so it
reports and certifies exactly like a run made in one go.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.driver.target import IDENTITY_FIELDS
from harness.results.record_files import (
    RecordWriter,
    RunPaths,
    latest_attempts,
    load_run,
    new_run_id,
    write_json,
)


class MergeError(Exception):
    """Parts that cannot be merged (as given); the message says why, in one line."""


@dataclass
class Part:
    run_dir: Path
    info: dict[str, Any]
    records: list[dict[str, Any]]  # every line, all attempts

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def selection(self) -> dict[str, Any]:
        return self.info.get("selection") or {}

    def case_keys(self) -> set[tuple[str, str, str]]:
        return {(r.get("target", ""), r.get("suite", ""), r.get("case", "")) for r in self.records}


@dataclass
class MergeResult:
    paths: RunPaths
    info: dict[str, Any]
    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)


def _target_identity(described: dict[str, Any]) -> dict[str, Any]:
    identity = {k: described.get(k) for k in IDENTITY_FIELDS}
    identity["options"] = (described.get("request") or {}).get("options")
    return identity


def compatibility_problems(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why two run descriptions do not describe the same environment and targets."""
    problems: list[str] = []
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    if env_a.get("platform_id") != env_b.get("platform_id"):
        problems.append(f"different platforms ({env_a.get('cpu_model')}, kernel "
                        f"{env_a.get('kernel')} vs {env_b.get('cpu_model')}, kernel "
                        f"{env_b.get('kernel')})")
    if env_a.get("python") != env_b.get("python"):
        problems.append(f"different Python ({env_a.get('python')} vs {env_b.get('python')})")
    runtimes_a, runtimes_b = env_a.get("runtimes") or {}, env_b.get("runtimes") or {}
    changed = sorted(k for k in set(runtimes_a) | set(runtimes_b)
                     if runtimes_a.get(k) != runtimes_b.get(k))
    if changed:
        problems.append("different runtime versions (" + ", ".join(
            f"{k} {runtimes_a.get(k, '-')} vs {runtimes_b.get(k, '-')}" for k in changed) + ")")
    if a.get("harness_version") != b.get("harness_version"):
        problems.append(f"different harness versions ({a.get('harness_version')} vs "
                        f"{b.get('harness_version')})")
    targets_a, targets_b = a.get("targets") or {}, b.get("targets") or {}
    if set(targets_a) != set(targets_b):
        problems.append(f"different targets ({sorted(targets_a)} vs {sorted(targets_b)})")
    for label in sorted(set(targets_a) & set(targets_b)):
        id_a, id_b = _target_identity(targets_a[label]), _target_identity(targets_b[label])
        diff = [k for k in id_a if id_a[k] != id_b[k]]
        if diff:
            problems.append(f"target {label} differs in " + ", ".join(
                f"{k} ({id_a[k]} vs {id_b[k]})" for k in diff))
    return problems


def load_parts(results_root: Path, run_ids: list[str]) -> list[Part]:
    from harness.results.record_files import find_run

    parts: list[Part] = []
    seen: set[Path] = set()
    for run_id in run_ids:
        try:
            run_dir = find_run(results_root, run_id)
        except FileNotFoundError as exc:
            raise MergeError(str(exc)) from None
        if run_dir.resolve() in seen:
            raise MergeError(f"run {run_dir.name} is given twice")
        seen.add(run_dir.resolve())
        info, records = load_run(run_dir, all_attempts=True)
        if not records:
            raise MergeError(f"run {run_dir.name} has no records")
        parts.append(Part(run_dir, info, records))
    return parts


def _check_shards(parts: list[Part], allow_partial: bool) -> dict[str, Any] | None:
    """The merged selection when the parts are shards of one selection; raises on a bad set."""
    sharded = [p for p in parts if p.selection.get("shard")]
    if not sharded:
        return None
    if len(sharded) != len(parts):
        plain = [p.run_id for p in parts if p not in sharded]
        raise MergeError(f"runs {plain} are not shards, the others are; merge them separately")
    counts = {int(p.selection["shard"].split("/")[1]) for p in parts}
    digests = {p.selection.get("collected_digest") for p in parts}
    if len(counts) > 1:
        raise MergeError(f"shards of different splits: /{' and /'.join(map(str, sorted(counts)))}")
    if len(digests) > 1:
        raise MergeError("shards of different case selections (other suites, -k or -m)")
    indices = [int(p.selection["shard"].split("/")[0]) for p in parts]
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise MergeError(f"shard(s) {twice} given more than once")
    (count,) = counts
    missing = sorted(set(range(1, count + 1)) - set(indices))
    if missing and not allow_partial:
        raise MergeError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing; "
                         "merge all shards or pass --allow-partial")
    collected = parts[0].selection.get("collected")
    return {"collected": collected, "collected_digest": digests.pop(),
            "selected": sum(p.selection.get("selected", 0) for p in parts),
            "merged_shards": f"{len(parts)}/{count}"}


def _check_complete(part: Part) -> str | None:
    if part.info.get("finished_at") is None:
        return f"run {part.run_id} never finished (killed?); resume it first: " \
               f"shipei run --resume {part.run_id}"
    selected = part.selection.get("selected")
    recorded = len(part.case_keys())
    if isinstance(selected, int) and recorded < selected:
        return (f"run {part.run_id} recorded {recorded} of the {selected} cases it selected; "
                f"resume it first: shipei run --resume {part.run_id}")
    return None


def _merged_info(parts: list[Part], run_id: str, records: list[dict[str, Any]],
                 selection: dict[str, Any] | None, mixed: bool) -> dict[str, Any]:
    from harness.results.build import count_statuses, time_per_target

    first = parts[0].info
    finished = [p.info.get("finished_at") for p in parts]
    statuses = [p.info.get("exit_status") for p in parts]
    effective = latest_attempts(records)
    info = dict(first)
    info.update(
        run_id=run_id,
        command_line=list(sys.argv),
        started_at=min(str(p.info.get("started_at")) for p in parts),
        finished_at=None if None in finished else max(str(f) for f in finished),
        exit_status=None if None in statuses else max(int(s) for s in statuses),
        wall_time_s=max(float(p.info.get("wall_time_s") or 0.0) for p in parts),
        target_wall_s=time_per_target(effective),
        counts=count_statuses(effective),
        selection=selection if selection is not None else (
            {"selected": len({(r["target"], r["suite"], r["case"]) for r in records})}),
        merged_from=[{
            "run_id": p.run_id,
            "started_at": p.info.get("started_at"),
            "finished_at": p.info.get("finished_at"),
            "exit_status": p.info.get("exit_status"),
            "wall_time_s": p.info.get("wall_time_s"),
            "shard": p.selection.get("shard"),
            "records": len(p.records),
            "git_commit": p.info.get("git_commit"),
            "pytest_args": p.info.get("pytest_args"),  # each part's options, --perf-* included
            "platform_id": (p.info.get("environment") or {}).get("platform_id"),
        } for p in parts],
    )
    info.pop("continuations", None)
    if mixed:
        info["environments"] = {p.run_id: p.info.get("environment") for p in parts}
    return info


def merge_runs(parts: list[Part], results_root: Path, reports_root: Path,
               run_id: str | None = None, allow_mixed: bool = False,
               allow_overlap: bool = False, allow_partial: bool = False) -> MergeResult:
    """Write the union of ``parts`` as a new run and its reports."""
    from harness.reports.writing import write_reports

    if not parts:
        raise MergeError("nothing to merge")
    notes: list[str] = []
    mixed = False
    for part in parts[1:]:
        problems = compatibility_problems(parts[0].info, part.info)
        if problems and not allow_mixed:
            raise MergeError(f"run {part.run_id} does not match {parts[0].run_id}: "
                             f"{'; '.join(problems)} (--allow-mixed to merge anyway)")
        if problems:
            mixed = True
            notes.append(f"{part.run_id} differs from {parts[0].run_id}: {'; '.join(problems)}")
        if part.info.get("git_commit") != parts[0].info.get("git_commit"):
            notes.append(f"{part.run_id} ran harness commit {part.info.get('git_commit')}, "
                         f"{parts[0].run_id} ran {parts[0].info.get('git_commit')}")
    selection = _check_shards(parts, allow_partial)
    for part in parts:
        problem = _check_complete(part)
        if problem and not allow_partial:
            raise MergeError(problem + " (or pass --allow-partial)")
        if problem:
            notes.append(problem)
    owner: dict[tuple[str, str, str], str] = {}
    for part in parts:
        for key in part.case_keys():
            if key in owner and not allow_overlap:
                raise MergeError(f"case {key[1]}::{key[2]} on {key[0]} is in both {owner[key]} "
                                 f"and {part.run_id} (--allow-overlap keeps the later part's)")
            if key in owner:
                notes.append(f"{key[1]}::{key[2]} on {key[0]}: kept {part.run_id}'s record, "
                             f"dropped {owner[key]}'s")
            owner[key] = part.run_id
    run_id = run_id or new_run_id()
    paths = RunPaths(results_root, reports_root, run_id)
    if paths.run_dir.exists():
        raise MergeError(f"run {run_id} already exists under {results_root}")
    records = [dict(r, run_id=run_id, source_run_id=p.run_id) for p in parts for r in p.records
               if owner[(r.get("target", ""), r.get("suite", ""), r.get("case", ""))] == p.run_id]
    info = _merged_info(parts, run_id, records, selection, mixed)
    writer = RecordWriter(paths.records)
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()
    write_json(paths.run_json, info)
    files = write_reports(paths, info, latest_attempts(records))
    return MergeResult(paths, info, records, notes, files)
