"""sha256 of the files a certificate cites, named so another machine can find them.

A file inside an importable top-level package is cited as
``{"package": "onnx", "path": "backend/test/data/simple/test_x/model.onnx"}``
(found again with ``importlib`` wherever that package is installed); any other
file by its path as given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.results.record_files import sha256_file  # noqa: F401 - re-exported for the cert modules

SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def package_dir(name: str) -> Path | None:
    """Where the top-level package ``name`` is installed, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def file_ref(path: Path) -> dict[str, str]:
    """How to cite ``path``: relative to the top-level package holding it, if any."""
    resolved = path.resolve()
    found: dict[str, str] | None = None
    for ancestor in resolved.parents:
        if ancestor.name.isidentifier() and package_dir(ancestor.name) == ancestor:
            found = {"package": ancestor.name,
                     "path": resolved.relative_to(ancestor).as_posix()}
    return found or {"path": str(path)}


def resolve_ref(ref: dict[str, str]) -> Path | None:
    if "package" in ref:
        root = package_dir(ref["package"])
        return root / ref["path"] if root else None
    return Path(ref["path"])


def ref_label(ref: dict[str, str]) -> str:
    return f"{ref['package']}:{ref['path']}" if "package" in ref else ref["path"]


def cite_file(path: Path) -> dict[str, str]:
    return {**file_ref(path), "sha256": sha256_file(path)}


def tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(root).parts)
                  and p.suffix not in SKIP_SUFFIXES)


def cite_tree(root: Path) -> list[dict[str, str]]:
    """Every file under ``root`` (caches excluded), each cited with its sha256."""
    return [cite_file(p) for p in tree_files(root)]


_LOADED_MODULES = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
top = sys.argv[1].split(".")[0]
files = {getattr(m, "__file__", None) for n, m in list(sys.modules.items())
         if n == top or n.startswith(top + ".")}
print(json.dumps(sorted(f for f in files if f)))
"""


def loaded_package_files(module: str) -> list[Path]:
    """The files of ``module``'s top-level package that importing ``module`` loads, found
    in a fresh interpreter: a driver's own code, not its neighbours in the package."""
    try:
        out = subprocess.run([sys.executable, "-c", _LOADED_MODULES, module],
                             capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OSError(f"cannot list the files of {module}: {exc}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise OSError(f"importing {module} failed: {last}")
    return [Path(p) for p in json.loads(out.stdout)]


def manifest_digest(cited: list[dict[str, str]]) -> str:
    """One sha256 over a list of cited files (their names and digests)."""
    entries = sorted((ref_label(c), c["sha256"]) for c in cited)
    return sha256_bytes(canonical_json(entries))


def distribution_digest(name: str) -> dict[str, Any] | None:
    """An installed distribution's version and the sha256 of its RECORD (which lists
    the sha256 of every file the wheel installed), or None when it is not installed."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    record = next((f for f in dist.files or [] if f.name == "RECORD"), None)
    record_path = Path(str(dist.locate_file(record))) if record is not None else None
    digest = sha256_file(record_path) if record_path and record_path.is_file() else None
    return {"name": name, "version": dist.version, "record_sha256": digest}


def changed_files(cited: list[dict[str, str]]) -> list[str]:
    """One line for each cited file that is missing here or whose sha256 differs."""
    problems = []
    for entry in cited:
        path = resolve_ref(entry)
        label = ref_label(entry)
        if path is None or not path.is_file():
            problems.append(f"{label} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{label} differs from the certified file (sha256)")
    return problems
