"""Where Shipei keeps reusable derived data (generated cases, compiled artifacts)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CACHE_ENV = "SHIPEI_CACHE_DIR"
T = TypeVar("T")


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


def cached_pickle(path: Path, build: Callable[[], Any], convert: Callable[[Any], T]) -> T:
    """``convert`` of the value pickled at ``path``; where there is none, or it cannot be
    read or converted (a corrupt or foreign cache, rebuilt rather than trusted), of
    ``build()``'s value, which is pickled there first."""
    if path.exists():
        try:
            return convert(pickle.loads(path.read_bytes()))
        except Exception:
            path.unlink(missing_ok=True)
    value = build()
    write_atomically(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return convert(value)
