"""Private scratch folders for intake, that a killed process does not leave behind.

Each folder lives under ``$SHIPEI_CACHE_DIR/intake-scratch`` (per user, never the
shared ``/tmp``) and is named after the process that made it (``<pid>-<random>``).
It is removed when the ``with`` block ends; a process killed inside the block
(SIGKILL, or SIGTERM with no handler) cannot remove it, so every new scratch
folder first sweeps away the folders of processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.cache import cache_dir

SCRATCH = "intake-scratch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` whose process is gone; return them."""
    removed = []
    for path in root.iterdir():
        pid, sep, _ = path.name.partition("-")
        if not sep or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A new empty folder of this process, removed afterwards (or by the next sweep)."""
    root = cache_dir(SCRATCH)
    sweep(root)
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
