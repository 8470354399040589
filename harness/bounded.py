"""Reading a file that comes from outside without trusting its size.

Every file a command-line option names (a key, a public key, a revocation list, an
expectations file, a bundle, a token file) is read through :func:`read_bounded`, or
checked with :func:`check_bounded` where a library reads it afterwards: only regular
files are read (``/dev/zero``, a FIFO or a folder is refused before a byte is read, and
opening never blocks), and never more than ``limit + 1`` bytes, so an endless or huge
input costs at most its limit. Each refusal is one line naming what was being read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: the limits of the files the command line names
KEY_BYTES = 64 << 10
TOKEN_BYTES = 4 << 10
REVOCATIONS_BYTES = 64 << 20
EXPECTATIONS_BYTES = 16 << 20
CERTIFICATE_BYTES = 16 << 20


class BoundedReadError(Exception):
    """A file that is not a regular file, is over its limit or cannot be read (one line)."""


def _open_regular(path: Path, what: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BoundedReadError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise BoundedReadError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BoundedReadError(f"{what} {path} is not a regular file")
    return fd


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refused when it holds more than ``limit``."""
    fd = _open_regular(path, what)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise BoundedReadError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise BoundedReadError(f"{what} {path} is over the limit of {limit} bytes")
    return b"".join(chunks)


def check_bounded(path: Path, limit: int, what: str) -> Path:
    """Refuse ``path`` unless it is a regular file of at most ``limit`` bytes, for a
    library that reads it itself; a missing file is left to that library to report."""
    if not os.path.lexists(path):
        return path
    fd = _open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > limit:
        raise BoundedReadError(f"{what} {path} is over the limit of {limit} bytes")
    return path
