"""The runs a certificate rests on: loading them, refusing ones that do not fit, citing them.

A run fits when it finished, its records include the certified target with the
same identity, it was made on this platform (``environment.platform_id``, also
recomputed from the fingerprint so an edited ``run.json`` is caught), with the
same harness version and commit and the same runtime versions, and it selected
exactly the cases the scope asks for (no ``-k``, no ``-x``, the scope's ``-m``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cert.files import cite_file, package_dir, sha256_file
from harness.cert.profile import Scope
from harness.cert.sections import PERFORMANCE_SETTINGS, settings_of, timed_passes
from harness.driver.target import IDENTITY_FIELDS
from harness.results.fingerprint import platform_digest
from harness.results.record_files import RECORDS_FILE, RUN_FILE, load_run

#: pytest options that stop a run early or leave cases out (value-taking ones first)
SELECTING_OPTIONS = ("-k", "-m", "--deselect", "--maxfail", "--shard")
SELECTING_FLAGS = ("-x", "--exitfirst", "--lf", "--last-failed", "--sw", "--stepwise",
                   "--stepwise-skip")
#: record tags that may name the model file a case ran
MODEL_TAGS = ("model_file", "model_path", "source")
FINISHED_STATUSES = (0, 1)
#: a git object id as ``git rev-parse`` prints it (abbreviated or full, SHA-1 or SHA-256)
COMMIT_ID = re.compile(r"[0-9a-f]{7,64}")


class EvidenceError(Exception):
    """A run that cannot back a certificate; the message says why in one line."""


@dataclass
class RunEvidence:
    run_dir: Path
    info: dict[str, Any]
    records: list[dict[str, Any]]  # the certified target's records only (every attempt)
    all_records: int
    distinct_cases: int  # (target, suite, case) keys over all targets

    @property
    def run_id(self) -> str:
        """The run folder's name: what ``find_run`` resolves when the run is verified."""
        return self.run_dir.name

    @property
    def suites(self) -> list[str]:
        return sorted({r["suite"] for r in self.records})

    def citation(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "records_sha256": sha256_file(self.run_dir / RECORDS_FILE),
            "run_json_sha256": sha256_file(self.run_dir / RUN_FILE),
            "records": self.all_records,
            "target_records": len(self.records),
            "suites": self.suites,
            "started_at": self.info.get("started_at"),
            "finished_at": self.info.get("finished_at"),
            "exit_status": self.info.get("exit_status"),
            "pytest_args": run_selection_args(self.info),
            "git_commit": self.info.get("git_commit"),
        }


def load_evidence(run_dir: Path, label: str) -> RunEvidence:
    if not (run_dir / RUN_FILE).is_file():
        raise EvidenceError(f"run {run_dir.name} has no {RUN_FILE}")
    if not (run_dir / RECORDS_FILE).is_file():
        raise EvidenceError(f"run {run_dir.name} has no {RECORDS_FILE}")
    try:
        info, records = load_run(run_dir, all_attempts=True)
    except ValueError as exc:
        raise EvidenceError(f"run {run_dir.name}: {RUN_FILE} is not valid JSON ({exc})") from None
    mine = [r for r in records if r.get("target") == label]
    keys = {(r.get("target"), r.get("suite"), r.get("case")) for r in records}
    return RunEvidence(run_dir, info, mine, len(records), len(keys))


def selection_args(pytest_args: list[str]) -> list[str]:
    """The options in ``pytest_args`` that select or stop cases (with their values)."""
    found: list[str] = []
    args = list(pytest_args)
    for i, arg in enumerate(args):
        option, sep, _ = arg.partition("=")
        if option in SELECTING_OPTIONS:
            found.append(arg if sep else f"{arg} {args[i + 1] if i + 1 < len(args) else ''}")
        elif arg in SELECTING_FLAGS or _joined_short_option(arg) or _node_id(arg):
            found.append(arg)
    return [f.strip() for f in found]


def run_selection_args(info: dict[str, Any]) -> list[str]:
    """What a run selected its cases with, in :func:`selection_args`'s form: from the
    recorded :class:`~harness.results.case_record.RunSelection` (``-k``, ``-m``, ``--shard``, node
    ids among pytest's positional arguments) plus the options that stop or deselect cases,
    which only the command line holds; runs made before 1.1 from their pytest arguments."""
    from harness.results.case_record import RunSelection

    args = [str(a) for a in info.get("pytest_args") or []]
    selection = RunSelection.of_run(info)
    if selection is None:
        return selection_args(args)
    found = [f"-k {selection.keyword}"] if selection.keyword else []
    found += [f"-m {selection.markexpr}"] if selection.markexpr else []
    found += [f"--shard {selection.shard}"] if selection.shard else []
    found += [str(a) for a in info.get("pytest_positional") or [] if _node_id(str(a))]
    stopping = [a for a in selection_args(args)
                if a.split(" ", 1)[0].split("=", 1)[0] in ("--deselect", "--maxfail")
                or a in SELECTING_FLAGS]
    return found + stopping


def _joined_short_option(arg: str) -> bool:
    """``-kEXPR`` or ``-mEXPR``."""
    return arg[:2] in ("-k", "-m") and len(arg) > 2 and not arg.startswith("--")


def _node_id(arg: str) -> bool:
    """A positional ``path::test`` argument, which selects single tests."""
    return "::" in arg and not arg.startswith("-")


def check_scope(evidence: RunEvidence, scope: Scope) -> None:
    """The run selected exactly the scope's cases and recorded every one of them."""
    expected = [f"-m {scope.markexpr}"] if scope.markexpr else []
    got = run_selection_args(evidence.info)
    selection = evidence.info.get("selection") or {}
    merged = str(selection.get("merged_shards") or "")
    done, _, total = merged.partition("/")
    if merged and done == total:  # every shard of a sharded run, merged back into one
        got = [a for a in got if not a.startswith("--shard")]
    selected = selection.get("selected")
    if isinstance(selected, int) and evidence.distinct_cases < selected:
        raise EvidenceError(f"run {evidence.run_id} recorded {evidence.distinct_cases} of the "
                            f"{selected} cases it selected; resume it first "
                            f"(shipei run --resume {evidence.run_id})")
    normalized = [_normalize_mark(a) for a in got]
    if normalized != expected:
        shown = " ".join(got) or "no selection"
        wanted = " ".join(expected) or "no selection (every case)"
        raise EvidenceError(f"run {evidence.run_id} selected cases with {shown}; scope "
                            f"{scope.name!r} needs {wanted}")


def _normalize_mark(arg: str) -> str:
    if arg.startswith("-m") and not arg.startswith("-m ") and len(arg) > 2:
        return "-m " + arg[2:].lstrip("=")
    return arg.replace("-m=", "-m ", 1) if arg.startswith("-m=") else arg


def check_run(evidence: RunEvidence, label: str, identity: dict[str, Any],
              environment: dict[str, Any], harness: dict[str, Any], scope: Scope,
              relevant_paths: list[str], same_machine: bool = True) -> None:
    """Raise :class:`EvidenceError` unless the run fits the target, platform and scope.

    ``same_machine=False`` (evidence from a vendor's lab, see
    :mod:`harness.cert.provenance`) skips the checks that the run was made on this
    platform with the package versions installed here."""
    info, run_id = evidence.info, evidence.run_id
    if info.get("run_id") != run_id:
        raise EvidenceError(f"run folder {run_id} holds run {info.get('run_id')!r} "
                            "(renamed or copied); cite runs under their own id")
    if info.get("exit_status") not in FINISHED_STATUSES or not info.get("finished_at"):
        raise EvidenceError(f"run {run_id} did not finish (exit status "
                            f"{info.get('exit_status')}); re-run it")
    targets = info.get("targets") or {}
    if label not in targets:
        raise EvidenceError(f"run {run_id} has no target {label!r} (it has: "
                            f"{', '.join(sorted(targets)) or 'none'})")
    recorded = targets[label]
    for key in IDENTITY_FIELDS:
        if recorded.get(key) != identity.get(key):
            raise EvidenceError(f"run {run_id} was made with {key} {recorded.get(key)!r}; the "
                                f"target being certified has {identity.get(key)!r}")
    env = info.get("environment") or {}
    if env.get("platform_id") != platform_digest(env):
        raise EvidenceError(f"run {run_id}: its environment does not hash to its platform_id "
                            "(run.json was edited)")
    if same_machine:
        check_same_machine(run_id, env, environment)
    if not evidence.records:
        raise EvidenceError(f"run {run_id} has no records for target {label!r}")
    check_scope(evidence, scope)
    # last: the suite and driver files cited are hashed now, so they must be the run's
    if info.get("harness_version") != harness.get("version"):
        raise EvidenceError(f"run {run_id} was made by harness version "
                            f"{info.get('harness_version')!r}, this is "
                            f"{harness.get('version')!r}; re-run it with this harness")
    check_commit(run_id, info.get("git_commit"), harness.get("git_commit"), relevant_paths)


def check_same_machine(run_id: str, env: dict[str, Any], environment: dict[str, Any]) -> None:
    """The run was made on this platform with the package versions installed here."""
    if env.get("platform_id") != environment.get("platform_id"):
        raise EvidenceError(f"run {run_id} was made on another platform (platform id "
                            f"{str(env.get('platform_id'))[:12]}, this machine "
                            f"{str(environment.get('platform_id'))[:12]})")
    if env.get("runtimes") != environment.get("runtimes"):
        changed = sorted(k for k in set(env.get("runtimes", {})) | set(environment["runtimes"])
                         if env.get("runtimes", {}).get(k) != environment["runtimes"].get(k))
        raise EvidenceError(f"run {run_id} was made with other package versions "
                            f"({', '.join(changed)}) than are installed now")


#: repository paths that never change a record (certification itself, documentation, tests)
IRRELEVANT_PATHS = ("harness/cert", "harness/cli/cmd_cert.py", "harness/cli/cmd_certify.py",
                    "harness/cli/cmd_keys.py",
                    # the center service reads and certifies records; it never makes one
                    "harness/center", "harness/cli/cmd_bundle.py", "harness/cli/cmd_intake.py",
                    "harness/cli/cmd_audit.py", "harness/cli/cmd_db.py",
                    "harness/cli/cmd_serve.py")


def record_paths(suite_dirs: list[Path], driver_files: list[Path]) -> list[str]:
    """Repository paths whose content can change what a run records: the harness core,
    the suites run, the driver's files, the model data folder and pyproject.toml."""
    root = repository_root()
    if root is None:
        return []
    candidates = [root / "harness", root / "models", root / "pyproject.toml",
                  *suite_dirs, *driver_files]
    paths = []
    for path in candidates:
        try:
            relative = path.resolve().relative_to(root)
        except ValueError:  # outside the repository (an installed vendor driver)
            continue
        if path.exists():
            paths.append(relative.as_posix())
    return sorted(set(paths))


def repository_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / ".git").exists() else None


def is_commit_id(value: object) -> bool:
    """A hex object id (7 to 64 digits), never an option or a revision expression."""
    return isinstance(value, str) and COMMIT_ID.fullmatch(value) is not None


def changed_between(old: str, new: str, paths: list[str], root: Path | None = None
                    ) -> list[str]:
    """Files under ``paths`` that differ between two commits (git diff --name-only),
    certification code excluded. Both commits must be hex object ids: they come from
    ``run.json``, which anyone can edit, and reach git as arguments."""
    for commit in (old, new):
        if not is_commit_id(commit):
            raise EvidenceError(f"{str(commit)[:40]!r} is not a git commit id (7 to 64 hex "
                                "digits)")
    root = root or repository_root()
    if root is None:
        raise EvidenceError("not a git checkout: cannot compare harness commits")
    excludes = [f":(exclude){p}" for p in IRRELEVANT_PATHS]
    argv = ["git", "diff", "--name-only", "--end-of-options", old, new, "--", *paths,
            *excludes]
    try:
        out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EvidenceError(f"cannot run git to compare commits: {exc}") from None
    if out.returncode != 0:
        raise EvidenceError(f"cannot compare harness commits {old[:12]} and {new[:12]}: "
                            f"{(out.stderr.strip().splitlines() or ['git failed'])[-1]}")
    return out.stdout.split()


def check_commit(run_id: str, theirs: str | None, ours: str | None,
                 relevant_paths: list[str]) -> None:
    """The run's harness commit is this one, or no file that can change a record differs
    between the two."""
    if theirs is not None and not is_commit_id(theirs):
        raise EvidenceError(f"run {run_id} records git_commit {str(theirs)[:40]!r}, which is "
                            "not a git commit id (7 to 64 hex digits); refusing the run")
    if theirs == ours:
        return
    if not theirs or not ours or not relevant_paths:
        raise EvidenceError(f"run {run_id} was made by harness git_commit {theirs!r}, this "
                            f"is {ours!r}; re-run it with this harness")
    changed = changed_between(theirs, ours, relevant_paths)
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3
                                          else "")
        raise EvidenceError(f"run {run_id} was made by harness commit {theirs[:12]}; since "
                            f"then {shown} changed; re-run it with this harness")


def check_performance_settings(records: list[dict[str, Any]], minimum: dict[str, float]
                               ) -> None:
    """Every passing timed case was measured with at least the profile's minimum query
    count and duration (``[performance]``); raise :class:`EvidenceError` otherwise."""
    if not minimum:
        return
    for record in timed_passes(records):
        settings = settings_of(record)
        for key, least in minimum.items():
            value = settings.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise EvidenceError(f"{record['suite']}::{record['case']} recorded no {key}; "
                                    "its measurement cannot be checked against the profile")
            if value < least:
                raise EvidenceError(
                    f"{record['suite']}::{record['case']} was measured with {key} {value:g}; "
                    f"the profile needs at least {least:g} {PERFORMANCE_SETTINGS[key]} "
                    f"(re-run with --perf-{key.removesuffix('_s').replace('_', '-')} "
                    f"{least:g} or more)")


def check_disjoint(runs: list[RunEvidence]) -> None:
    """One run per suite: two runs of the same suite would let results be picked."""
    owner: dict[str, str] = {}
    for run in runs:
        if run.run_id in owner.values():
            raise EvidenceError(f"run {run.run_id} is cited twice")
        for suite in run.suites:
            if suite in owner:
                raise EvidenceError(f"suite {suite!r} is in runs {owner[suite]} and "
                                    f"{run.run_id}; cite one run per suite")
            owner[suite] = run.run_id


def resolve_model_source(value: str) -> Path | None:
    """A model file named ``package:path/in/package`` or by a path, if it exists here."""
    package, sep, relative = value.partition(":")
    if sep and package.isidentifier():
        root = package_dir(package)
        if root is not None and (root / relative).is_file():
            return root / relative
    path = Path(value)
    return path if path.is_file() else None


def model_files(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cite every model the records name: a file found here (tags ``model_file``,
    ``model_path`` or ``source``) with the sha256 of its bytes, or, for a model made by
    a generator, the ``model_sha256`` its suite recorded."""
    cited: dict[str, dict[str, Any]] = {}
    for record in records:
        tags = record.get("tags") or {}
        where = f"{record['suite']}::{record['case']}"
        recorded = tags.get("model_sha256")
        for key in MODEL_TAGS:
            value = tags.get(key)
            if not isinstance(value, str) or not value or value in cited:
                continue
            path = resolve_model_source(value)
            if path is None:
                if key != "source":  # "source" may be a label or a generator
                    raise EvidenceError(f"model file {value} named by {where} is missing")
                if isinstance(recorded, str) and recorded:
                    cited[value] = {"model": tags.get("model") or record["case"],
                                    "source": value, "sha256": recorded, "generated": True}
                continue
            entry = {"model": tags.get("model") or record["case"], "source": value,
                     **cite_file(path)}
            if recorded and recorded != entry["sha256"]:
                raise EvidenceError(f"model file {value} changed since {where} ran (sha256)")
            cited[value] = entry
            break
    return [cited[k] for k in sorted(cited)]
