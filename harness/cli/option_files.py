"""The command line's side of :mod:`harness.bounded`: a file an option names is read
(or checked before a library reads it) with a limit, and a refusal is the command's one
error line with exit status 2."""

from __future__ import annotations

from pathlib import Path

from harness.bounded import BoundedReadError, check_bounded, read_bounded
from harness.cli.common import CliError


def read_option_file(path: Path, limit: int, what: str) -> bytes:
    try:
        return read_bounded(path, limit, what)
    except BoundedReadError as exc:
        raise CliError(str(exc)) from None


def check_option_file(path: Path, limit: int, what: str) -> Path:
    try:
        return check_bounded(path, limit, what)
    except BoundedReadError as exc:
        raise CliError(str(exc)) from None
