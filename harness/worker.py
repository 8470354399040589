"""Isolation: a target runs in a worker subprocess so a crash or hang costs one case.

:class:`ProcessHost` owns one worker process per target. Every request waits at
most its timeout; past it the worker is killed and :class:`CaseTimeout` raised.
A worker that dies (segfault, abort, OOM kill) raises :class:`WorkerCrash` with
its exit code or signal. The next request starts a fresh worker. A worker that
will not start raises :class:`InfraError`: that is the harness's failure, not the
target's, and is recorded as such.

:class:`InlineHost` runs the target in this process (for debugging with pdb and
for measuring the isolation overhead); it cannot enforce timeouts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from harness.registry import TargetSpec, load_object
from harness.target import Executable, InfraError, Target

DEFAULT_STARTUP_TIMEOUT = 120.0
__all__ = ["CaseTimeout", "Host", "InfraError", "InlineHost", "ProcessHost", "RemoteError",
           "WorkerCrash"]


class CaseTimeout(Exception):
    def __init__(self, seconds: float, phase: str) -> None:
        super().__init__(f"{phase} exceeded the {seconds:g} s timeout; worker killed")
        self.seconds = seconds
        self.phase = phase


class WorkerCrash(Exception):
    def __init__(self, exitcode: int | None, phase: str) -> None:
        self.exitcode = exitcode
        self.phase = phase
        self.signal = _signal_name(exitcode)
        how = f"signal {self.signal}" if self.signal else f"exit code {exitcode}"
        super().__init__(f"worker died during {phase} ({how})")


@dataclass
class RemoteError(Exception):
    """The target raised inside the worker; carried back with its class name."""

    exc_type: str
    message: str
    phase: str
    remote_traceback: str = ""

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.message}"


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return str(-exitcode)


class Host(Protocol):
    """What case runners use to reach a target, in or out of process."""

    restarts: int

    def compile(self, key: str, model: bytes, timeout: float) -> float: ...
    def run(self, key: str, feeds: Mapping[str, Any], timeout: float
            ) -> tuple[dict[str, Any], float]: ...
    def placement(self, key: str, timeout: float) -> dict[str, Any]: ...
    def call(self, function: str, key: str, payload: Any, timeout: float) -> Any: ...
    def run_case(self, key: str, model: bytes, feeds_list: list[Mapping[str, Any]],
                 timeout: float) -> dict[str, Any]: ...
    def release(self, key: str) -> None: ...
    def close(self) -> None: ...


class _Executor:
    """The request handlers, shared by the worker loop and :class:`InlineHost`."""

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
                "run_s": [seconds for _, seconds in runs], "placement": placement}

    def close(self) -> None:
        for key in list(self.executables):
            self.release(key)
        self.target.close()


def _worker_main(conn: Connection, spec: TargetSpec, configuration: str,
                 options: Mapping[str, Any]) -> None:
    try:
        executor = _Executor(spec.build(configuration, options))
    except BaseException as exc:
        conn.send(("startup_error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            break
        if op == "shutdown":
            break
        try:
            conn.send(("ok", getattr(executor, op)(*args)))
        except BaseException as exc:  # the target's failure travels back, the worker lives on
            phase = getattr(exc, "shipei_phase", op)
            status = "infra_error" if isinstance(exc, InfraError) else "error"
            conn.send((status, (type(exc).__name__, str(exc), traceback.format_exc(), phase)))
    executor.close()


class _Requests:
    """The Host requests, each one call of ``_request(op, args, timeout)``."""

    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        raise NotImplementedError

    def compile(self, key: str, model: bytes, timeout: float) -> float:
        return self._request("compile", (key, model), timeout)

    def run(self, key: str, feeds: Mapping[str, Any], timeout: float
            ) -> tuple[dict[str, Any], float]:
        return self._request("run", (key, dict(feeds)), timeout)

    def placement(self, key: str, timeout: float) -> dict[str, Any]:
        return self._request("placement", (key,), timeout)

    def call(self, function: str, key: str, payload: Any, timeout: float) -> Any:
        return self._request("call", (function, key, payload), timeout)

    def run_case(self, key: str, model: bytes, feeds_list: list[Mapping[str, Any]],
                 timeout: float) -> dict[str, Any]:
        return self._request("run_case", (key, model, [dict(f) for f in feeds_list]), timeout)


class ProcessHost(_Requests):
    """A target in a worker subprocess, restarted after every crash or timeout."""

    def __init__(self, spec: TargetSpec, configuration: str = "default",
                 options: Mapping[str, Any] | None = None,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        self.spec = spec
        self.configuration = configuration
        self.options = dict(options or {})
        self.startup_timeout = startup_timeout
        self.restarts = 0
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._started_once = False

    # -- lifecycle -----------------------------------------------------------------
    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(child, self.spec, self.configuration, self.options),
            name=f"shipei-worker-{self.spec.name}", daemon=True,
        )
        try:
            process.start()
        except OSError as exc:
            raise InfraError(f"could not start a worker for {self.spec.name}: {exc}") from exc
        child.close()
        if not parent.poll(self.startup_timeout):
            process.kill()
            process.join(5)
            raise InfraError(
                f"worker for {self.spec.name} did not start within {self.startup_timeout:g} s")
        try:
            message = parent.recv()
        except EOFError:
            process.join(5)
            raise InfraError(
                f"worker for {self.spec.name} died while starting "
                f"(exit code {process.exitcode})") from None
        if message[0] != "ready":
            process.join(5)
            raise InfraError(f"worker for {self.spec.name} failed to start: {message[1]}")
        if self._started_once:
            self.restarts += 1
        self._started_once = True
        self._process, self._conn = process, parent
        return parent

    def _stop(self, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if not kill and conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("shutdown", ()))
            process.join(10)
        if process.is_alive():
            process.kill()
        process.join(10)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop(kill=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -- requests ------------------------------------------------------------------
    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        conn = self._conn or self._start()
        try:
            conn.send((op, args))
            ready = conn.poll(max(timeout, 0.0))
        except (OSError, EOFError):
            ready = True  # the recv below sees the broken pipe
        if not ready:
            self._stop(kill=True)
            raise CaseTimeout(timeout, op)
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            process = self._process
            if process is not None:
                process.join(10)
            exitcode = process.exitcode if process is not None else None
            self._stop(kill=True)
            raise WorkerCrash(exitcode, op) from None
        if status == "error":
            exc_type, message, remote_tb, phase = payload
            raise RemoteError(exc_type, message, phase, remote_tb)
        if status == "infra_error":
            exc_type, message, _, phase = payload
            raise InfraError(f"{phase}: {exc_type}: {message}")
        return payload

    def release(self, key: str) -> None:
        if self._conn is None:
            return
        # a replaced worker or a key already gone leaves nothing to release
        with contextlib.suppress(CaseTimeout, WorkerCrash, RemoteError, InfraError):
            self._request("release", (key,), 30.0)


class InlineHost(_Requests):
    """The target in this process: no isolation, no timeouts."""

    def __init__(self, target: Target) -> None:
        self._executor = _Executor(target)
        self.restarts = 0

    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        try:
            return getattr(self._executor, op)(*args)
        except InfraError:
            raise
        except Exception as exc:
            raise RemoteError(type(exc).__name__, str(exc), getattr(exc, "shipei_phase", op),
                              traceback.format_exc()) from exc

    def release(self, key: str) -> None:
        self._executor.release(key)

    def close(self) -> None:
        self._executor.close()
