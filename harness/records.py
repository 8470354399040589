"""Run records: ``results/<run-id>/run.json`` and ``records.jsonl``.

Every case record is one JSON line, handed to the kernel with a single
``write(2)`` on an ``O_APPEND`` descriptor as the case finishes, so a run killed
with SIGKILL keeps every finished case (no user-space buffer to lose). The
schemas live in ``harness/schema/`` as JSON Schema and are versioned by
``RECORD_SCHEMA_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECORD_SCHEMA_VERSION = "1.0"
SCHEMA_DIR = Path(__file__).parent / "schema"
RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) with strings; recurse into containers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


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


class RecordWriter:
    """Appends case records to ``records.jsonl``, durably, one line per case."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), ensure_ascii=False, sort_keys=True) + "\n"
        os.write(self._fd, line.encode())
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename) so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(data), ensure_ascii=False, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield records; a torn last line (a run killed mid-write) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def find_run(results_root: Path, run_id: str) -> Path:
    """Resolve a run id (or a unique prefix, or a path) to its run folder."""
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


def load_run(run_dir: Path, all_attempts: bool = False
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json and the run's records: one per case (:func:`latest_attempts`), or every
    line of ``records.jsonl`` with ``all_attempts``."""
    run_json = run_dir / RUN_FILE
    info = json.loads(run_json.read_text()) if run_json.exists() else {"run_id": run_dir.name}
    records_path = run_dir / RECORDS_FILE
    records = list(read_records(records_path)) if records_path.exists() else []
    return info, records if all_attempts else latest_attempts(records)


def _attempt(record: dict[str, Any]) -> int:
    try:
        return int(record.get("attempt") or 1)
    except (TypeError, ValueError):
        return 1


def latest_attempts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The effective record of each case of a run retried with ``--retry-failed``.

    A retried case has several lines (``attempt`` 1, 2, ...); its effective
    record is the last attempt, with the earlier ones under ``previous_attempts``.
    A case whose earlier attempt ended unexpectedly and whose last attempt passed
    is reported with the derived status ``flaky`` (not ``pass``), ``as_expected``
    false and ``flaky`` true. Cases never retried pass through unchanged.
    """
    records = list(records)
    key = _attempt_key
    retried = {key(r) for r in records if _attempt(r) > 1}
    if not retried:
        return records
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        if key(record) in retried:
            groups.setdefault(key(record), []).append(record)
    effective: list[dict[str, Any]] = []
    for record in records:
        k = key(record)
        if k not in retried:
            effective.append(record)
        elif k in groups:
            effective.append(_collapse(groups.pop(k)))
    return effective


def _attempt_key(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(record.get(f, "")) for f in ("target", "suite", "case"))


def _collapse(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(enumerate(attempts), key=lambda pair: (_attempt(pair[1]), pair[0]))
    *earlier, last = [record for _, record in ordered]
    history = [{"attempt": _attempt(r), "status": r.get("status"),
                "as_expected": r.get("as_expected"), "message": r.get("message", ""),
                "finished_at": r.get("finished_at")} for r in earlier]
    record = dict(last, previous_attempts=history)
    unsteady = [r for r in earlier if not r.get("as_expected", True)]
    if last.get("status") == "pass" and last.get("as_expected", True) and unsteady:
        first = unsteady[0]
        said = (first.get("message") or "").strip().splitlines()
        record.update(
            status="flaky", as_expected=False, flaky=True,
            message=f"flaky: {first.get('status')} on attempt {_attempt(first)} "
                    f"({said[0][:200] if said else 'no message'}), "
                    f"pass on attempt {_attempt(last)}")
    return record


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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
