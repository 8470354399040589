"""The typed run data: a case's :class:`Status`, its :class:`CaseKey`, the frozen
:class:`CaseRecord` of one attempt, the :class:`RunSelection` a run was asked for, and
:func:`fold_attempts`, the one rule that turns a case's attempts into its effective record.

Every consumer of records — the gate, the certificate evaluator, merge, resume and the
reports — folds attempts with :func:`fold_attempts`, so a retried case means the same
thing everywhere:

- an earlier attempt that ended in ``infra_error`` (the harness's or the bench's failure,
  never the target's) is cleared by a later attempt: it is kept in
  ``previous_attempts`` but does not colour the verdict;
- a case whose earlier real attempt ended unexpectedly and whose last attempt passed
  is ``flaky`` (not ``pass``), ``as_expected`` false;
- otherwise the last attempt stands.

Records on disk are JSON objects (``harness/schema/record.schema.json``); this module
reads every schema version Shipei has written (:data:`READABLE_SCHEMA_VERSIONS`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, NamedTuple

from harness.driver.target import refused_by_of

RECORD_SCHEMA_VERSION = "1.1"
#: versions :meth:`CaseRecord.from_dict` reads (1.0 records lack the 1.1 fields)
READABLE_SCHEMA_VERSIONS = ("1.0", "1.1")


class Status(StrEnum):
    """How a case ended. ``FLAKY`` is derived by :func:`fold_attempts`, never recorded."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    TIMEOUT = "timeout"
    CRASH = "crash"
    INFRA_ERROR = "infra_error"
    FLAKY = "flaky"

    @property
    def is_infra(self) -> bool:
        """The harness's or infrastructure's failure, never the target's."""
        return self is Status.INFRA_ERROR

    @property
    def is_target_failure(self) -> bool:
        """The target's own failure: a wrong result, a refusal it raised, a timeout or a
        crash."""
        return self in (Status.FAIL, Status.ERROR, Status.TIMEOUT, Status.CRASH)

    @property
    def zh(self) -> str:
        """The status's one Chinese name, on every report and certificate."""
        return _CHINESE[self]

    @property
    def bilingual(self) -> str:
        """``中文 english``, e.g. ``通过 pass``: how a report labels the status."""
        return f"{self.zh} {self.value}"


_CHINESE = {Status.PASS: "通过", Status.FAIL: "失败", Status.ERROR: "错误", Status.SKIP: "跳过",
            Status.TIMEOUT: "超时", Status.CRASH: "崩溃", Status.INFRA_ERROR: "基础设施错误",
            Status.FLAKY: "不稳定"}

#: statuses a case attempt can be recorded with (``flaky`` is derived)
RECORDED_STATUSES: tuple[Status, ...] = tuple(s for s in Status if s is not Status.FLAKY)
#: statuses an effective record can have
REPORTED_STATUSES: tuple[Status, ...] = tuple(Status)
#: the target's own failures (``fail``, ``error``, ``timeout``, ``crash``)
TARGET_FAILURES: tuple[Status, ...] = tuple(s for s in Status if s.is_target_failure)
#: statuses that are not a pass, for gates and certificates
NOT_PASSING: tuple[Status, ...] = tuple(s for s in Status
                                        if s not in (Status.PASS, Status.SKIP))


class RecordError(ValueError):
    """A record line that is not a Shipei case record; the message is one line."""


class CaseKey(NamedTuple):
    """What identifies a case across runs, shards and attempts."""

    target: str  # the target request label, e.g. openvino-cpu:bf16
    suite: str
    case: str

    def text(self) -> str:
        return "\x1f".join(self)


def _number(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Attempt:
    """An earlier attempt of a retried case, as kept under ``previous_attempts``."""

    attempt: int
    status: Status
    as_expected: bool
    message: str = ""
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "status": str(self.status),
                "as_expected": self.as_expected, "message": self.message,
                "finished_at": self.finished_at}


@dataclass(frozen=True)
class CaseRecord:
    """One attempt of one case on one target (one line of ``records.jsonl``), or the
    effective record :func:`fold_attempts` derived from several."""

    target: str
    suite: str
    case: str
    status: Status
    as_expected: bool = True
    expected_status: str = "pass"
    expectation_reason: str = ""
    message: str = ""
    target_name: str = ""
    configuration: str = "default"
    metrics: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    placement: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    worker_restarts: int = 0
    attempt: int = 1
    run_id: str = ""
    nodeid: str = ""
    finished_at: str | None = None
    schema_version: str = RECORD_SCHEMA_VERSION
    #: who is to blame for a non-pass: "target", "harness" or "infrastructure" (1.1)
    blame: str = ""
    #: who refused a skipped or refused case: runtime, converter, driver or harness
    #: (:data:`harness.driver.target.REFUSERS`); read from the message's ``[refused by: WHO]``
    #: when the record does not say
    refused_by: str = ""
    flaky: bool = False
    previous_attempts: tuple[Attempt, ...] = ()
    #: the shard run a merged record came from
    source_run_id: str = ""
    #: fields this version does not know, kept as they were
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> CaseKey:
        return CaseKey(self.target, self.suite, self.case)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseRecord:
        """Read a record of any :data:`READABLE_SCHEMA_VERSIONS`; raise :class:`RecordError`."""
        if not isinstance(data, Mapping):
            raise RecordError(f"a record must be a JSON object, not {type(data).__name__}")
        missing = [k for k in ("target", "suite", "case", "status") if not data.get(k)]
        if missing:
            raise RecordError(f"record lacks {', '.join(missing)}")
        try:
            status = Status(str(data["status"]))
        except ValueError:
            raise RecordError(f"record of {data['suite']}::{data['case']} has unknown status "
                              f"{data['status']!r}") from None
        known = _field_names(cls)
        previous = tuple(
            Attempt(int(_number(p.get("attempt"), 1)), Status(str(p.get("status", "error")))
                    if str(p.get("status")) in Status._value2member_map_ else Status.ERROR,
                    bool(p.get("as_expected", False)), str(p.get("message") or ""),
                    p.get("finished_at"))
            for p in data.get("previous_attempts") or () if isinstance(p, Mapping))
        return cls(
            target=str(data["target"]), suite=str(data["suite"]), case=str(data["case"]),
            status=status, as_expected=bool(data.get("as_expected", True)),
            expected_status=str(data.get("expected_status") or "pass"),
            expectation_reason=str(data.get("expectation_reason") or ""),
            message=str(data.get("message") or ""),
            target_name=str(data.get("target_name") or ""),
            configuration=str(data.get("configuration") or "default"),
            metrics=_mapping(data.get("metrics")), timings=_mapping(data.get("timings")),
            duration_s=_number(data.get("duration_s")),
            placement=_mapping(data.get("placement")), tags=_mapping(data.get("tags")),
            worker_restarts=int(_number(data.get("worker_restarts"))),
            attempt=max(1, int(_number(data.get("attempt"), 1))),
            run_id=str(data.get("run_id") or ""), nodeid=str(data.get("nodeid") or ""),
            finished_at=data.get("finished_at"),
            schema_version=str(data.get("schema_version") or "1.0"),
            blame=str(data.get("blame") or ""),
            refused_by=str(data.get("refused_by") or (
                refused_by_of(str(data.get("message") or ""))
                if status in (Status.SKIP, Status.ERROR) else "")),
            flaky=bool(data.get("flaky", False)),
            previous_attempts=previous, source_run_id=str(data.get("source_run_id") or ""),
            extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``records.jsonl`` holds); optional fields only when set."""
        data: dict[str, Any] = dict(self.extra)
        data.update({
            "schema_version": self.schema_version, "run_id": self.run_id,
            "nodeid": self.nodeid, "target": self.target, "target_name": self.target_name,
            "configuration": self.configuration, "suite": self.suite, "case": self.case,
            "status": str(self.status), "expected_status": self.expected_status,
            "expectation_reason": self.expectation_reason, "as_expected": self.as_expected,
            "message": self.message, "metrics": dict(self.metrics),
            "timings": dict(self.timings), "duration_s": self.duration_s,
            "placement": dict(self.placement), "tags": dict(self.tags),
            "worker_restarts": self.worker_restarts, "attempt": self.attempt,
            "finished_at": self.finished_at,
        })
        if self.blame:
            data["blame"] = self.blame
        if self.refused_by:
            data["refused_by"] = self.refused_by
        if self.flaky:
            data["flaky"] = True
        if self.previous_attempts:
            data["previous_attempts"] = [a.to_dict() for a in self.previous_attempts]
        if self.source_run_id:
            data["source_run_id"] = self.source_run_id
        return data

    def replace(self, **changes: Any) -> CaseRecord:
        return replace(self, **changes)


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def parse_records(lines: Iterable[Mapping[str, Any]]) -> list[CaseRecord]:
    """Typed records from JSON objects; a line that is not a record raises RecordError."""
    return [CaseRecord.from_dict(line) for line in lines]


def _fold(attempts: list[CaseRecord]) -> CaseRecord:
    ordered = sorted(enumerate(attempts), key=lambda pair: (pair[1].attempt, pair[0]))
    *earlier, last = [record for _, record in ordered]
    history = tuple(Attempt(r.attempt, r.status, r.as_expected, r.message, r.finished_at)
                    for r in earlier)
    folded = last.replace(previous_attempts=history)
    # an infra_error attempt is the harness's failure: a later attempt clears it
    unsteady = [r for r in earlier if not r.as_expected and not r.status.is_infra]
    if last.status is Status.PASS and last.as_expected and unsteady:
        first = unsteady[0]
        said = first.message.strip().splitlines()
        folded = folded.replace(
            status=Status.FLAKY, as_expected=False, flaky=True,
            message=f"flaky: {first.status} on attempt {first.attempt} "
                    f"({said[0][:200] if said else 'no message'}), "
                    f"pass on attempt {last.attempt}")
    return folded


def fold_attempts(records: Iterable[CaseRecord]) -> list[CaseRecord]:
    """The effective record of each case, in first-recorded order (see the module doc)."""
    groups: dict[CaseKey, list[CaseRecord]] = {}
    for record in records:
        groups.setdefault(record.key, []).append(record)
    return [_fold(group) if len(group) > 1 else group[0] for group in groups.values()]


@dataclass(frozen=True)
class RunSelection:
    """What a run was asked to run, stored in ``run.json`` under ``selection.request`` so
    gate, certify and resume read it instead of re-parsing a command line."""

    suites: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    markexpr: str | None = None
    keyword: str | None = None
    shard: str | None = None
    models: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"suites": list(self.suites), "targets": list(self.targets),
                "markexpr": self.markexpr, "keyword": self.keyword, "shard": self.shard,
                "models": list(self.models)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunSelection | None:
        if not isinstance(data, Mapping):
            return None

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key) or ()
            return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()

        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value not in (None, "") else None

        return cls(texts("suites"), texts("targets"), text("markexpr"), text("keyword"),
                   text("shard"), texts("models"))

    @classmethod
    def of_run(cls, run_info: Mapping[str, Any]) -> RunSelection | None:
        """The selection a run recorded (None for runs made before 1.1)."""
        selection = run_info.get("selection")
        return cls.from_dict(selection.get("request")) if isinstance(selection, Mapping) \
            else None

    def signature(self) -> tuple[Any, ...]:
        """What makes two runs' case selections comparable (targets aside)."""
        return tuple(sorted(self.suites)), self.markexpr, self.keyword, tuple(self.models)
