"""Where Shipei keeps reusable derived data (generated cases, compiled artifacts)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SHIPEI_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """``$SHIPEI_CACHE_DIR`` (default ``~/.cache/shipei``) joined with ``parts``, created."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "shipei")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
