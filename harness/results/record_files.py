"""Run records: ``results/<run-id>/run.json`` and ``records.jsonl``.

Every case record is one JSON line, handed to the kernel with a single
``write(2)`` on an ``O_APPEND`` descriptor as the case finishes, so a run killed
with SIGKILL keeps every finished case (no user-space buffer to lose). The
schemas live in ``harness/schema/`` as JSON Schema and are versioned by
``RECORD_SCHEMA_VERSION``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.results.case_record import (
    RECORD_SCHEMA_VERSION,
    CaseRecord,
    RecordError,
    fold_attempts,
    parse_records,
)

__all__ = ["RECORD_SCHEMA_VERSION", "CaseRecord", "RecordError", "fold_attempts"]
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schema"
RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"


#: what a run id may look like: a folder name, never a path
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain folder name; ValueError with the reason otherwise."""
    if not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise ValueError(f"run id {run_id!r} must be letters, digits, '.', '_' and '-' "
                         "(at most 128, starting with a letter or digit, no '..')")
    return run_id


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


#: types json_safe returns unchanged (a finite float is checked, so not here)
_PLAIN = frozenset({str, int, bool, type(None)})


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) with strings; recurse into containers."""
    if type(value) in _PLAIN:  # the common leaves, without the numpy-scalar probe below
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def _record_json(record: dict[str, Any]) -> str:
    """``record`` as one JSON line; :func:`json_safe` only for a record that needs it (a
    non-finite float or a numpy scalar), which gives the same text."""
    try:
        return json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(json_safe(record), ensure_ascii=False, sort_keys=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def importable_name(path: Path) -> str:
    """A file's path relative to the ``sys.path`` entry it is imported from
    (``suites/operators/test_operators.py``), the same in a checkout and an install."""
    resolved = path.resolve()
    roots = sorted((Path(entry or ".").resolve() for entry in sys.path),
                   key=lambda root: len(root.parts), reverse=True)
    for root in roots:
        if resolved.is_relative_to(root) and resolved != root:
            return resolved.relative_to(root).as_posix()
    return resolved.as_posix()


def file_digests(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of each existing file, keyed by :func:`importable_name`."""
    return {importable_name(p): sha256_file(p) for p in sorted(set(paths)) if p.is_file()}


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


@dataclass
class RunPaths:
    results_root: Path
    reports_root: Path
    run_id: str

    @property
    def run_dir(self) -> Path:
        return self.results_root / self.run_id

    @property
    def report_dir(self) -> Path:
        return self.reports_root / self.run_id

    @property
    def records(self) -> Path:
        return self.run_dir / RECORDS_FILE

    @property
    def run_json(self) -> Path:
        return self.run_dir / RUN_FILE


class StorageError(OSError):
    """Results could not be written (a full disk, a read-only folder); one-line message."""


def check_writable(folder: Path, what: str) -> None:
    """Refuse, before a case runs, a folder records or reports cannot be written to (read
    only, a pseudo-filesystem such as /proc, no space even for an empty file): the first
    existing folder on its path must take a new file. :class:`StorageError` if not."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(f"{what} {folder}: {existing} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".shipei-probe-", dir=existing)
    except OSError as exc:
        raise StorageError(f"{what} {folder} cannot be written to: "
                           f"{exc.strerror or exc}") from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)


class RecordWriter:
    """Appends case records to ``records.jsonl``, durably, one line per case."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._fd = -1
            raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:  # one writer per run: two runs started with one --run-id would interleave
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise StorageError(f"run {path.parent.name} is being written by another shipei "
                               "run (the same --run-id); wait for it to end, or give this "
                               "run another id") from None
        except OSError:  # a file system without locks: nothing to guard with
            pass

    def write(self, record: dict[str, Any]) -> None:
        """Append one whole line. A failed or short write (a full disk) is cut back to
        the last whole line and raised as :class:`StorageError`: never a torn line."""
        data = (_record_json(record) + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise StorageError(f"cannot append to {self.path}: {exc.strerror or exc} "
                               f"(the {self.count} record(s) written before are kept; "
                               "free space, then shipei run --resume RUN)") from None
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename) so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    text = json.dumps(json_safe(data), ensure_ascii=False, indent=2, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of ``records.jsonl``, streaming.

    A torn last line (a run killed mid-write) is skipped; any other line that is not
    a JSON object raises :class:`RecordError` naming the file and line.
    """
    pending: int | None = None  # an undecodable line's number: torn only if it is last
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if pending is not None:
                raise RecordError(f"{path}: line {pending} is not JSON")
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                pending = number
                continue
            if not isinstance(value, dict):
                raise RecordError(f"{path}: line {number} is not a JSON object")
            yield value


def find_run(results_root: Path, run_id: str) -> Path:
    """Resolve a run id (or a unique prefix, or a path) to its run folder."""
    if not run_id.strip():
        raise FileNotFoundError("an empty run id names no run")
    as_path = Path(run_id)
    if (as_path / RECORDS_FILE).exists() or (as_path / RUN_FILE).exists():
        return as_path
    exact = results_root / run_id
    if exact.is_dir():
        return exact
    matches = sorted(p for p in results_root.glob(f"{run_id}*") if p.is_dir())
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileNotFoundError(f"no run {run_id!r} under {results_root}")
    raise FileNotFoundError(f"run id {run_id!r} is ambiguous: {[m.name for m in matches]}")


def load_run_info(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json`` (``{"run_id": ...}`` when it has none); raise
    :class:`RecordError` when it is not a JSON object."""
    run_json = run_dir / RUN_FILE
    if not run_json.exists():
        return {"run_id": run_dir.name}
    try:
        info = json.loads(run_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{run_json} is not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise RecordError(f"{run_json} is not a JSON object")
    return info


def load_run(run_dir: Path, all_attempts: bool = False
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json and the run's records: one per case (:func:`latest_attempts`), or every
    line of ``records.jsonl`` with ``all_attempts``."""
    info = load_run_info(run_dir)
    records_path = run_dir / RECORDS_FILE
    records = list(read_records(records_path)) if records_path.exists() else []
    return info, records if all_attempts else latest_attempts(records)


def latest_attempts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The effective record of each case as JSON objects: :func:`fold_attempts` over the
    typed records (a case that failed and then passed is ``flaky``; an infra_error
    attempt is cleared by a later one)."""
    return [r.to_dict() for r in fold_attempts(parse_records(records))]


def repair_torn_tail(path: Path) -> int:
    """Cut a torn last line (a run killed mid-write) so appended records start clean.

    Returns the number of bytes removed.
    """
    if not path.exists():
        return 0
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)
    return len(data) - keep


def now_iso(at: float | None = None) -> str:
    """UTC time as ISO 8601 to the second: now, or ``at`` (a ``time.time()`` value)."""
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return when.isoformat(timespec="seconds")
