"""The driver contract: what every target driver must honour, each check an :class:`Outcome`.

A check returns ``pass``, ``fail`` (the contract is violated; the message says
how), ``skip`` (the check does not apply, with the reason), ``timeout`` or
``crash`` (the driver hung or died where it must not), or ``infra_error`` (the
harness could not check). Requests go through the target's worker host, so a
misbehaving driver costs a check, never the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
import onnx

from harness.cases.case import Outcome, unsupported_reason
from harness.driver.probe import ACCEPTED, ASSUMED, HARNESS_GAP, REFUSED, UNDEFINED, probe_for
from harness.driver.target import TARGET_KINDS, Availability
from harness.isolation.host import (
    CaseTimeout,
    Host,
    InfraError,
    ProcessHost,
    RemoteError,
    WorkerCrash,
)
from harness.isolation.tensors import ELEMENT_TYPES
from harness.verdicts.judge import PRECISION_FLOORS, compare_outputs
from suites.contract.models import (
    INPUT,
    OUTPUT,
    UNSUPPORTED_DOMAIN,
    UNSUPPORTED_OP,
    probe_model,
    unsupported_model,
)

PROBES = "suites.contract.probes"
PROBE = probe_model()
REPEATS = 5
#: compile/run/close cycles of the resource check, and how many of them warm up
CYCLES, WARMUP = 40, 5
RSS_GROWTH_LIMIT_MIB = 16.0
FD_GROWTH_LIMIT = 2
THREAD_GROWTH_LIMIT = 2
#: the deliberately short timeout of the timeout check, and how long stopping may take
SHORT_TIMEOUT_S = 1.0
STOP_GRACE_S = 10.0
#: how long processes a driver started may take to end after its worker is killed
ORPHAN_GRACE_S = 5.0
AVAILABILITY_LIMIT_S = 10.0
#: exception classes that mean a driver bug, not a considered refusal
PYTHON_BUG_TYPES = ("AttributeError", "KeyError", "IndexError", "NameError", "TypeError",
                    "AssertionError", "UnboundLocalError", "ZeroDivisionError", "RecursionError")


class Violation(Exception):
    """Raised inside a check to end it with ``fail``."""


class NotApplicable(Exception):
    """Raised inside a check to end it with ``skip`` and the reason."""


def run_check(check: Callable[[], Outcome], what: str) -> Outcome:
    """Run a check, turning a worker's death, a timeout or a refused request into an outcome."""
    started = time.perf_counter()
    try:
        outcome = check()
    except Violation as exc:
        outcome = Outcome("fail", str(exc))
    except NotApplicable as exc:
        outcome = Outcome("skip", str(exc))
    except CaseTimeout as exc:
        outcome = Outcome("timeout", f"{what}: {exc}", metrics={"timeout_s": exc.seconds})
    except WorkerCrash as exc:
        outcome = Outcome("crash", f"{what}: {exc}",
                          metrics={"exit_code": exc.exitcode, "signal": exc.signal})
    except InfraError as exc:
        outcome = Outcome("infra_error", f"{what}: {exc}")
    except RemoteError as exc:
        outcome = Outcome("error", f"{what}: {exc.phase}: {exc}"[:500], detail=exc.remote_traceback)
    outcome.timings.setdefault("total_s", time.perf_counter() - started)
    return outcome


def probe_skip_reason(caps: Any) -> str | None:
    reason = unsupported_reason(onnx.load_from_string(PROBE.model), caps)
    return f"the contract's probe model is outside the declared capabilities: {reason}" \
        if reason else None


def _probe_error(outputs: dict[str, Any], inputs: dict[str, Any], precision: str) -> str:
    """Why probe outputs are wrong, or '' when they match the numpy reference."""
    verdict = compare_outputs([PROBE.reference(inputs)], outputs, [OUTPUT], 1e-4, 1e-4,
                              precision)
    return "" if verdict.passed else verdict.message


def _compile_probe(host: Host, key: str, timeout: float) -> None:
    try:
        host.compile(key, PROBE.model, timeout)
    except RemoteError as exc:
        if exc.exc_type == "UnsupportedModelError":  # a sensor, or a chip without these ops
            raise NotApplicable(f"the target refuses the probe model (MatMul, Add, Relu; "
                                f"opset 13): {exc.message[:200]}") from None
        raise Violation(f"the probe model (MatMul, Add, Relu; opset 13) does not compile: "
                        f"{exc}") from None


# -- identity and availability ---------------------------------------------------------
def identity_problems(target: Any, registered_name: str) -> list[str]:
    identity = target.identity
    problems = [f"identity.{name} is empty" for name, value in identity.to_dict().items()
                if not isinstance(value, str) or not value.strip()]
    if identity.kind not in TARGET_KINDS:
        problems.append(f"identity.kind {identity.kind!r} is not one of {TARGET_KINDS}")
    if identity.name != registered_name:
        problems.append(f"identity.name {identity.name!r} is not the registered name "
                        f"{registered_name!r}")
    if identity.driver_distribution.strip():
        try:
            installed = metadata.version(identity.driver_distribution)
        except metadata.PackageNotFoundError:
            problems.append(f"driver_distribution {identity.driver_distribution!r} is not an "
                            "installed distribution")
        else:
            if installed != identity.driver_version:
                problems.append(f"driver_version {identity.driver_version!r} is not the "
                                f"installed {identity.driver_distribution} {installed}")
    if target.identity != identity:
        problems.append("identity changes from one call to the next")
    caps = target.capabilities()
    if caps.opset_min > caps.opset_max:
        problems.append(f"capabilities opset range {caps.opset_min}..{caps.opset_max} is empty")
    if identity.device not in caps.devices:
        problems.append(f"identity.device {identity.device!r} is not among the declared "
                        f"devices {list(caps.devices)}")
    if caps.precision not in PRECISION_FLOORS:
        problems.append(f"capabilities precision {caps.precision!r} is not one of "
                        f"{sorted(PRECISION_FLOORS)}")
    try:
        json.dumps(target.describe())
    except (TypeError, ValueError) as exc:
        problems.append(f"describe() is not JSON-serializable: {exc}")
    return problems


def check_identity(target: Any, registered_name: str) -> Outcome:
    problems = identity_problems(target, registered_name)
    return Outcome("fail", "; ".join(problems)) if problems else Outcome("pass")


def check_availability(target: Any) -> Outcome:
    started = time.perf_counter()
    answers = [target.availability() for _ in range(2)]
    elapsed = time.perf_counter() - started
    problems = []
    for answer in answers:
        if not isinstance(answer, Availability):
            problems.append(f"availability() returned {type(answer).__name__}, not Availability")
        elif not isinstance(answer.available, bool):
            problems.append("Availability.available is not a bool")
        elif not answer.available and not str(answer.reason).strip():
            problems.append("unavailable without a reason")
    if not problems and answers[0] != answers[1]:
        problems.append(f"two answers in a row differ: {answers[0]} then {answers[1]}")
    if elapsed / 2 > AVAILABILITY_LIMIT_S:
        problems.append(f"availability() takes {elapsed / 2:.1f} s "
                        f"(limit {AVAILABILITY_LIMIT_S:g} s)")
    return Outcome("fail" if problems else "pass", "; ".join(problems),
                   metrics={"availability_s": elapsed / 2})


# -- outputs -------------------------------------------------------------------------------
def check_determinism(host: Host, caps: Any, timeout: float) -> Outcome:
    skip = probe_skip_reason(caps)
    if skip:
        return Outcome("skip", skip)
    key = "contract::determinism"
    inputs = PROBE.inputs(seed=1)
    try:
        _compile_probe(host, key, timeout)
        runs = [host.run(key, inputs, timeout)[0] for _ in range(REPEATS)]
        host.release(key)
        _compile_probe(host, key, timeout)
        recompiled = host.run(key, inputs, timeout)[0]
    finally:
        host.release(key)
    wrong = _probe_error(runs[0], inputs, caps.precision)
    if wrong:
        raise Violation(f"the probe model's outputs are wrong: {wrong}")
    declared_exact = caps.extra.get("deterministic", True) is not False
    first = np.asarray(runs[0][OUTPUT])
    for number, outputs in enumerate(runs[1:], start=2):
        again = np.asarray(outputs[OUTPUT])
        same = again.dtype == first.dtype and again.shape == first.shape and (
            np.array_equal(again, first) if declared_exact else not _probe_error(outputs, inputs,
                                                                                 caps.precision))
        if not same:
            diff = float(np.max(np.abs(again.astype(np.float64) - first))) \
                if again.shape == first.shape else float("inf")
            raise Violation(f"run {number} of the same input differs from run 1 "
                            f"(max abs difference {diff:.3g})")
    wrong = _probe_error(recompiled, inputs, caps.precision)
    if wrong:
        raise Violation(f"after a recompile the outputs are wrong: {wrong}")
    return Outcome("pass", metrics={"repeats": REPEATS, "bitwise": declared_exact})


def check_unsupported_op(host: Host, caps: Any, timeout: float) -> Outcome:
    key = "contract::unsupported"
    op = f"{UNSUPPORTED_DOMAIN}:{UNSUPPORTED_OP}"
    try:
        try:
            host.compile(key, unsupported_model(), timeout)
            host.run(key, {INPUT: np.zeros((1, 4), np.float32)}, timeout)
        except RemoteError as exc:
            error = exc
        else:
            raise Violation(f"accepted a model using {op}, an op no runtime has, and returned "
                            "outputs instead of raising UnsupportedModelError")
    finally:
        host.release(key)
    if error.exc_type in PYTHON_BUG_TYPES:
        raise Violation(f"{op} raised {error.exc_type} at {error.phase} (a driver bug, not a "
                        f"refusal; raise UnsupportedModelError): {error.message[:200]}")
    if UNSUPPORTED_OP not in error.message:
        raise Violation(f"the error for {op} does not name the op: {error}"[:400])
    _expect_probe_works(host, timeout, f"after refusing {op}", caps.precision)
    return Outcome("pass", metrics={"refused_at": error.phase, "error_type": error.exc_type})


def _expect_probe_works(host: Host, timeout: float, when: str, precision: str) -> None:
    key = "contract::recovery"
    inputs = PROBE.inputs(seed=3)
    try:
        _compile_probe(host, key, timeout)
        outputs, _ = host.run(key, inputs, timeout)
    finally:
        host.release(key)
    wrong = _probe_error(outputs, inputs, precision)
    if wrong:
        raise Violation(f"{when}, the probe model's outputs are wrong: {wrong}")


BAD_INPUTS: dict[str, tuple[str, str]] = {
    # name: (what is wrong, the word the error must contain)
    "name": ("an unknown input name", "not_an_input"),
    "dtype": ("a float64 input where the model takes float32", INPUT),
    "shape": ("an input of shape [1, 128] where the model takes [1, 256]", INPUT),
}


def bad_feeds(kind: str) -> dict[str, Any]:
    good = PROBE.inputs(seed=2)[INPUT]
    if kind == "name":
        return {"not_an_input": good}
    if kind == "dtype":
        return {INPUT: good.astype(np.float64)}
    return {INPUT: good[:, :128].copy()}


def check_bad_input(host: Host, caps: Any, timeout: float, kind: str) -> Outcome:
    skip = probe_skip_reason(caps)
    if skip:
        return Outcome("skip", skip)
    what, must_name = BAD_INPUTS[kind]
    key = f"contract::bad-input-{kind}"
    try:
        _compile_probe(host, key, timeout)
        result = host.call(f"{PROBES}:run_expecting_error", key, bad_feeds(kind), timeout)
        inputs = PROBE.inputs(seed=4)
        outputs, _ = host.run(key, inputs, timeout)
    finally:
        host.release(key)
    if not result["raised"]:
        raise Violation(f"accepted {what} and returned {result['outputs']} instead of raising "
                        "InputMismatchError")
    if not result["target_error"]:
        raise Violation(f"{what} raised {result['type']}, not a TargetError "
                        "(raise harness.driver.target.InputMismatchError): "
                        f"{result['message'][:200]}")
    if must_name not in result["message"]:
        raise Violation(f"the error for {what} does not name {must_name!r}: "
                        f"{result['type']}: {result['message'][:200]}")
    wrong = _probe_error(outputs, inputs, caps.precision)
    if wrong:
        raise Violation(f"after rejecting {what}, the executable's outputs are wrong: {wrong}")
    return Outcome("pass", metrics={"error_type": result["type"]})


# -- timeouts and resources ------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def check_timeout(host: ProcessHost, caps: Any, timeout: float) -> Outcome:
    """A request past its timeout is cut off promptly; nothing the driver started survives
    the kill; the next request gets a fresh, working worker."""
    key = "contract::timeout"
    try:
        _compile_probe(host, key, timeout)
        before = host.call(f"{PROBES}:resource_usage", key, None, timeout)
        started = time.perf_counter()
        try:
            host.call(f"{PROBES}:sleep", key, 60.0, SHORT_TIMEOUT_S)
        except CaseTimeout:
            stop_s = time.perf_counter() - started
        else:
            raise Violation("a 60 s request returned within a 1 s timeout")
        if stop_s > SHORT_TIMEOUT_S + STOP_GRACE_S:
            raise Violation(f"a request past its {SHORT_TIMEOUT_S:g} s timeout took {stop_s:.1f} s "
                            "to stop (the worker does not die when killed)")
        survivors = _wait_gone([before["pid"], *before["children"]], ORPHAN_GRACE_S)
        if survivors:
            raise Violation(f"process(es) {survivors} started by the driver outlived its killed "
                            "worker")
        restarted = time.perf_counter()
        _expect_probe_works(host, timeout, "after a timeout killed the worker",
                            caps.precision)
        restart_s = time.perf_counter() - restarted
    finally:
        host.close()
    return Outcome("pass", metrics={"stop_s": stop_s, "restart_s": restart_s,
                                    "timeout_s": SHORT_TIMEOUT_S})


def check_resources(host: Host, caps: Any, timeout: float, owned: bool) -> Outcome:
    """Repeated compile/run/close leaves memory, descriptors and threads where they were;
    closing the host ends the worker promptly."""
    skip = probe_skip_reason(caps)
    if skip:
        return Outcome("skip", skip)
    inputs = PROBE.inputs(seed=5)
    samples: list[dict[str, Any]] = []
    try:
        for cycle in range(1, CYCLES + 1):
            key = f"contract::resources::{cycle}"
            _compile_probe(host, key, timeout)
            host.run(key, inputs, timeout)
            if cycle in (WARMUP, CYCLES):
                samples.append(host.call(f"{PROBES}:resource_usage", key, None, timeout))
            host.release(key)
        close_s = None
        if owned:
            pid = samples[-1]["pid"]
            started = time.perf_counter()
            host.close()
            close_s = time.perf_counter() - started
            if _wait_gone([pid], 2.0):
                raise Violation(f"worker {pid} is still alive after close")
    finally:
        if owned:
            host.close()
    start, end = samples
    cycles = CYCLES - WARMUP
    growth = end["rss_mib"] - start["rss_mib"]
    metrics = {"cycles": cycles, "rss_start_mib": round(start["rss_mib"], 2),
               "rss_end_mib": round(end["rss_mib"], 2), "rss_growth_mib": round(growth, 2),
               "rss_growth_per_cycle_mib": round(growth / cycles, 3),
               "fds_start": start["fds"], "fds_end": end["fds"],
               "threads_start": start["threads"], "threads_end": end["threads"],
               "close_s": close_s}
    problems = []
    if growth > RSS_GROWTH_LIMIT_MIB:
        problems.append(f"memory grew {growth:.1f} MiB over {cycles} compile/close cycles "
                        f"({growth / cycles:.2f} MiB per cycle; "
                        f"limit {RSS_GROWTH_LIMIT_MIB:g} MiB)")
    if end["fds"] - start["fds"] > FD_GROWTH_LIMIT:
        problems.append(f"open file descriptors grew from {start['fds']} to {end['fds']} over "
                        f"{cycles} cycles")
    if end["threads"] - start["threads"] > THREAD_GROWTH_LIMIT:
        problems.append(f"threads grew from {start['threads']} to {end['threads']} over "
                        f"{cycles} cycles")
    if close_s is not None and close_s > STOP_GRACE_S - 1:
        problems.append(f"closing took {close_s:.1f} s: Target.close or Executable.close hangs")
    return Outcome("fail" if problems else "pass", "; ".join(problems), metrics=metrics)


def check_thread_safety(host: Host, caps: Any, timeout: float, threads: int = 4,
                        rounds: int = 5) -> Outcome:
    if not caps.thread_safe:
        return Outcome("skip", "the driver does not declare Capabilities.thread_safe "
                               "(the harness uses it from one thread)")
    skip = probe_skip_reason(caps)
    if skip:
        return Outcome("skip", skip)
    key = "contract::threads"
    payload = {"feeds": [PROBE.inputs(seed=10 + i) for i in range(6)], "output": OUTPUT,
               "threads": threads, "rounds": rounds}
    try:
        _compile_probe(host, key, timeout)
        result = host.call(f"{PROBES}:concurrent_runs", key, payload, timeout)
    finally:
        host.release(key)
    problems = []
    if result["error_count"]:
        problems.append(f"{result['error_count']} of {result['runs']} concurrent runs raised, "
                        f"e.g. {result['errors'][0]}")
    if result["mismatch_count"]:
        problems.append(f"{result['mismatch_count']} of {result['runs']} concurrent runs "
                        f"returned outputs different from a single-threaded run "
                        f"({', '.join(result['mismatches'][:3])})")
    return Outcome("fail" if problems else "pass",
                   "declares thread_safe, but " + "; ".join(problems) if problems else "",
                   metrics={"threads": threads, "runs": result["runs"]})


def check_declared_dtypes(host: Host, caps: Any, timeout: float) -> Outcome:
    """The element types a driver declares are the ones its capability probe finds the
    runtime accepts (:mod:`harness.driver.probe`): none declared that it refuses, none it accepts
    left undeclared. A driver that declares none (``dtypes=()``) declares by probe: what
    the probe finds accepted is its declaration, recorded here (``declared_by = "probe"``);
    it breaks the contract only if the runtime refuses float32, which every target that
    runs models must take (one that runs none, a sensor, is not applicable)."""
    probe = probe_for(host, caps)
    verdicts = {name: probe.verdict(name, timeout) for name in sorted(ELEMENT_TYPES)}
    if not any(verdicts.values()):
        raise InfraError("the capability probe could not tell any element type (timeouts or "
                         "infrastructure failures)")
    gaps = sorted(n for n, v in verdicts.items() if v and v.verdict == HARNESS_GAP)
    accepted = sorted(n for n, v in verdicts.items() if v and v.verdict == ACCEPTED)
    # types the harness cannot carry are its own gap (their cases are infra_error), not a
    # contradiction of the driver's word
    metrics = {"probed_accepted": accepted, "harness_gaps": gaps,
               "declared_by": "capabilities" if caps.dtypes else "probe"}
    if not caps.dtypes and not accepted:
        raise NotApplicable("the driver declares no element types and the runtime accepts "
                            "none the probe tried: it runs no ONNX models (a sensor)")
    declared = caps.dtypes or tuple(sorted(ASSUMED))
    refused = [f"{n} ({verdicts[n].message[:120]})" for n in declared
               if verdicts.get(n) and verdicts[n].verdict in (REFUSED, UNDEFINED)]
    undeclared = sorted(n for n in accepted if n not in caps.dtypes) if caps.dtypes else []
    problems = ([f"declared but refused by the runtime: {'; '.join(refused)}"] if refused else []
                ) + ([f"accepted by the runtime but not declared: {', '.join(undeclared)}"]
                     if undeclared else [])
    if problems:
        what = "capabilities contradict the probe" if caps.dtypes else \
            "declared by probe, but every target must take float32"
        raise Violation(f"{what}: " + " | ".join(problems))
    notes = [] if caps.dtypes else [
        f"declared by probe (dtypes=()): the runtime accepts {', '.join(accepted)}"]
    notes += [f"harness gaps: {', '.join(gaps)}"] if gaps else []
    return Outcome("pass", "; ".join(notes), metrics=metrics)
