"""Which cases a run executes: shards, resume and retry (a pytest plugin).

- ``--shard I/N`` keeps the I-th of N deterministic, balanced parts of the cases
  pytest selected (after ``-k``/``-m``). Cases are weighed by the durations
  recorded in ``--durations-from RUN`` when given (else all weigh the same) and
  dealt largest first to the lightest shard, ties broken by case id, so every
  machine computes the same split without talking to the others.
- ``--resume RUN`` runs only the cases that have no record in RUN and appends to
  RUN's records (a run killed halfway loses nothing it finished).
- ``--retry-failed RUN`` re-runs the cases whose latest attempt in RUN ended
  unexpectedly and appends the new attempt (record field ``attempt``); the
  effective view (:func:`harness.results.record_files.latest_attempts`) reports a case that
  failed and then passed as ``flaky``.

Every decision works on case keys (target, suite, case), so it does not depend
on where pytest was started. A run's ``run.json`` carries what was selected
(``selection``) so shards can be merged and runs resumed safely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.cases.suite import suite_and_case
from harness.results.build import count_statuses, has_unexpected, time_per_target
from harness.results.case_record import RECORDED_STATUSES, RunSelection
from harness.results.record_files import (
    RecordError,
    RunPaths,
    find_run,
    latest_attempts,
    load_run,
    now_iso,
    read_records,
    repair_torn_tail,
    write_json,
)
from harness.run.case_item import item_target_label

PLUGIN_NAME = "shipei-selection"
WORKEROUTPUT_KEY = "shipei_selection"
#: statuses a retry re-runs when they were not expected
RETRY_STATUSES = tuple(s.value for s in RECORDED_STATUSES if s.is_target_failure or s.is_infra)

CaseKey = tuple[str, str, str]  # (target label, suite, case)


class SelectionError(Exception):
    """A bad --shard/--resume/--retry-failed/--durations-from request."""


#: the most parts --shard may split a run into (each part is a list kept in run.json)
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise SelectionError(f"--shard must be I/N (e.g. 2/4), not {text!r}") from None
        if not sep or not 1 <= shard.index <= shard.count:
            raise SelectionError(f"--shard {text!r}: need 1 <= I <= N")
        if shard.count > MAX_SHARDS:
            raise SelectionError(f"--shard {text!r}: at most {MAX_SHARDS} shards")
        return shard

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def add_options(group: Any) -> None:
    """The selection options, added to the Shipei option group by :mod:`harness.run.plugin`."""
    group.addoption("--shard", dest="shipei_shard", default=None, metavar="I/N",
                    help="run only the I-th of N deterministic, balanced parts of the cases")
    group.addoption("--durations-from", dest="shipei_durations_from", default=None,
                    metavar="RUN", help="balance --shard by the durations recorded in RUN")
    group.addoption("--resume", dest="shipei_resume", default=None, metavar="RUN",
                    help="run only the cases missing from RUN, appending to its records")
    group.addoption("--retry-failed", dest="shipei_retry_failed", default=None, metavar="RUN",
                    help="re-run the cases that ended unexpectedly in RUN, recording the "
                         "new attempt in RUN")


# -- case keys ---------------------------------------------------------------------
def record_key(record: dict[str, Any]) -> CaseKey:
    return (str(record.get("target", "")), str(record.get("suite", "")),
            str(record.get("case", "")))


def item_key(item: pytest.Item) -> CaseKey | None:
    """The key a test's record will carry, or None for a test without a target."""
    label = item_target_label(item)
    if label is None:
        return None
    suite, case = suite_and_case(item)
    return (str(label), suite, case)


def _key_text(key: CaseKey | None, nodeid: str) -> str:
    return "\x1f".join(key) if key else nodeid


def digest(texts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(texts)).encode()).hexdigest()


def _suite_name(arg: str) -> str:
    """The registered suite a pytest path argument names (else the folder's name)."""
    from harness.cases.suite_registry import SuiteRegistryError, discover_suites

    path = Path(arg.split("::")[0]).resolve()
    for name, spec in discover_suites().suites.items():
        try:
            root = spec.path().resolve()
        except SuiteRegistryError:
            continue
        if path == root or path.is_relative_to(root):
            return name
    return path.stem if path.suffix == ".py" else path.name


def requested_selection(config: pytest.Config, shard: Shard | None = None) -> RunSelection:
    """What this pytest session was asked to run, as structured data for ``run.json``."""
    from harness.driver.registry import DEFAULT_TARGET

    opt = config.getoption
    return RunSelection(
        suites=tuple(dict.fromkeys(_suite_name(a) for a in config.args)),
        targets=tuple(dict.fromkeys(opt("shipei_targets") or [DEFAULT_TARGET])),
        markexpr=config.option.markexpr or None, keyword=config.option.keyword or None,
        shard=str(shard) if shard else None,
        models=tuple(str(p) for p in opt("shipei_models") or ()))


# -- splitting ---------------------------------------------------------------------
def split(names: Sequence[str], count: int, weights: dict[str, float] | None = None
          ) -> list[list[str]]:
    """Deal ``names`` into ``count`` parts of near-equal total weight, deterministically.

    Heaviest first, each to the currently lightest part (lowest index on ties);
    with equal weights that is a round robin over the sorted names, so part sizes
    differ by at most one.
    """
    weights = weights or {}
    known = sorted(weights[n] for n in names if n in weights)
    default = known[len(known) // 2] if known else 1.0
    ordered = sorted(names, key=lambda n: (-weights.get(n, default), n))
    parts: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for name in ordered:
        lightest = min(range(count), key=lambda i: (loads[i], len(parts[i]), i))
        parts[lightest].append(name)
        loads[lightest] += weights.get(name, default)
    return parts


#: the least a case weighs: a recorded 0 s (a skip) still costs the harness some time
MIN_CASE_SECONDS = 0.001


def durations_by_key(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for record in records:
        seconds = record.get("duration_s")
        if isinstance(seconds, (int, float)):
            found[_key_text(record_key(record), "")] = max(float(seconds), MIN_CASE_SECONDS)
    return found


# -- previous runs -----------------------------------------------------------------
def resolve_run(results_root: Path, reference: str, option: str) -> Path:
    try:
        return find_run(results_root, reference)
    except FileNotFoundError as exc:
        raise SelectionError(f"{option}: {exc}") from None


def retry_wanted(record: dict[str, Any]) -> bool:
    return record.get("status") in RETRY_STATUSES and not record.get("as_expected", False)


STRIPPED_OPTIONS = ("--run-id", "--results-dir", "--reports-dir", "--resume", "--retry-failed",
                    "-n", "--shard", "--durations-from")
#: options a recorded RunSelection states; replaying a run takes them from it, not argv
SELECTION_OPTIONS = ("--target", "--model", "-k", "-m")


def selection_argv(selected: RunSelection) -> list[str]:
    """pytest arguments that select what ``selected`` says (suites by their registered
    package, targets, -k, -m, models)."""
    from harness.cases.suite_registry import SuiteRegistryError, suite_spec

    argv: list[str] = []
    for name in selected.suites:
        spec = suite_spec(name)
        try:
            argv.append(str(spec.path()) if spec else name)
        except SuiteRegistryError as exc:
            raise SelectionError(str(exc)) from None
    for target in selected.targets:
        argv += ["--target", target]
    for model in selected.models:
        argv += ["--model", model]
    argv += ["-k", selected.keyword] if selected.keyword else []
    argv += ["-m", selected.markexpr] if selected.markexpr else []
    return argv


def _without(args: list[str], flags: tuple[str, ...], positional: list[str] = ()) -> list[str]:
    """``args`` less the given flags (with their values) and less the ``positional``
    arguments pytest was given (the suite paths)."""
    kept: list[str] = []
    skip_next = False
    left = list(positional)
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip_next = "=" not in arg
            continue
        if arg.startswith("-n") and arg[2:].isdigit():
            continue
        if arg in left:
            left.remove(arg)
            continue
        kept.append(arg)
    return kept


def resumable_pytest_args(run_dir: Path) -> list[str]:
    """The pytest arguments that repeat a run: its recorded selection
    (:class:`~harness.results.case_record.RunSelection`) plus the other options it was started
    with, less those a continuation sets itself. Runs made before the selection was
    recorded replay their pytest arguments as they were."""
    try:
        info, _ = load_run(run_dir)
    except RecordError as exc:
        raise SelectionError(f"cannot continue run {run_dir.name}: {exc}") from None
    args = [str(a) for a in info.get("pytest_args") or []]
    if not args:
        raise SelectionError(f"run {run_dir.name} does not record its pytest arguments; "
                             "give --suite/--target/-k/-m again")
    selected = RunSelection.of_run(info)
    positional = info.get("pytest_positional")
    if selected is None or not isinstance(positional, list):
        return _without(args, STRIPPED_OPTIONS)
    options = _without(args, STRIPPED_OPTIONS + SELECTION_OPTIONS, [str(a) for a in positional])
    return selection_argv(selected) + options


class SelectionPlugin:
    """Applies the selection options (registered by :mod:`harness.run.plugin`)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        opt = config.getoption
        results_root = Path(opt("shipei_results"))
        self.shard: Shard | None = None
        self.durations_run: Path | None = None
        self.weights: dict[str, float] = {}
        self.continued: Path | None = None  # the run we resume or retry
        self.mode: list[str] = []
        self.recorded: set[str] = set()
        self.recorded_nodeids: set[str] = set()
        self.to_retry: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.previous_info: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.rerun: dict[str, int] = {}
        try:
            self._configure(results_root)
        except (SelectionError, RecordError) as exc:
            raise pytest.UsageError(str(exc)) from None

    def _configure(self, results_root: Path) -> None:
        opt = self.config.getoption
        resume, retry = opt("shipei_resume"), opt("shipei_retry_failed")
        if resume and retry:
            raise SelectionError("--resume and --retry-failed cannot be combined: resume "
                                 f"run {resume} first, then retry its failures")
        if resume or retry:
            self._load_previous(results_root, resume, retry)
        previous = self.previous_info.get("selection") or {}
        shard_text = opt("shipei_shard") or previous.get("shard")
        if shard_text:
            self.shard = Shard.parse(str(shard_text))
        if previous.get("shard") and str(self.shard) != previous["shard"]:
            raise SelectionError(f"run {self.previous_info.get('run_id')} was shard "
                                 f"{previous['shard']}, not {self.shard}")
        durations = opt("shipei_durations_from") or (
            previous.get("durations_from") if self.shard else None)
        if durations and not self.shard:
            raise SelectionError("--durations-from only applies with --shard")
        if durations:
            self.durations_run = resolve_run(results_root, str(durations), "--durations-from")
            self.weights = durations_by_key(read_records(self.durations_run / "records.jsonl"))

    def _load_previous(self, results_root: Path, resume: str | None, retry: str | None) -> None:
        dirs = {resolve_run(results_root, ref, flag).resolve()
                for flag, ref in (("--resume", resume), ("--retry-failed", retry)) if ref}
        if len(dirs) > 1:
            raise SelectionError("--resume and --retry-failed must name the same run")
        run_dir = dirs.pop()
        self.continued = run_dir
        self.mode = [m for m, ref in (("resume", resume), ("retry-failed", retry)) if ref]
        opt = self.config.option
        if opt.shipei_run_id and opt.shipei_run_id != run_dir.name:
            raise SelectionError(f"--run-id {opt.shipei_run_id} differs from the continued "
                                 f"run {run_dir.name}")
        opt.shipei_run_id = run_dir.name
        opt.shipei_results = run_dir.parent
        self.previous_info, raw = load_run(run_dir, all_attempts=True)
        for record in raw:
            text = _key_text(record_key(record), "")
            self.recorded.add(text)
            self.recorded_nodeids.add(str(record.get("nodeid", "")))
            self.attempts[text] = max(self.attempts.get(text, 0), int(record.get("attempt") or 1))
        self.to_retry = {_key_text(record_key(r), "") for r in latest_attempts(raw)
                         if retry_wanted(r)} if retry else set()

    # -- collection ------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]
                                      ) -> None:
        keyed = [(item, _key_text(item_key(item), item.nodeid)) for item in items]
        info: dict[str, Any] = {"collected": len(keyed),
                                "collected_digest": digest(t for _, t in keyed)}
        if self.shard:
            parts = split([t for _, t in keyed], self.shard.count, self.weights)
            mine = set(parts[self.shard.index - 1])
            keyed = [(item, t) for item, t in keyed if t in mine]
            info.update(shard=str(self.shard), shard_sizes=[len(p) for p in parts])
            if self.durations_run:
                info["durations_from"] = self.durations_run.name
        info.update(selected=len(keyed), selected_digest=digest(t for _, t in keyed),
                    request=requested_selection(config, self.shard).to_dict())
        if self.continued is not None:
            self._check_same_selection(info)
            before = len(keyed)
            keyed = [(item, t) for item, t in keyed if self._wanted_again(item, t)]
            self.rerun = {"to_run": len(keyed), "left_alone": before - len(keyed)}
        kept = {id(item) for item, _ in keyed}
        deselected = [item for item in items if id(item) not in kept]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item, _ in keyed]
        self.info = info
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reads it at the end
            workeroutput[WORKEROUTPUT_KEY] = {"selection": info, "rerun": self.rerun}

    def _wanted_again(self, item: pytest.Item, text: str) -> bool:
        if "retry-failed" in self.mode and text in self.to_retry:
            return True
        if "resume" in self.mode:
            return text not in self.recorded and item.nodeid not in self.recorded_nodeids
        return False

    def _check_same_selection(self, info: dict[str, Any]) -> None:
        previous = self.previous_info.get("selection") or {}
        if "resume" in self.mode and previous.get("selected_digest") and \
                previous["selected_digest"] != info["selected_digest"]:
            raise pytest.UsageError(
                f"the cases selected now ({info['selected']}) are not the ones run "
                f"{self.continued.name if self.continued else '?'} selected "
                f"({previous.get('selected')}); resume with the same suites, targets, -k and -m")

    # -- xdist controller ----------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        found = (getattr(node, "workeroutput", None) or {}).get(WORKEROUTPUT_KEY)
        if found and not self.info:
            self.info, self.rerun = found["selection"], found["rerun"]

    # -- records -----------------------------------------------------------------------
    def next_attempt(self, record: dict[str, Any]) -> int:
        return self.attempts.get(_key_text(record_key(record), ""), 0) + 1

    def describe(self, fresh: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """run.json content and the records already in the run, for a run being opened."""
        if self.continued is None:
            return dict(fresh, selection=self.info or None), []
        from harness.results.merge import compatibility_problems

        problems = compatibility_problems(self.previous_info, fresh)
        if problems:
            raise pytest.UsageError(f"cannot continue run {self.continued.name}: "
                                    + "; ".join(problems))
        repair_torn_tail(self.continued / "records.jsonl")
        _, previous_records = load_run(self.continued, all_attempts=True)
        info = dict(self.previous_info)
        info["continuations"] = [*info.get("continuations", []), {
            "mode": self.mode, "started_at": fresh["started_at"],
            "command_line": fresh["command_line"], "pytest_args": fresh["pytest_args"],
            "git_commit": fresh["git_commit"], "harness_version": fresh["harness_version"],
            "previous_finished_at": info.get("finished_at"),
            "previous_exit_status": info.get("exit_status"),
        }]
        info.update(finished_at=None, exit_status=None)
        return info, previous_records

    def final_info(self) -> dict[str, Any] | None:
        if self.continued is not None and self.previous_info.get("selection"):
            return self.previous_info["selection"]
        return self.info or None


# -- what harness.run.plugin calls -------------------------------------------------------
def _plugin(config: pytest.Config) -> SelectionPlugin | None:
    return config.pluginmanager.get_plugin(PLUGIN_NAME)


def register(config: pytest.Config) -> None:
    config.pluginmanager.register(SelectionPlugin(config), PLUGIN_NAME)


def open_run(config: pytest.Config, fresh: dict[str, Any]
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run_info, records already in the run) for the run the plugin is about to write."""
    plugin = _plugin(config)
    return plugin.describe(fresh) if plugin else (fresh, [])


def attempt_number(config: pytest.Config, record: dict[str, Any]) -> int:
    plugin = _plugin(config)
    return plugin.next_attempt(record) if plugin else 1


def finish_run(config: pytest.Config, run_info: dict[str, Any]) -> None:
    """Fill in what is only known at the end (an xdist controller learns it from workers)."""
    plugin = _plugin(config)
    if plugin is None:
        return
    run_info["selection"] = plugin.final_info()
    if plugin.continued is not None:
        run_info["continuations"][-1].update(finished_at=now_iso(), **plugin.rerun)


# -- what the shipei run command calls ----------------------------------------------------
def continuation_argv(results_root: Path, reports_root: Path, resume: str | None,
                      retry: str | None, numprocesses: str | None) -> list[str]:
    """pytest arguments that continue a run with the suites, targets and filters it had."""
    run_dir = resolve_run(results_root, resume or retry or "", "--resume" if resume
                          else "--retry-failed")
    argv = resumable_pytest_args(run_dir)
    argv += ["--results-dir", str(run_dir.parent), "--reports-dir", str(reports_root)]
    argv += ["--resume", str(run_dir)] if resume else []
    argv += ["--retry-failed", str(run_dir)] if retry else []
    return argv + (["-n", numprocesses] if numprocesses else [])


def finalize(run_dir: Path, reports_root: Path) -> dict[str, Any]:
    """Close a run whose every case is recorded but whose process died before finishing it."""
    from harness.reports.writing import write_reports

    info, records = load_run(run_dir)
    if info.get("finished_at") is None:
        info.update(finished_at=now_iso(), exit_status=1 if has_unexpected(records) else 0,
                    counts=count_statuses(records), target_wall_s=time_per_target(records))
        write_json(run_dir / "run.json", info)
    write_reports(RunPaths(run_dir.parent, reports_root, run_dir.name), info, records)
    return info
