"""A plain (non-editable) install ships the suites, the drivers and the models.

The wheel is built from the files git tracks or would track (what a clean clone
builds), so the check holds for CI and for ``pip install shipei``: every such file
of the packages must be in it. The slow test installs it into a fresh virtual environment
(``--no-deps``; the dependencies come from this environment's site-packages through a
``.pth`` line, which does not make this checkout importable) and runs ``shipei gate``
and ``shipei models`` from an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("harness", "targets", "suites", "models")
BUILD_FILES = ("pyproject.toml", "README.md")

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="needs a git checkout (the wheel is built from "
                                       "the files git tracks)")


def tracked_files() -> list[str]:
    """The files git tracks, or would track (untracked but not ignored): the working
    tree as a clean clone of it would hold it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", "--", *BUILD_FILES, *PACKAGES], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the tracked files (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = dist.glob("shipei-*.whl")
    return path


def test_the_wheel_holds_every_tracked_file_of_the_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [n for n in tracked_files() if n.split("/")[0] in PACKAGES]
    missing = sorted(n for n in shipped if n not in names)
    assert not missing, ("not in the wheel (add them to [tool.setuptools.package-data] in "
                         f"pyproject.toml): {missing}")
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[shipei.targets]" in entry_points and "[pytest11]" in entry_points


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel; returns its bin folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    purelib = Path(subprocess.run(
        [str(env_dir / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "shipei-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" /
                                                                        "python"),
                           "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir / "bin"


def _in_empty_folder(bin_dir: Path, folder: Path, *argv: str) -> subprocess.CompletedProcess:
    folder.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHIPEI_PLUGINS")}
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_gate_and_models_run_from_an_empty_folder_on_the_installed_wheel(
        installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    where = _in_empty_folder(installed, empty, "python", "-c", (
        "import harness, suites, targets, models; "
        "print('\\n'.join(m.__path__[0] for m in (harness, suites, targets, models)))"))
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(installed.parent), f"imported from {path}"
        assert not Path(path).is_relative_to(REPO)

    gate = _in_empty_folder(installed, empty, "shipei", "gate", "--target", "onnxruntime-cpu")
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-2000:]
    (verdict,) = (empty / "reports").glob("*/gate.json")
    assert json.loads(verdict.read_text())["passed"] is True

    zoo = _in_empty_folder(installed, empty, "shipei", "models", "--json")
    assert zoo.returncode == 0, zoo.stderr
    listing = json.loads(zoo.stdout)
    assert Path(listing["models_dir"]).is_relative_to(installed.parent)
    available = [m for m in listing["models"] if m["available"]]
    assert available and all(m["golden"] == "ok" for m in available), listing["models"]
