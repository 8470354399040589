"""Many boards at once: one selection run in shards on several places, then joined.

Each shard is an ordinary ``shipei run --shard I/N`` child, with its own run folder,
against one place's board (``--target LABEL,url=PLACE_URL``). Places take shards from
one queue, so N places run N shards at once. When a child records an ``infra_error``
or dies, the farm asks the place's board to identify (the target's availability
probe): a board that does not answer (lost, its exporter gone, the link down) makes
the place *lost*: it takes no more work, and its shard goes back on the queue with the
cases it finished listed to be left out (:mod:`harness.lab.case_filter`), for another
place. A board that answers keeps its place: an ``infra_error`` that was not the
place's (a link that dropped and came back) stays recorded as it is.
The lost attempts stay in the records as ``infra_error`` attempts, and the re-run is a
later attempt, so :func:`~harness.results.case_record.fold_attempts` clears them: the
board is never blamed for the bench. :mod:`harness.lab.farm_merge` joins the children.

All places of one farm run must be of one identity (the same board, firmware and
driver): the join refuses otherwise, as ``shipei merge`` does.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.record_files import RecordError, load_run, load_run_info, new_run_id

#: pytest arguments every child gets: the farm's case filter, and not labgrid's own
#: pytest plugin (installed with labgrid: the child reaches its board by URL, not by
#: labgrid's environment files and strategies)
CHILD_PYTEST_ARGS = ("-p", "no:labgrid", "-p", "harness.lab.case_filter")
#: target options a place sets itself; the farm's --target must not give them
PLACE_OPTIONS = ("url", "place")


class FarmError(Exception):
    """A farm request that cannot run as given; one line."""


@dataclass(frozen=True)
class Place:
    """A board the farm may use: a name (labgrid place) and where its port answers."""

    name: str
    url: str
    tags: Mapping[str, str] = field(default_factory=dict)
    #: where the board stands (exporter, resource, power: harness.lab.place's identity)
    where: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FarmPlan:
    """What to run on the places: the farm's target label (without a url), the other
    ``shipei run`` arguments (suites, -k, -m, ...) and the pytest arguments after ``--``."""

    target: str
    run_args: tuple[str, ...]
    results_dir: Path
    reports_dir: Path
    run_id: str = ""
    pytest_args: tuple[str, ...] = ()
    shards: int = 0  # 0: shards_per_place for each place
    #: shards per place when ``shards`` is 0: more, smaller shards than places, so a
    #: faster board takes more of them and a lost board's shard is a smaller part
    shards_per_place: int = 1


@dataclass
class ChildRun:
    """One ``shipei run`` child: a shard (or what was left of it) on one place."""

    run_id: str
    shard: int
    place: Place
    returncode: int | None = None
    wall_s: float = 0.0
    lost: str = ""  # why the place is lost ("" when it is not)
    died: bool = False  # exited abnormally, or its run never finished
    finished: set[tuple[str, str]] = field(default_factory=set)
    selected: int | None = None  # the shard's size, as the child selected it


@dataclass
class Job:
    """A shard and what is already done of it."""

    shard: int
    runs: list[ChildRun] = field(default_factory=list)
    gave_up: str = ""

    def done(self) -> set[tuple[str, str]]:
        return set().union(*(r.finished for r in self.runs)) if self.runs else set()

    def size(self) -> int | None:
        return next((r.selected for r in self.runs if r.selected is not None), None)

    def complete(self) -> bool:
        size = self.size()
        return size is not None and len(self.done()) >= size


def place_label(target: str, url: str) -> str:
    """The target label of the farm's target on one place."""
    return f"{target},url={url}"


def check_target(target: str) -> None:
    """Refuse a farm target that names a place or url itself (the farm sets them)."""
    from harness.driver.registry import RegistryError, TargetRequest

    try:
        request = TargetRequest.parse(target)
    except RegistryError as exc:
        raise FarmError(str(exc)) from None
    given = [k for k in PLACE_OPTIONS if k in request.options]
    if given:
        raise FarmError(f"--target {target!r} with --places must not give "
                        f"{' or '.join(given)}=: each place's board is used in turn")


def board_silent(label: str) -> str:
    """Why the target ``label`` is not available now (its board does not identify), or
    "" when it is: the target's own availability probe, through the registry."""
    from harness.driver.registry import TargetRequest, discover

    try:
        target = discover().build(TargetRequest.parse(label))
        availability = target.availability()
    except Exception as exc:  # a driver's failure to probe is the place's too
        return f"{type(exc).__name__}: {exc}"
    return "" if availability.available else availability.reason or "not available"


def child_outcome(run_dir: Path) -> tuple[set[tuple[str, str]], int | None, str]:
    """What a child run finished: the (suite, case) pairs whose latest attempt is not
    ``infra_error``, the shard's size as selected, and what points at the place ("" when
    nothing does: no infra_error and the run finished)."""
    try:
        info, records = load_run(run_dir)
    except (OSError, RecordError) as exc:
        return set(), None, f"its run {run_dir.name} cannot be read: {exc}"
    finished = {(str(r.get("suite")), str(r.get("case"))) for r in records
                if r.get("status") != "infra_error"}
    infra = [r for r in records if r.get("status") == "infra_error"]
    selected = (info.get("selection") or {}).get("selected")
    if infra:
        return finished, selected, (f"{len(infra)} case(s) ended in infra_error, first: "
                                    f"{str(infra[0].get('message', ''))[:200]}")
    if info.get("finished_at") is None:
        return finished, selected, f"its run {run_dir.name} never finished"
    return finished, selected, ""


def _finished(run_dir: Path) -> bool:
    try:
        return load_run_info(run_dir).get("finished_at") is not None
    except (OSError, RecordError):
        return False


class Farm:
    """Runs :class:`FarmPlan` on ``places``: :meth:`run` returns the jobs with their
    child runs (joined by :func:`harness.lab.farm_merge.join`)."""

    def __init__(self, plan: FarmPlan, places: Sequence[Place],
                 command: Sequence[str] = (sys.executable, "-m", "harness"),
                 env: Mapping[str, str] | None = None,
                 log: Callable[[str], None] = print) -> None:
        if not places:
            raise FarmError("no places to run on")
        check_target(plan.target)
        self.plan = plan
        self.places = list(places)
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.log = log
        self.run_id = plan.run_id or new_run_id()
        if plan.shards < 0 or plan.shards_per_place < 1:
            raise FarmError(f"a farm needs at least one shard per place, not "
                            f"shards={plan.shards}, shards_per_place={plan.shards_per_place}")
        count = plan.shards or len(self.places) * plan.shards_per_place
        self.jobs = [Job(i) for i in range(1, count + 1)]
        self._queue: collections.deque[Job] = collections.deque(self.jobs)
        self._busy = 0
        self._healthy = len(self.places)
        self._lock = threading.Condition()
        self.lost: dict[str, str] = {}
        self.wall_s = 0.0

    # -- scheduling ------------------------------------------------------------------
    def run(self) -> list[Job]:
        started = time.monotonic()
        threads = [threading.Thread(target=self._serve, args=(place,), daemon=True)
                   for place in self.places]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for job in self._queue:  # left on the queue: every place was lost
            job.gave_up = job.gave_up or "no place left to run it on"
        self.wall_s = time.monotonic() - started
        return self.jobs

    def _next(self) -> Job | None:
        with self._lock:
            while not self._queue and self._busy:
                self._lock.wait()  # a running job may come back (its place lost)
            if not self._queue:
                return None
            self._busy += 1
            return self._queue.popleft()

    def _serve(self, place: Place) -> None:
        while (job := self._next()) is not None:
            child = self._run_child(job, place)
            with self._lock:
                job.runs.append(child)
                self._busy -= 1
                if child.lost:
                    self.lost[place.name] = child.lost
                    self._healthy -= 1
                    self._requeue(job, child)
                elif child.died and not job.complete():
                    self._retry(job, child)
                self._lock.notify_all()
                if child.lost:
                    return

    def _requeue(self, job: Job, child: ChildRun) -> None:
        if job.complete():
            return
        if self._healthy <= 0:
            job.gave_up = f"place {child.place.name} was lost and no other place is left"
            return
        self.log(f"farm: place {child.place.name} lost ({child.lost}); shard "
                 f"{job.shard}/{len(self.jobs)} re-queued, {len(job.done())} case(s) kept")
        self._queue.append(job)

    def _retry(self, job: Job, child: ChildRun) -> None:
        """A child died on a place whose board still answers: its shard's rest goes back
        on the queue, for any place, as many times as there are places."""
        if len(job.runs) > len(self.places):
            job.gave_up = f"its runs died {len(job.runs)} times (last: {child.run_id})"
            return
        self.log(f"farm: run {child.run_id} died on {child.place.name}; shard "
                 f"{job.shard}/{len(self.jobs)} re-queued, {len(job.done())} case(s) kept")
        self._queue.append(job)

    def _run_child(self, job: Job, place: Place) -> ChildRun:
        attempt = len(job.runs)
        run_id = f"{self.run_id}-s{job.shard}" + (f"-r{attempt}" if attempt else "")
        child = ChildRun(run_id, job.shard, place)
        argv = [*self.command, "run", *self.plan.run_args,
                "--target", place_label(self.plan.target, place.url),
                "--shard", f"{job.shard}/{len(self.jobs)}", "--run-id", run_id,
                "--results-dir", str(self.plan.results_dir),
                "--reports-dir", str(self.plan.reports_dir), "--", *CHILD_PYTEST_ARGS]
        done = job.done()
        if done:
            from harness.lab.case_filter import OPTION, write_case_list
            skip = self.plan.results_dir / f"{run_id}.skip"
            self.plan.results_dir.mkdir(parents=True, exist_ok=True)
            write_case_list(skip, done)
            argv += [OPTION, str(skip)]
        argv += list(self.plan.pytest_args)
        self.log(f"farm: shard {job.shard}/{len(self.jobs)} on {place.name} as run {run_id}")
        started = time.monotonic()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              errors="replace", check=False)
        child.wall_s = time.monotonic() - started
        child.returncode = proc.returncode
        self._keep_output(run_id, proc)
        run_dir = self.plan.results_dir / run_id
        child.finished, child.selected, suspect = child_outcome(run_dir)
        child.died = proc.returncode not in (0, 1) or not _finished(run_dir)
        if proc.returncode not in (0, 1) and not suspect:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            suspect = f"its run exited {proc.returncode}: {tail[0][:200]}"
        if suspect:
            silent = board_silent(place_label(self.plan.target, place.url))
            if silent:
                child.lost = f"{suspect}; the board does not answer now: {silent[:300]}"
            else:
                self.log(f"farm: run {run_id} on {place.name}: {suspect}; the board still "
                         "answers, so the place is kept")
        return child

    def _keep_output(self, run_id: str, proc: subprocess.CompletedProcess[str]) -> None:
        folder = self.plan.reports_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "farm-child.log").write_text(
            f"$ exit {proc.returncode}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            encoding="utf-8")

    def summary(self) -> dict[str, Any]:
        """The farm's own account, for ``run.json`` under ``farm``."""
        return {
            "places": [{"name": p.name, "url": p.url, "tags": dict(p.tags),
                        "where": dict(p.where),
                        "lost": self.lost.get(p.name, ""),
                        "runs": [c.run_id for j in self.jobs for c in j.runs
                                 if c.place.name == p.name]} for p in self.places],
            "shards": len(self.jobs),
            "children": [{"run_id": c.run_id, "shard": c.shard, "place": c.place.name,
                          "exit": c.returncode, "wall_s": round(c.wall_s, 3),
                          "finished_cases": len(c.finished), "lost": c.lost}
                         for j in self.jobs for c in j.runs],
            "requeued": [{"shard": j.shard, "from": j.runs[i].place.name,
                          "to": j.runs[i + 1].place.name, "run_id": j.runs[i + 1].run_id}
                         for j in self.jobs for i in range(len(j.runs) - 1)],
            "gave_up": {str(j.shard): j.gave_up for j in self.jobs if j.gave_up},
            "wall_time_s": round(self.wall_s, 3),
        }
