"""The worker side of :mod:`harness.isolation.host`: ``python -m harness.isolation.worker_main``.

It speaks :mod:`harness.isolation.wire` on its standard input and output, which it moves
to private descriptors first (standard output then goes to standard error, so a
runtime that prints cannot corrupt a frame). It imports only the driver API,
the registry, the wire and numpy, so it runs under another interpreter, a venv
with another numpy, an emulator or ssh, with the harness source on
``PYTHONPATH``.

Conversation: the controller sends ``{"op": "start", "spec": ..., "configuration":
..., "options": ..., "memory_limit": BYTES}``; the worker lowers its own memory
ceiling (:mod:`harness.isolation.memory_limit`), builds the target and answers ``{"status":
"ready", "worker": {...}}`` or ``{"status": "startup_error", ...}``. Then each
request ``{"op": OP, "args": [...]}`` gets one answer: ``{"status": "ok",
"value": ...}``, ``{"status": "error", ...}`` (the target raised) or ``{"status":
"infra_error", ...}`` (the harness or infrastructure failed). ``{"op":
"shutdown"}`` ends it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

from harness.driver.registry import TargetSpec, load_object
from harness.driver.target import Executable, InfraError, Target
from harness.isolation import memory_limit
from harness.isolation.process_exit import exit_without_teardown
from harness.isolation.tensors import TensorCodecError, preload_extended_types
from harness.isolation.wire import WIRE_VERSION, StreamEnd, WireClosed, WireError


class Executor:
    """The request handlers, shared by the worker loop and the in-process host."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.executables: dict[str, Executable] = {}

    def compile(self, key: str, model: bytes) -> float:
        self.release(key)
        start = time.perf_counter()
        self.executables[key] = self.target.compile(model)
        return time.perf_counter() - start

    def run(self, key: str, feeds: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
        executable = self.executables[key]
        start = time.perf_counter()
        outputs = executable.run(feeds)
        return outputs, time.perf_counter() - start

    def placement(self, key: str) -> dict[str, Any]:
        return self.executables[key].placement()

    def call(self, function: str, key: str, payload: Any) -> Any:
        return load_object(function)(self.executables[key], payload)

    def release(self, key: str) -> None:
        executable = self.executables.pop(key, None)
        if executable is not None:
            executable.close()

    def run_case(self, key: str, model: bytes, feeds_list: list[Mapping[str, Any]]
                 ) -> dict[str, Any]:
        """Compile, run every data set, report placement and release: one round trip."""
        phase = "compile"
        try:
            compile_s = self.compile(key, model)
            phase = "run"
            runs = [self.run(key, feeds) for feeds in feeds_list]
            phase = "placement"
            placement = self.placement(key)
        except BaseException as exc:
            exc.shipei_phase = phase  # type: ignore[attr-defined]
            raise
        finally:
            self.release(key)
        return {"compile_s": compile_s, "outputs": [outputs for outputs, _ in runs],
                "run_s": [seconds for _, seconds in runs], "placement": placement,
                "worker_pid": os.getpid()}

    def identity(self) -> dict[str, Any]:
        """The target's identity as this worker sees it (its runtime, its versions)."""
        return self.target.identity.to_dict()

    def close(self) -> None:
        for key in list(self.executables):
            self.release(key)
        self.target.close()


#: the line a worker writes to its stderr as it starts a request, so that the host quotes
#: a crashed request's own output, never an earlier model's
#: (:class:`harness.isolation.host._StderrTail`)
REQUEST_MARK = b"\x1eshipei-request\n"
REQUESTS = ("compile", "run", "placement", "call", "release", "run_case", "identity")


def worker_facts() -> dict[str, Any]:
    """Who this worker is: sent with ``ready`` and kept by the controller."""
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is required by the wire
        numpy_version = ""
    return {"pid": os.getpid(), "python": platform.python_version(),
            "executable": sys.executable, "machine": platform.machine(),
            "numpy": numpy_version, "wire": WIRE_VERSION}


def failure(status: str, exc: BaseException, phase: str) -> dict[str, Any]:
    return {"status": status, "type": type(exc).__name__, "message": str(exc),
            "traceback": plain_traceback(exc), "phase": phase}


def plain_traceback(exc: BaseException) -> str:
    """``traceback.format_exc()`` without Python 3.11's ``^^^^`` markers, which parse
    each frame's source line again (3% of the worker's time on the operator suite,
    where hundreds of cases fail in the runtime)."""
    formatted = traceback.TracebackException.from_exception(exc)
    pending, seen = [formatted], set()
    while pending:
        part = pending.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        for frame in part.stack:
            frame.colno = frame.end_colno = None
        pending += [p for p in (part.__cause__, part.__context__) if p is not None]
    return "".join(formatted.format())


def _spec(data: Mapping[str, Any]) -> TargetSpec:
    return TargetSpec(name=data["name"], factory=data["factory"],
                      kwargs=dict(data.get("kwargs") or {}),
                      configurations=tuple(data.get("configurations") or ("default",)))


def serve(end: StreamEnd) -> None:
    try:
        hello = end.receive()
        limits = memory_limit.apply(hello.get("memory_limit"))
        spec = _spec(hello["spec"])
        executor = Executor(spec.build(hello.get("configuration", "default"),
                                       hello.get("options") or {}))
    except WireClosed:
        return
    except BaseException as exc:
        end.send(failure("startup_error", exc, "start"))
        return
    end.send({"status": "ready", "worker": worker_facts() | limits})
    preload_extended_types()  # while the test process collects: its requests come later
    try:
        _loop(end, executor)
    finally:
        executor.close()


def _loop(end: StreamEnd, executor: Executor) -> None:
    while True:
        try:
            request = end.receive()
        except WireClosed:
            return
        except TensorCodecError as exc:  # a tensor this worker cannot hold: the harness's gap
            end.send(failure("infra_error", exc, "decode") | {"blame": "harness"})
            continue
        op = request.get("op")
        if op == "shutdown":
            return
        if op not in REQUESTS:
            end.send(failure("infra_error", WireError(f"unknown request {op!r}"), str(op)))
            continue
        with contextlib.suppress(OSError):  # what the runtime prints next is this request's
            os.write(2, REQUEST_MARK)
        try:
            value = getattr(executor, op)(*request.get("args", ()))
        except BaseException as exc:  # the target's failure travels back, the worker lives on
            phase = getattr(exc, "shipei_phase", op)
            status = "infra_error" if isinstance(exc, InfraError) else "error"
            blame = getattr(exc, "blame", "") if status == "infra_error" else ""
            end.send(failure(status, exc, phase) | ({"blame": blame} if blame else {}))
            continue
        try:
            end.send({"status": "ok", "value": value})
        except (WireError, TensorCodecError) as exc:  # the driver returned what no wire carries
            end.send(failure("error", exc, f"{op} result"))


def main() -> None:
    wire_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    wire_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # whatever a runtime prints lands on stderr, never in a frame
    # Ctrl-C reaches the whole process group: the controller decides, the worker carries on
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(StreamEnd(wire_in, wire_out))
    # the target is closed and every answer written: the controller need not wait for a
    # runtime's teardown (measured 30-50 ms)
    exit_without_teardown(0)


if __name__ == "__main__":
    main()
