"""Pieces the subcommands share."""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A usage or configuration error: printed as one line, exit status 2."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def suites_root() -> Path:
    """Where the ``suites`` package lives (found without importing it)."""
    spec = importlib.util.find_spec("suites")
    if spec is None or not spec.submodule_search_locations:
        raise CliError("the 'suites' package is not installed; pip install shipei")
    return Path(next(iter(spec.submodule_search_locations)))


def known_suites() -> dict[str, Path]:
    """Every registered suite (the ``shipei.suites`` entry-point group) by name, plus any
    folder of test modules under the ``suites`` package."""
    from harness.cases.suite_registry import suite_paths

    found = suite_paths()
    try:
        root = suites_root()
    except CliError:
        return found
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and any(folder.glob("test_*.py")):
            found.setdefault(folder.name, folder)
    return dict(sorted(found.items()))


def resolve_suite(name: str) -> Path:
    suites = known_suites()
    if name in suites:  # a suite name wins over a same-named folder (models/ holds data)
        return suites[name]
    as_path = Path(name)
    if as_path.exists() and (as_path.is_dir() or as_path.suffix == ".py"):
        return as_path
    raise CliError(f"unknown suite {name!r}; known suites: {', '.join(suites) or 'none'}")


def locate_run(results_dir: Path, run_id: str) -> Path:
    """A run folder from an id, a unique prefix or a path; a one-line CliError if none."""
    from harness.results.record_files import RECORDS_FILE, RUN_FILE, find_run

    if not run_id.strip():
        raise CliError("an empty run id names no run")
    try:
        run_dir = find_run(results_dir, run_id)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if not (run_dir / RUN_FILE).is_file() and not (run_dir / RECORDS_FILE).is_file():
        raise CliError(f"{run_dir} is not a run folder (it has no {RUN_FILE} and no "
                       f"{RECORDS_FILE})")
    return run_dir


def load_located_run(results_dir: Path, run_id: str
                     ) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """:func:`locate_run`, then its run.json and effective records; a corrupt or
    unreadable run is a one-line CliError."""
    from harness.results.record_files import RecordError, load_run

    run_dir = locate_run(results_dir, run_id)
    try:
        info, records = load_run(run_dir)
    except RecordError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot read run {run_dir}: {exc.strerror or exc}") from None
    return run_dir, info, records


@contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``what`` under ``path`` into a one-line CliError."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise CliError(f"cannot write {what} to {path}: {exc.strerror or exc}{where}"
                       ) from None


def output_file(path: Path, option: str) -> Path:
    """A file the command is about to write: refused if it is a folder or its folder
    does not exist (never created silently)."""
    if path.is_dir():
        raise CliError(f"{option} {path} is a folder, not a file")
    parent = path.parent
    if not parent.exists():
        raise CliError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise CliError(f"{option} {path}: {parent} is not a folder")
    return path


def add_run_location_options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where run records are (default results/)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="where reports go (default reports/)")


def positive_seconds(text: str) -> float:
    """argparse type: a finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def worker_count(text: str) -> str:
    """argparse type for ``-n``: ``auto``, ``logical`` or a whole number of workers."""
    if text in ("auto", "logical") or (text.isdigit() and int(text) >= 0):
        return text
    raise argparse.ArgumentTypeError(f"must be auto, logical or a number of workers, not {text!r}")
