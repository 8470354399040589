"""The shape of what a vendor signs: a vendor can sign anything, so the manifest, the
statement's predicate, each ``run.json`` and each record line are checked to be the
JSON objects the center reads before any of it is used (a malformed but signed member
is a one-line refusal, never a traceback). Runs are parsed from the bundle's members
in memory."""

from __future__ import annotations

import json
from typing import Any

from harness.center.bundle import RUNS_DIR
from harness.results.record_files import (
    RECORDS_FILE,
    RUN_FILE,
    RecordError,
    check_run_id,
    latest_attempts,
)

#: the longest ``<run id>/<target label>`` the database stores (``runs.run_id``)
MAX_STORED_RUN_ID = 200
RECORD_TEXT_FIELDS = ("suite", "case", "target", "status")


class ShapeError(Exception):
    """A member that is not what the center reads; ``check`` names the intake check."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check = check


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def check_statement(statement: dict[str, Any]) -> None:
    """The statement holds the fields intake reads, with the right types."""
    subject = statement.get("subject", [])
    if not isinstance(subject, list) or not all(
            isinstance(s, dict) and isinstance(s.get("digest", {}), dict) for s in subject):
        raise ShapeError("signature", "the statement's subject is malformed")
    predicate = statement["predicate"]
    for key in ("vendor", "target"):
        if not _is_text(predicate.get(key)):
            raise ShapeError("signature", f"the statement's predicate has no {key} name")
    for key in ("created_at", "platform_id"):
        if predicate.get(key) is not None and not _is_text(predicate[key]):
            raise ShapeError("signature", f"the statement's predicate field {key} is not text")
    for key in ("passedTests", "warnedTests", "failedTests"):
        value = predicate.get(key, [])
        if not isinstance(value, list) or not all(_is_text(v) for v in value):
            raise ShapeError("signature", f"the statement's predicate field {key} is not a "
                                          "list of test names")
    runs = predicate.get("runs", [])
    if not isinstance(runs, list) or not all(
            isinstance(r, dict) and _is_text(r.get("run_id"))
            and _is_text(r.get("records_sha256")) for r in runs):
        raise ShapeError("signature", "the statement's predicate lists its runs malformed "
                                      "(each needs run_id and records_sha256)")


def check_manifest(manifest: Any) -> None:
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and _is_text(f.get("path")) and _is_text(f.get("sha256"))
            for f in files):
        raise ShapeError("digest", "manifest.json is malformed (it needs a list of files, "
                                   "each with path and sha256)")


def check_environment(environment: Any) -> None:
    if not isinstance(environment, dict) or not all(
            isinstance(environment.get(k, {}), dict) for k in ("environment", "distributions")):
        raise ShapeError("environment", "environment.json is malformed (it needs the objects "
                                        "environment and distributions)")


def check_run_ids(run_ids: list[str]) -> None:
    for run_id in run_ids:
        try:
            check_run_id(run_id)
        except ValueError:
            raise ShapeError("consistency", f"run id {run_id[:40]!r}... ({len(run_id)} "
                                            "characters) is not a plain run id (letters, "
                                            "digits, '.', '_', '-'; at most 128)") from None


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ShapeError("consistency", f"{where} is not JSON") from None
    if not isinstance(value, dict):
        raise ShapeError("consistency", f"{where} is not a JSON object")
    return value


def _check_info(run_id: str, info: dict[str, Any]) -> None:
    where = f"runs/{run_id}/{RUN_FILE}"
    targets = info.get("targets")
    if not isinstance(targets, dict) or not targets \
            or not all(_is_text(k) and isinstance(v, dict) for k, v in targets.items()):
        raise ShapeError("consistency", f"{where} names no targets (an object of target "
                                        "label -> description)")
    too_long = [k for k in targets if len(run_id) + 1 + len(k) > MAX_STORED_RUN_ID]
    if too_long:
        raise ShapeError("consistency", f"{where}: target label {too_long[0][:40]!r}... is "
                                        "too long")
    for key in ("environment",):
        if not isinstance(info.get(key), dict):
            raise ShapeError("consistency", f"{where} has no {key} object")
    for key in ("selection", "continuations"):
        kind = dict if key == "selection" else list
        if info.get(key) is not None and not isinstance(info[key], kind):
            raise ShapeError("consistency", f"{where}: {key} is malformed")
    for key in ("run_id", "started_at", "finished_at", "git_commit", "harness_version"):
        if info.get(key) is not None and not _is_text(info[key]):
            raise ShapeError("consistency", f"{where}: {key} is not text")


def _attempts(run_id: str, data: bytes) -> list[dict[str, Any]]:
    where = f"runs/{run_id}/{RECORDS_FILE}"
    found = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        record = _json_object(line, f"{where} line {number}")
        bad = [k for k in RECORD_TEXT_FIELDS if not _is_text(record.get(k))]
        attempt = record.get("attempt", 1)
        if bad or not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ShapeError("consistency", f"{where} line {number} is not a case record "
                                            f"({(bad or ['attempt'])[0]} is malformed)")
        if not isinstance(record.get("metrics", {}), dict) \
                or not isinstance(record.get("tags", {}), dict):
            raise ShapeError("consistency", f"{where} line {number}: metrics or tags is not "
                                            "an object")
        found.append(record)
    try:
        latest_attempts(found)
    except (RecordError, ValueError, TypeError) as exc:
        raise ShapeError("consistency", f"{where}: {str(exc)[:200]}") from None
    return found


def load_runs(files: dict[str, bytes], run_ids: list[str]
              ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(run.json per run id, every attempt per run id), read from the members."""
    check_run_ids(run_ids)
    infos, attempts = {}, {}
    for run_id in run_ids:
        info = _json_object(files[f"{RUNS_DIR}/{run_id}/{RUN_FILE}"],
                            f"runs/{run_id}/{RUN_FILE}")
        _check_info(run_id, info)
        infos[run_id] = info
        attempts[run_id] = _attempts(run_id, files.get(f"{RUNS_DIR}/{run_id}/{RECORDS_FILE}",
                                                       b""))
    return infos, attempts
