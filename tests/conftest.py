"""Shared fixtures for the harness's own tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    results: Path
    reports: Path

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.results.iterdir() if p.is_dir()) if self.results.exists() \
            else []

    def records(self) -> list[dict]:
        (run_dir,) = self.run_dirs()
        return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()
                if line.strip()]


def run_shipei(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
               locations: bool = True) -> CliResult:
    """The ``shipei`` command in a subprocess, with ``run``'s results and reports under
    ``root`` (for module-scoped fixtures that share one run among several tests)."""
    results, reports = root / "results", root / "reports"
    argv = [sys.executable, "-m", "harness", *args]
    if locations and args and args[0] == "run":  # before any '--' meant for pytest
        argv[4:4] = ["--results-dir", str(results), "--reports-dir", str(reports)]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, results, reports)


@pytest.fixture
def shipei_cli(tmp_path: Path):
    """Run the ``shipei`` command in a subprocess with results/reports under tmp_path."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            locations: bool = True) -> CliResult:
        return run_shipei(tmp_path, *args, env=env, timeout=timeout, locations=locations)

    return run


#: set when this session made its own cache folder (and so removes it at the end)
_SESSION_CACHE: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """Each test session gets its own ``SHIPEI_CACHE_DIR`` (unless the user set one), so
    the tests never read or fill the user's ``~/.cache/shipei`` and two sessions never share
    compiled artifacts. It is set in ``os.environ`` before collection, so every subprocess a
    test starts (``shipei run``, pytester runs, xdist workers) inherits it."""
    from harness.cache import CACHE_ENV

    if os.environ.get(CACHE_ENV) or hasattr(config, "workerinput"):
        return
    folder = Path(tempfile.mkdtemp(prefix="shipei-test-cache-"))
    os.environ[CACHE_ENV] = str(folder)
    _SESSION_CACHE.append(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    from harness.cache import CACHE_ENV

    while _SESSION_CACHE:
        folder = _SESSION_CACHE.pop()
        if os.environ.get(CACHE_ENV) == str(folder):
            del os.environ[CACHE_ENV]
        shutil.rmtree(folder, ignore_errors=True)


#: the tiers left out of the default test run: marker -> (option, what they are)
TIERS = {
    "extended": ("--run-extended", "long end-to-end runs that CI runs after the default "
                                   "run (tox -e extended)"),
    "slow": ("--run-slow", "long sweeps, run deliberately"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    for marker, (option, what) in TIERS.items():
        parser.addoption(option, action="store_true", default=False,
                         help=f"also run tests marked {marker} ({what})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of a tier are skipped, saying which option runs them, unless it was given."""
    skips = {marker: pytest.mark.skip(reason=f"{marker}: run with {option}")
             for marker, (option, _) in TIERS.items() if not config.getoption(option)}
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
                break
