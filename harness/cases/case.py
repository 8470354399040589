"""Conformance cases and how one runs on a target.

A :class:`Case` is a model plus data sets (inputs and reference outputs) and the
tolerances to judge by. :func:`execute_case` compiles it on a host (see
:mod:`harness.isolation.host`), runs every data set, judges the outputs and returns an
:class:`Outcome`. Nothing here raises for a target's failure: every way a case
can end is an outcome with a status.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.driver.probe import HARNESS_GAP, gating_verdict
from harness.driver.target import Capabilities, CapabilityExceeded
from harness.isolation.host import CaseTimeout, Host, InfraError, RemoteError, WorkerCrash
from harness.isolation.tensors import BY_ONNX_CODE
from harness.verdicts.judge import Judgement, compare_outputs, effective_tolerance, judged_precision
from harness.verdicts.undefined import undefined_elements

if TYPE_CHECKING:  # onnx is slow to import: the test process launches its workers first
    import onnx

#: the longest one capability probe may take (it runs once per element type and target)
PROBE_TIMEOUT_S = 120.0


@dataclass
class DataSet:
    inputs: dict[str, Any]
    outputs: list[Any]  # in graph output order


@dataclass
class LoadedCase:
    model: onnx.ModelProto
    data_sets: list[DataSet]
    #: the model's serialized bytes when the loader has them (else serialized when sent)
    model_bytes: bytes | None = None

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.model.graph.output]


@dataclass
class Case:
    """One conformance case. ``load`` is deferred so collection stays cheap."""

    suite: str
    name: str
    load: Callable[[], LoadedCase]
    rtol: float = 1e-3
    atol: float = 1e-7
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    status: str
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # e.g. a remote traceback; kept out of one-line messages
    #: who a non-pass is charged to: "target", "harness" or "infrastructure" ("" = by status)
    blame: str = ""
    #: the worker process that ran (or died running) the case; not recorded, it tells
    #: which case ran in a worker before another crashed it (:mod:`harness.verdicts.crash_blame`)
    worker_pid: int | None = None


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _tensor_dtypes(model: onnx.ModelProto) -> set[str]:
    found: set[str] = set()

    def visit(type_proto: onnx.TypeProto) -> None:
        which = type_proto.WhichOneof("value")
        if which == "tensor_type":
            elem = type_proto.tensor_type.elem_type
            if elem:
                known = BY_ONNX_CODE.get(elem)
                found.add(known.name if known is not None else _numpy_name(elem))
        elif which == "sequence_type":
            visit(type_proto.sequence_type.elem_type)
        elif which == "optional_type":
            visit(type_proto.optional_type.elem_type)

    # an input with an initializer (old IR versions list weights as inputs) is a
    # constant the harness never feeds: only the tensors that cross the boundary count
    constants = {tensor.name for tensor in model.graph.initializer}
    fed = [value for value in model.graph.input if value.name not in constants]
    for value in fed + list(model.graph.output):
        try:
            visit(value.type)
        except (KeyError, ValueError):
            continue
    return found


def _numpy_name(elem: int) -> str:
    """The numpy name onnx gives an element type this harness's table does not know."""
    import onnx.helper

    return onnx.helper.tensor_dtype_to_np_dtype(elem).name


def opset_reason(model: onnx.ModelProto, caps: Capabilities) -> str | None:
    """Why the target's declared opset range excludes this model, or None."""
    opset = default_opset(model)
    if opset is not None and not caps.opset_min <= opset <= caps.opset_max:
        return (f"opset {opset} outside the target's declared range "
                f"{caps.opset_min}..{caps.opset_max}")
    return None


def unsupported_reason(model: onnx.ModelProto, caps: Capabilities) -> str | None:
    """Why a target's declared capabilities exclude this model, or None."""
    reason = opset_reason(model, caps)
    if reason:
        return reason
    if caps.dtypes:
        missing = sorted(_tensor_dtypes(model) - set(caps.dtypes))
        if missing:
            return f"dtype(s) {', '.join(missing)} not declared by the target"
    return None


#: words that mark the line of a dying runtime's stderr that says why it died
_DYING_WORDS = re.compile(r"exception|error|assert|abort|terminat|fatal|check failed|"
                          r"segmentation|bad_alloc|what\(\)", re.IGNORECASE)


#: a line of a stack trace (.NET "at ...", gdb/native "#3 ...", Python "File ..."): never
#: the reason, even when a frame's name contains one of the words above
_STACK_FRAME = re.compile(r"^(at |#\d|File \")")


def runtime_last_words(stderr_tail: str) -> str:
    """The last line of a crashed worker's stderr that says why it died (a .NET
    ``Unhandled exception``, a C++ ``terminate called``, a failed assertion), or ''."""
    for line in reversed(stderr_tail.splitlines()):
        line = line.strip()
        if _DYING_WORDS.search(line) and not _STACK_FRAME.match(line):
            return line[:300]
    return ""


def outcome_from_exception(exc: BaseException, started: float) -> Outcome:
    """The outcome of a case that ended in a timeout, a crash, an infra error or a
    target error."""
    elapsed = {"total_s": time.perf_counter() - started}
    if isinstance(exc, CaseTimeout):
        return Outcome("timeout", str(exc), metrics={"timeout_s": exc.seconds}, timings=elapsed)
    if isinstance(exc, WorkerCrash):
        metrics = {"exit_code": exc.exitcode, "signal": exc.signal}
        if exc.external:  # a signal nobody in the harness sent: the infrastructure's
            return Outcome("infra_error", str(exc), timings=elapsed, blame="infrastructure",
                           metrics=metrics | {"killed_externally": True,
                                              "oom_evidence": exc.evidence})
        last_words = runtime_last_words(exc.stderr_tail)
        return Outcome("crash", f"{exc}: {last_words}" if last_words else str(exc),
                       timings=elapsed, metrics=metrics, blame="target",
                       detail=exc.stderr_tail, worker_pid=exc.pid)
    if isinstance(exc, InfraError):
        return Outcome("infra_error", str(exc), timings=elapsed,
                       blame=getattr(exc, "blame", "infrastructure"))
    assert isinstance(exc, RemoteError)
    first_line = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
    if exc.exc_type == CapabilityExceeded.__name__:  # a declared limit: a skip, not a failure
        return Outcome("skip", first_line[:500], timings=elapsed)
    return Outcome("error", f"{exc.phase}: {exc.exc_type}: {first_line}"[:500],
                   timings=elapsed, detail=exc.remote_traceback)


def _probe_refusal(model: onnx.ModelProto, host: Host, caps: Capabilities, left: float
                   ) -> Outcome | None:
    """A skip (or the harness's infra_error) when the capability probe says an element
    type of the model cannot run on this target; None otherwise."""
    found = gating_verdict(host, caps, _tensor_dtypes(model), min(PROBE_TIMEOUT_S, left))
    if found is None:
        return None
    name, verdict = found
    if verdict.verdict == HARNESS_GAP:
        return Outcome("infra_error", f"the harness cannot carry {name} tensors to this "
                                      f"target: {verdict.message}", blame="harness")
    who = verdict.refused_by or "runtime"
    message = verdict.message.removeprefix(f"[refused by: {who}] ")
    return Outcome("skip", f"[refused by: {who}] the {who} refuses {name} tensors "
                           f"(capability probe: {message})"[:500])


@dataclass
class PreparedCase:
    """A case loaded and checked against the target, ready for ``run_case``
    (:mod:`harness.run.pipelined_host` sends it ahead of the test that will judge it)."""

    case: Case
    loaded: LoadedCase
    key: str
    model: bytes
    started: float  # time.perf_counter() when preparing began, less the probe's time
    prepare_s: float
    #: what the capability probe took for this case (the target's set-up, not the case's)
    probe_s: float = 0.0

    @property
    def feeds(self) -> list[dict[str, Any]]:
        return [data.inputs for data in self.loaded.data_sets]


def prepare_case(case: Case, host: Host, caps: Capabilities, timeout: float,
                 key: str | None = None) -> PreparedCase | Outcome:
    """Load ``case`` and check it against the target; an :class:`Outcome` when the case
    ends here (it cannot load, is out of the declared opsets or the probe refuses it)."""
    started = time.perf_counter()
    try:
        loaded = case.load()
    except Exception as exc:
        return Outcome("infra_error", f"could not load the case: {type(exc).__name__}: {exc}")
    reason = opset_reason(loaded.model, caps)
    if reason:
        return Outcome("skip", reason)
    # the probe is the target's set-up (once per element type): neither the case's time
    # nor its timeout; the record keeps it apart as timings["probe_s"]
    probe_started = time.perf_counter()
    refused = _probe_refusal(loaded.model, host, caps, PROBE_TIMEOUT_S)
    probe_s = time.perf_counter() - probe_started
    if refused is not None:
        refused.timings = {"probe_s": probe_s}
        return refused
    started += probe_s
    return PreparedCase(case, loaded, key or f"{case.suite}::{case.name}",
                        loaded.model_bytes or loaded.model.SerializeToString(), started,
                        time.perf_counter() - started, probe_s)


def conclude_case(prepared: PreparedCase, result: dict[str, Any], caps: Capabilities,
                  waited_s: float = 0.0) -> Outcome:
    """Judge the worker's ``run_case`` answer; ``waited_s`` (time the answer sat queued
    behind other cases) is left out of ``total_s``."""
    case, loaded = prepared.case, prepared.loaded
    precision = judged_precision(caps.precision, result["placement"])
    verdict = Judgement(True)
    for data, outputs in zip(loaded.data_sets, result["outputs"], strict=True):
        verdict.absorb(compare_outputs(data.outputs, outputs, loaded.output_names,
                                       case.rtol, case.atol, precision,
                                       undefined_elements(loaded.model, data.inputs)))
    timings = {"compile_s": result["compile_s"], "run_s": sum(result["run_s"]),
               "total_s": time.perf_counter() - prepared.started - waited_s}
    if prepared.probe_s >= 0.001:
        timings["probe_s"] = prepared.probe_s
    rtol, atol = effective_tolerance(case.rtol, case.atol, precision)
    metrics = verdict.metrics() | {"rtol": rtol, "atol": atol, "precision": precision}
    if precision != caps.precision:  # the configuration's floors did not apply: say so
        metrics["configured_precision"] = caps.precision
    status = "pass" if verdict.passed else "fail"
    message = "; ".join(m for m in (verdict.message, verdict.undefined_note()) if m)
    return Outcome(status, message, metrics, timings, result["placement"],
                   worker_pid=result.get("worker_pid"))


def execute_case(case: Case, host: Host, caps: Capabilities, timeout: float,
                 key: str | None = None) -> Outcome:
    """Run ``case`` on ``host`` within ``timeout`` seconds in all."""
    prepared = prepare_case(case, host, caps, timeout, key)
    if isinstance(prepared, Outcome):
        return prepared
    left = prepared.started + timeout - time.perf_counter()
    try:
        result = host.run_case(prepared.key, prepared.model, prepared.feeds, left)
    except (CaseTimeout, WorkerCrash, InfraError, RemoteError) as exc:
        return outcome_from_exception(exc, prepared.started)
    return conclude_case(prepared, result, caps)
