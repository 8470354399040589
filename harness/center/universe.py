"""What a complete run is, derived by the center, never taken from the vendor.

The case universe of (suites, target, scope) is what ``shipei run --suite ... --target
LABEL -m SCOPE`` would select with the center's own installed copy of the suites:
pytest collects them (``--collect-only``, in a child process so the caller's imports
stay clean) and every collected item's case key is kept. A run is complete when every
case of that universe has a record and no record names a case outside it; the audit
draws its sample from the universe, so a case a vendor left out can be drawn.

The universe is cached (``$SHIPEI_CACHE_DIR/universe``) per suites, target label (which
names one configuration of a driver in the center's registry; intake has checked the
run's target identity, configuration included, against it), marker expression,
harness version and commit, onnx version and the size and modification time of every
suite file, so editing a suite collects again.

The ``model_file`` suite is left out: its cases are the vendor's own model files
(``--model``), which the center does not have.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import __version__
from harness.cache import cache_dir, write_atomically
from harness.cases.suite_registry import cases_from_user
from harness.results.case_record import RunSelection
from harness.results.fingerprint import git_commit

COLLECT_TIMEOUT_S = 600
#: how many case names or run ids a refusal lists before "and N more"
MAX_SHOWN = 3
CaseKey = tuple[str, str]  # (suite, case)
#: one collection at a time per process (the web registry reviews uploads in threads)
_COLLECTING = threading.Lock()


class UniverseError(Exception):
    """A universe the center cannot derive, or a run that does not cover it (one line)."""


def _suite_dirs(names: Iterable[str]) -> dict[str, Path]:
    from harness.cases.suite_registry import suite_paths

    known = suite_paths()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UniverseError(f"the center has no suite {unknown[0]!r} (it has: "
                            f"{', '.join(sorted(known))})")
    return {name: known[name] for name in sorted(set(names))}


def _files_state(dirs: Iterable[Path]) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for d in dirs
                  for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _cache_key(dirs: dict[str, Path], label: str, markexpr: str) -> str:
    try:
        onnx = metadata.version("onnx")
    except metadata.PackageNotFoundError:
        onnx = ""
    state = {"suites": sorted(dirs), "label": label, "markexpr": markexpr,
             "harness": __version__, "commit": git_commit(), "onnx": onnx,
             "files": _files_state(dirs.values())}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _collect(dirs: dict[str, Path], label: str, markexpr: str) -> list[CaseKey]:
    from harness.center.scratch import scratch_dir

    with scratch_dir() as tmp:
        out = tmp / "cases.json"
        argv = [sys.executable, "-m", "harness.center.universe", str(out), label, markexpr,
                *map(str, dirs.values())]
        done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True,
                              timeout=COLLECT_TIMEOUT_S, check=False, env=_same_imports(dirs))
        if done.returncode != 0 or not out.exists():
            lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines() \
                or ["no output"]
            # pytest's summary line, and the first collection error it names
            errors = [line for line in lines if line.startswith(("ERROR ", "E   "))][:2]
            said = "; ".join([lines[-1], *errors])
            raise UniverseError(f"the center could not collect suites {', '.join(dirs)} for "
                                f"{label}: {said[:600]}")
        keys = json.loads(out.read_text())
    return sorted({(suite, case) for target, suite, case in keys if target == label})


def _same_imports(dirs: dict[str, Path]) -> dict[str, str]:
    """The child's environment, importing the harness and the suites from where this
    process did: run from a checkout beside an installed copy, the two would otherwise
    differ, and pytest refuses a suite file that is not the module already imported."""
    import harness

    # the suites' root first: the child must import the very suite files it is given
    roots = [str(d.resolve().parent.parent) for d in dirs.values()]
    roots.append(str(Path(harness.__file__).resolve().parent.parent))
    if os.environ.get("PYTHONPATH"):
        roots.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(roots)))


@functools.cache
def _memo(suites: tuple[str, ...], label: str, markexpr: str, key: str) -> frozenset[CaseKey]:
    dirs = _suite_dirs(suites)
    path = cache_dir("universe") / f"{key}.json"
    with _COLLECTING:
        if path.exists():
            try:
                return frozenset(tuple(k) for k in json.loads(path.read_text()))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)
        cases = _collect(dirs, label, markexpr)
        write_atomically(path, json.dumps(cases).encode())
    return frozenset(cases)


def expected_cases(suites: Iterable[str], label: str, markexpr: str | None
                   ) -> frozenset[CaseKey]:
    """The (suite, case) keys ``shipei run`` selects here for these suites and target."""
    names = tuple(sorted(s for s in set(suites) if not cases_from_user(s)))
    if not names:
        return frozenset()
    key = _cache_key(_suite_dirs(names), label, markexpr or "")
    return _memo(names, label, markexpr or "", key)


def run_suites(info: dict[str, Any], records: Iterable[dict[str, Any]]) -> list[str]:
    """The suites a run asked for, and any its records name."""
    selection = RunSelection.of_run(info)
    asked = set(selection.suites) if selection else set()
    return sorted(asked | {r["suite"] for r in records})


def _shown(keys: list[CaseKey]) -> str:
    names = ", ".join(f"{s}::{c}" for s, c in keys[:MAX_SHOWN])
    return names + (f" and {len(keys) - MAX_SHOWN} more" if len(keys) > MAX_SHOWN else "")


def check_complete(run_id: str, universe: frozenset[CaseKey], records: list[dict[str, Any]]
                   ) -> None:
    """Every case of the universe has a record and no record is outside it."""
    have = {(r["suite"], r["case"]) for r in records if not cases_from_user(r["suite"])}
    missing = sorted(universe - have)
    if missing:
        raise UniverseError(f"run {run_id} has no record for {len(missing)} of the "
                            f"{len(universe)} cases the center's copy of the suites selects "
                            f"for it: {_shown(missing)}")
    extra = sorted(have - universe)
    if extra:
        raise UniverseError(f"run {run_id} has records for {len(extra)} case(s) the "
                            f"center's copy of the suites does not have: {_shown(extra)}")


def main(argv: list[str]) -> int:
    """``python -m harness.center.universe OUT LABEL MARKEXPR SUITE_DIR...``: collect and
    write the case keys to OUT as JSON."""
    import pytest

    from harness.run.selection import item_key

    out, label, markexpr, *dirs = argv
    keys: list[tuple[str, str, str]] = []

    class Collector:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            keys.extend(k for k in map(item_key, session.items) if k is not None)

    args = [*dirs, "--collect-only", "-q", "-p", "no:cacheprovider", "--target", label,
            "--results-dir", "results", "--reports-dir", "reports"]
    args += ["-m", markexpr] if markexpr else []
    status = int(pytest.main(args, plugins=[Collector()]))
    if status not in (0, 5):
        return status
    Path(out).write_text(json.dumps(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
