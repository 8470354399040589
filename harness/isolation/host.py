"""Isolation: a target runs in a worker subprocess so a crash or hang costs one case.

:class:`ProcessHost` owns one worker per target: a subprocess started from an
argv (by default this interpreter running ``-m harness.isolation.worker_main``) that
speaks :mod:`harness.isolation.wire` over its standard input and output. Because nothing
is pickled, the worker may run another interpreter or venv (numpy 1.x beside
the harness's 2.x), under a command prefix such as an emulator, or over ssh.

Every request waits at most its timeout; past it the worker is killed and
:class:`CaseTimeout` raised. A worker that dies (segfault, abort) raises
:class:`WorkerCrash` with its exit code or signal; one killed by a signal the
harness did not send (the OOM killer, an operator) is marked ``external`` with
the host's OOM evidence, so it is charged to the infrastructure. The next
request starts a fresh worker. A worker that will not start raises
:class:`InfraError`: that is the harness's failure, not the target's.

:class:`InlineHost` runs the target in this process (for debugging with pdb and
for measuring the isolation overhead); it cannot enforce timeouts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.driver.registry import TargetSpec
from harness.driver.target import InfraError, Target
from harness.environments.spec import harness_path_dir
from harness.isolation import oom
from harness.isolation.tensors import TensorCodecError
from harness.isolation.wire import DeadlineEnd, WireClosed, WireError, WireTimeout
from harness.isolation.worker_main import REQUEST_MARK, Executor

DEFAULT_STARTUP_TIMEOUT = 120.0
WORKER_MODULE = "harness.isolation.worker_main"
#: the folder holding the ``harness`` package; a foreign worker needs it on PYTHONPATH
SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
#: signals a process does not raise on itself for a fault of its own: when the harness
#: did not send one, somebody outside did (the OOM killer, an operator, a shutdown)
EXTERNAL_SIGNALS = frozenset({"SIGKILL", "SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT"})
__all__ = ["CaseTimeout", "Host", "InfraError", "InlineHost", "ProcessHost", "RemoteError",
           "WorkerCrash", "default_launcher"]


class CaseTimeout(Exception):
    def __init__(self, seconds: float, phase: str) -> None:
        super().__init__(f"{phase} exceeded the {seconds:g} s timeout; worker killed")
        self.seconds = seconds
        self.phase = phase


class WorkerCrash(Exception):
    """The worker died. ``external`` when a signal the harness did not send killed it;
    ``evidence`` then holds what the host says about it (OOM kill counts, pressure)."""

    def __init__(self, exitcode: int | None, phase: str, external: bool = False,
                 evidence: Mapping[str, Any] | None = None, stderr_tail: str = "",
                 pid: int | None = None) -> None:
        self.exitcode = exitcode
        #: the dead worker's process id (which cases it ran before it died)
        self.pid = pid
        self.phase = phase
        self.signal = _signal_name(exitcode)
        self.external = external
        self.evidence = dict(evidence or {})
        self.stderr_tail = stderr_tail
        how = f"signal {self.signal}" if self.signal else f"exit code {exitcode}"
        text = f"worker died during {phase} ({how})"
        if external:
            cause = "the OOM killer" if self.evidence.get("oom_killed") else "something outside"
            text += f"; killed by {cause}, not by the harness or the target"
        super().__init__(text)


@dataclass
class RemoteError(Exception):
    """The target raised inside the worker; carried back with its class name."""

    exc_type: str
    message: str
    phase: str
    remote_traceback: str = ""

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.message}"


#: what a host raises when a request does not come back with the target's answer
HOST_FAILURES = (CaseTimeout, WorkerCrash, InfraError, RemoteError)


class HarnessConversionError(TensorCodecError):
    """The harness could not carry a value to or from a worker (a conversion it lacks)."""


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return str(-exitcode)


def default_launcher() -> list[str]:
    """The argv prefix that starts a worker's interpreter: this one."""
    return [sys.executable]


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
    def identity(self, timeout: float) -> dict[str, Any]: ...
    def release(self, key: str) -> None: ...
    def close(self) -> None: ...


class _Requests:
    """The Host requests, each one call of ``_request(op, args, timeout)``."""

    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        raise NotImplementedError

    def compile(self, key: str, model: bytes, timeout: float) -> float:
        return self._request("compile", (key, model), timeout)

    def run(self, key: str, feeds: Mapping[str, Any], timeout: float
            ) -> tuple[dict[str, Any], float]:
        outputs, seconds = self._request("run", (key, dict(feeds)), timeout)
        return outputs, seconds

    def placement(self, key: str, timeout: float) -> dict[str, Any]:
        return self._request("placement", (key,), timeout)

    def call(self, function: str, key: str, payload: Any, timeout: float) -> Any:
        return self._request("call", (function, key, payload), timeout)

    def run_case(self, key: str, model: bytes, feeds_list: list[Mapping[str, Any]],
                 timeout: float) -> dict[str, Any]:
        return self._request("run_case", (key, model, [dict(f) for f in feeds_list]), timeout)

    def identity(self, timeout: float) -> dict[str, Any]:
        """The target's identity as computed inside the worker (its own runtime versions)."""
        return self._request("identity", (), timeout)


def _to_our_stderr(source: str, line: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, line)


#: where the lines workers write on their stderr go: ``(target name, raw line)``. Ours
#: by default; the pytest plugin points it at the terminal reporter for a session, so a
#: runtime's warnings land on lines of their own, named by target, never inside the
#: progress line (:func:`set_worker_stderr_sink`).
_STDERR_SINK: list[Callable[[str, bytes], None]] = [_to_our_stderr]


def worker_stderr_sink() -> Callable[[str, bytes], None]:
    """Where worker stderr lines go now."""
    return _STDERR_SINK[0]


def set_worker_stderr_sink(sink: Callable[[str, bytes], None] | None
                           ) -> Callable[[str, bytes], None]:
    """Send every worker's stderr lines to ``sink(target name, line)`` (None: to our
    stderr, the default); returns the sink it replaces."""
    previous, _STDERR_SINK[0] = _STDERR_SINK[0], sink or _to_our_stderr
    return previous


class _StderrTail:
    """Forwards a worker's stderr (to the sink of :func:`set_worker_stderr_sink`) and keeps
    its last lines for error messages: all of them, and those since the request the worker
    last started (after its :data:`~harness.isolation.worker_main.REQUEST_MARK`, which is
    not forwarded)."""

    def __init__(self, stream: Any, keep: int = 40, source: str = "") -> None:
        self.source = source
        self.lines: deque[str] = deque(maxlen=keep)
        self.request_lines: deque[str] = deque(maxlen=keep)
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True,
                                       name="shipei-worker-stderr")
        self.thread.start()

    def _pump(self, stream: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                if line.endswith(REQUEST_MARK):  # after whatever ended without a newline
                    line = line[:-len(REQUEST_MARK)]
                    self._keep(line + b"\n" if line else line)
                    self.request_lines = deque(maxlen=self.lines.maxlen)
                    continue
                self._keep(line)
        with contextlib.suppress(OSError, ValueError):
            stream.close()

    def _keep(self, line: bytes) -> None:
        """Keep a line (and forward it as it came)."""
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip()
        self.lines.append(text)
        self.request_lines.append(text)
        with contextlib.suppress(Exception):  # a broken sink never stops the pump
            _STDERR_SINK[0](self.source, line)

    def text(self, lines: int = 8) -> str:
        return "\n".join(list(self.lines)[-lines:])

    def request_text(self, lines: int = 40) -> str:
        """The last lines the request the worker was running printed."""
        return "\n".join(list(self.request_lines)[-lines:])

    def join(self, seconds: float = 2.0) -> bool:
        """Wait for the pipe's end; False if something still holds it open."""
        self.thread.join(seconds)
        return not self.thread.is_alive()


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    end: DeadlineEnd
    stderr: _StderrTail
    memory_before: dict[str, Any]
    killed_by_harness: bool = False


class ProcessHost(_Requests):
    """A target in a worker subprocess, restarted after every crash or timeout.

    ``launcher`` is the argv prefix that starts the worker's Python (default: this
    interpreter); ``-m harness.isolation.worker_main`` is appended. It may name another venv's
    python, wrap one in a command prefix (an emulator) or reach another machine
    (``ssh HOST env PYTHONPATH=... python3``). ``env`` adds to (or overrides) the
    inherited environment; the harness source folder is put first on PYTHONPATH.
    ``memory_limit`` (bytes) is the ceiling the worker puts on its own memory
    (:mod:`harness.isolation.memory_limit`); None for none.
    """

    def __init__(self, spec: TargetSpec, configuration: str = "default",
                 options: Mapping[str, Any] | None = None,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                 launcher: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None,
                 memory_limit: int | None = None) -> None:
        self.spec = spec
        self.memory_limit = memory_limit
        self.configuration = configuration
        self.options = dict(options or {})
        self.startup_timeout = startup_timeout
        self.launcher = list(launcher) if launcher else default_launcher()
        self.env = dict(env or {})
        self.restarts = 0
        #: what the last worker said about itself (pid, python, numpy, machine, wire)
        self.worker_info: dict[str, Any] = {}
        self._worker: _Worker | None = None
        #: a worker launched ahead by :meth:`prestart`, not yet ready
        self._launched: _Worker | None = None
        self._started_once = False

    @property
    def driver_module(self) -> str:
        """The module holding the driver class (for caches keyed by the driver's source)."""
        return self.spec.factory.partition(":")[0]

    # -- lifecycle -----------------------------------------------------------------
    @property
    def argv(self) -> list[str]:
        return [*self.launcher, "-m", WORKER_MODULE]

    def _environment(self) -> dict[str, str]:
        """The worker's variables. The harness source goes first on PYTHONPATH: its folder
        for this interpreter, or, for a foreign one, a folder of links to the ``harness``
        and ``targets`` packages alone (an installed harness's folder is site-packages,
        whose numpy would shadow the foreign environment's)."""
        env = dict(os.environ)
        env.update(self.env)
        own = self.launcher == [sys.executable]
        source = SOURCE_ROOT if own else str(harness_path_dir())
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != source]
        env["PYTHONPATH"] = os.pathsep.join([source, *parts])
        return env

    def _hello(self) -> dict[str, Any]:
        spec = asdict(self.spec)
        spec["configurations"] = list(spec["configurations"])
        return {"op": "start", "spec": spec, "configuration": self.configuration,
                "options": self.options, "memory_limit": self.memory_limit}

    def prestart(self) -> None:
        """Launch the worker now and send its start message without waiting for it to be
        ready, so its start-up (imports, building the target) overlaps what the test
        process does meanwhile (collection); the first request waits for its answer. A
        launch that fails here is forgotten: the first request launches again and
        reports the failure as its own."""
        if self._worker is not None or self._launched is not None:
            return
        with contextlib.suppress(InfraError):
            self._launched = self._launch()

    def _launch(self) -> _Worker:
        """A new worker process, sent its start message."""
        try:
            process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=self._environment())
        except OSError as exc:
            raise InfraError(f"could not start a worker for {self.spec.name} "
                             f"({' '.join(self.argv)}): {exc}") from exc
        assert process.stdin and process.stdout and process.stderr
        worker = _Worker(process, DeadlineEnd(process.stdout.fileno(), process.stdin.fileno()),
                         _StderrTail(process.stderr, source=self.spec.name), oom.snapshot())
        try:
            worker.end.send(self._hello(), time.monotonic() + self.startup_timeout)
        except WireError as exc:
            raise self._died_starting(worker, exc) from None
        return worker

    def _died_starting(self, worker: _Worker, exc: Exception) -> InfraError:
        code = self._discard(worker)
        tail = worker.stderr.text(3)
        return InfraError(f"worker for {self.spec.name} died while starting (exit code {code})"
                          + (f": {tail}" if tail else f": {exc}"))

    def _start(self) -> _Worker:
        name = self.spec.name
        launched, self._launched = self._launched, None
        worker = launched or self._launch()
        # the start-up time counts from now: a worker launched ahead had the time since
        deadline = time.monotonic() + self.startup_timeout
        try:
            message = worker.end.receive(deadline)
        except WireTimeout:
            self._discard(worker)
            raise InfraError(
                f"worker for {name} did not start within {self.startup_timeout:g} s") from None
        except (WireClosed, WireError) as exc:
            raise self._died_starting(worker, exc) from None
        if not isinstance(message, dict) or message.get("status") != "ready":
            self._discard(worker)
            detail = (f"{message.get('type')}: {message.get('message')}"
                      if isinstance(message, dict) else repr(message))
            raise InfraError(f"worker for {name} failed to start: {detail}")
        if self._started_once:
            self.restarts += 1
        self._started_once = True
        self.worker_info = dict(message.get("worker") or {})
        self._worker = worker
        return worker

    @staticmethod
    def _discard(worker: _Worker) -> int | None:
        """Kill a worker (if alive), reap it and close its pipes; its exit code."""
        process = worker.process
        if process.poll() is None:
            worker.killed_by_harness = True
            with contextlib.suppress(OSError):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        # a process the driver started may hold the stderr pipe open: the pump thread then
        # keeps it (and closes it at its end); closing it under the thread would block
        if worker.stderr.join():
            with contextlib.suppress(OSError):
                if process.stderr is not None:
                    process.stderr.close()
        return process.returncode

    def _stop(self, kill: bool) -> None:
        launched, self._launched = self._launched, None
        if launched is not None:  # launched ahead and never used
            self._discard(launched)
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not kill:
            with contextlib.suppress(WireError, OSError):
                worker.end.send({"op": "shutdown"}, time.monotonic() + 5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(10)
        self._discard(worker)

    def close(self) -> None:
        self._stop(kill=False)

    def ready(self) -> None:
        """Start the worker now if none is running (waiting for one launched ahead): the
        target's set-up, timed apart from any case. :class:`InfraError` if it will not."""
        if self._worker is None:
            self._start()

    @property
    def pid(self) -> int | None:
        return self._worker.process.pid if self._worker else None

    # -- requests ------------------------------------------------------------------
    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        worker = self._worker or self._start()
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            worker.end.send({"op": op, "args": list(args)}, deadline)
        except WireTimeout:
            self._stop(kill=True)
            raise CaseTimeout(timeout, op) from None
        except (WireError, TensorCodecError) as exc:
            if not isinstance(exc, WireClosed):  # nothing was sent: the worker is fine
                raise HarnessConversionError(
                    f"{op}: the harness cannot send this to a worker: {exc}") from None
            return self._crashed(worker, op)
        try:
            answer = worker.end.receive(deadline)
        except WireTimeout:
            self._stop(kill=True)
            raise CaseTimeout(timeout, op) from None
        except WireClosed:
            return self._crashed(worker, op)
        except TensorCodecError as exc:
            raise HarnessConversionError(f"{op}: the harness cannot read the worker's "
                                         f"answer: {exc}") from None
        except WireError as exc:
            self._stop(kill=True)
            raise InfraError(f"{op}: corrupt answer from the worker: {exc}") from None
        return _unwrap(answer)

    def _crashed(self, worker: _Worker, op: str) -> Any:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(10)
        exitcode = worker.process.returncode
        by_harness = worker.killed_by_harness
        self._stop(kill=True)
        name = _signal_name(exitcode)
        external = not by_harness and name in EXTERNAL_SIGNALS
        evidence = oom.evidence(worker.memory_before, worker.process.pid) if external else {}
        raise WorkerCrash(exitcode, op, external, evidence, worker.stderr.request_text(40),
                          pid=worker.process.pid)

    def release(self, key: str) -> None:
        if self._worker is None:
            return
        # a replaced worker or a key already gone leaves nothing to release
        with contextlib.suppress(CaseTimeout, WorkerCrash, RemoteError, InfraError):
            self._request("release", (key,), 30.0)


def _unwrap(answer: Any) -> Any:
    if not isinstance(answer, dict) or "status" not in answer:
        raise InfraError(f"malformed answer from the worker: {answer!r:.200}")
    status = answer["status"]
    if status == "ok":
        return answer.get("value")
    message, phase = str(answer.get("message", "")), str(answer.get("phase", ""))
    if status == "error":
        raise RemoteError(str(answer.get("type")), message, phase,
                          str(answer.get("traceback", "")))
    error = HarnessConversionError if answer.get("blame") == "harness" else InfraError
    raise error(f"{phase}: {answer.get('type')}: {message}")


class InlineHost(_Requests):
    """The target in this process: no isolation, no timeouts."""

    def __init__(self, target: Target) -> None:
        self._executor = Executor(target)
        self.restarts = 0
        self.driver_module = type(target).__module__

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
