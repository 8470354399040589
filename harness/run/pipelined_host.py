"""Pipelined worker requests: the next cases are sent ahead while pytest records the last.

A worker answers requests one at a time, in order. :class:`RequestPipeline` keeps
a bounded window of ``run_case`` requests written to a :class:`ProcessHost`'s
worker before their answers are wanted, so the worker goes from one case to the
next without waiting for the test process. The rules of isolation are the same
as for one request at a time:

- a request's timeout runs from when the worker could start it: when it was sent
  to an idle worker, else when the answer before it arrived (answers are collected
  as each test starts, so that time is known closely; an answer already waiting
  when the host looks counts as in time: the worker did finish);
- a crash or timeout is charged to the request being answered, the worker is
  replaced, and the requests sent behind it are sent again to the fresh worker;
- nothing written ever blocks the test process: a request goes ahead only while
  every unanswered request fits in the pipe (whose size it asks for), so the worker
  can always read what was written; one that does not fit waits its turn.

:class:`PipelinedHost` is the :class:`~harness.isolation.host.Host` the plugin hands out
when pipelining is on: ``run_case`` joins the window and every other request first
collects the answers in flight, so direct users of the host see a quiet wire.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.isolation.host import (
    CaseTimeout,
    HarnessConversionError,
    InfraError,
    ProcessHost,
    WorkerCrash,
    _Requests,
    _unwrap,
)
from harness.isolation.tensors import TensorCodecError
from harness.isolation.wire import WireClosed, WireError, WireTimeout, message
from harness.run.parallelism import idle_cores

#: requests sent ahead when a core is spare (see :func:`configured_window`)
DEFAULT_WINDOW = 64
#: environment variable setting the window; 0 turns pipelining off
WINDOW_ENV = "SHIPEI_PIPELINE_WINDOW"
#: pipe capacity asked for (Linux lets an unprivileged process have up to 1 MiB)
PIPE_BYTES = 1 << 20
#: requests prepared ahead stop while this many bytes wait unsent (large models)
UNSENT_BYTES = 64 << 20
#: what may be unanswered in the pipe when its capacity cannot be asked for
FALLBACK_PIPE_BYTES = 16 << 10
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032
#: how long reading an answer that is already arriving may take past its deadline
READ_GRACE_S = 30.0


def spare_core() -> bool:
    """Whether a core is idle for the worker to run ahead on (one-minute load average
    below the core count by one). Without one, the worker and pytest only take turns,
    and sending ahead measured slower (docs/performance.md)."""
    return idle_cores() >= 1.0


def configured_window(default: int | None = None) -> int:
    """The window from ``SHIPEI_PIPELINE_WINDOW`` (a non-negative integer), else
    ``default``, else :data:`DEFAULT_WINDOW` when :func:`spare_core` and 0 when not."""
    text = os.environ.get(WINDOW_ENV, "").strip()
    if not text:
        if default is not None:
            return default
        return DEFAULT_WINDOW if spare_core() else 0
    try:
        window = int(text)
    except ValueError:
        raise ValueError(f"{WINDOW_ENV} must be a whole number, not {text!r}") from None
    if window < 0:
        raise ValueError(f"{WINDOW_ENV} must not be negative, not {window}")
    return window


@dataclass(eq=False)
class Ticket:
    """One ``run_case`` request and, once answered, its answer or the error it cost."""

    key: str
    pieces: list[bytes]
    timeout: float
    size: int = 0
    state: str = "queued"  # queued (not on the wire) -> sent -> done
    ready_at: float = 0.0  # monotonic time the worker could start it
    answered_at: float = 0.0
    answer: Any = None
    error: BaseException | None = None
    resent: int = field(default=0)

    @property
    def service_s(self) -> float:
        """Seconds from when the worker could start it to its answer."""
        return max(self.answered_at - self.ready_at, 0.0)


def _pipe_capacity(fd: int) -> int:
    """Grow a pipe to :data:`PIPE_BYTES` where the OS allows; its capacity in bytes."""
    try:
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except (ImportError, OSError):
        return FALLBACK_PIPE_BYTES


@contextlib.contextmanager
def _pipe_errors_not_signals() -> Iterator[None]:
    """Writing ahead may meet a worker that has just died. ``shipei`` restores SIGPIPE's
    default (quiet exit under ``| head``), which would end the whole run there; while
    writing, a broken pipe is an error to handle instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, previous)


class RequestPipeline:
    """``run_case`` requests to one :class:`ProcessHost`, up to ``window`` of them in flight."""

    def __init__(self, host: ProcessHost, window: int) -> None:
        if window < 1:
            raise ValueError("a pipeline needs a window of at least 1")
        self.host = host
        self.window = window
        self._queue: deque[Ticket] = deque()  # unanswered tickets: sent ones first
        self._budget_for: int | None = None  # the worker pid the budget was measured on
        self._budget = FALLBACK_PIPE_BYTES

    # -- the public side -------------------------------------------------------------
    def submit(self, key: str, model: bytes, feeds_list: list[Any], timeout: float) -> Ticket:
        """Queue a ``run_case`` and send what the window allows. A value the wire cannot
        carry raises :class:`HarnessConversionError` here, as the host's own call would."""
        request = {"op": "run_case", "args": [key, model, [dict(f) for f in feeds_list]]}
        try:
            pieces = [b"".join(message(request))]  # one write: one wake-up of the worker
        except (WireError, TensorCodecError) as exc:
            raise HarnessConversionError(
                f"run_case: the harness cannot send this to a worker: {exc}") from None
        ticket = Ticket(key, pieces, max(timeout, 0.0), sum(len(p) for p in pieces))
        self.poll()
        self._queue.append(ticket)
        self._pump()
        return ticket

    def result(self, ticket: Ticket) -> dict[str, Any]:
        """The answer to ``ticket``, waiting for the ones before it; raises what the host's
        ``run_case`` raises (:class:`CaseTimeout`, :class:`WorkerCrash`, ...)."""
        while ticket.state != "done":
            if ticket not in self._queue:
                raise ValueError(f"ticket {ticket.key!r} was discarded")
            if self._queue[0].state == "queued":
                self._pump()
            if self._queue and self._queue[0].state == "sent":
                self._receive_head()
        if ticket.error is not None:
            raise ticket.error
        return _unwrap(ticket.answer)

    def discard(self, ticket: Ticket) -> None:
        """Forget a ticket no test will ask for: unsent, it is dropped; sent, its answer
        is read and thrown away in turn."""
        if ticket.state == "queued" and ticket in self._queue:
            self._queue.remove(ticket)

    def drain(self) -> None:
        """Collect every answer in flight, leaving the wire quiet for another request."""
        while self._queue and self._queue[0].state == "sent":
            self._receive_head()

    def poll(self) -> None:
        """Collect the answers already there, without waiting, so each one's arrival
        (which starts the next request's timeout) is noted close to when it came."""
        while self._queue and self._queue[0].state == "sent" and self.host._worker \
                and self.host._worker.end.readable():
            self._receive_head()

    def in_flight(self) -> int:
        return sum(1 for t in self._queue if t.state == "sent")

    def unsent_bytes(self) -> int:
        """Bytes of requests prepared but not yet written (held in this process)."""
        return sum(t.size for t in self._queue if t.state == "queued")

    def close(self) -> None:
        """Drop what is queued; a worker still busy with requests sent ahead is killed."""
        busy = self.in_flight() > 0
        self._queue.clear()
        if busy:
            self.host._stop(kill=True)

    # -- sending ---------------------------------------------------------------------
    def _pump(self) -> None:
        """Send queued tickets, in order, while the window and the pipe allow."""
        sent = [t for t in self._queue if t.state == "sent"]
        count, pending = len(sent), sum(t.size for t in sent)
        for ticket in [t for t in self._queue if t.state == "queued"]:
            if count and (count >= self.window or pending + ticket.size > self._budget):
                return
            worker = self.host._worker
            if worker is None:
                try:
                    worker = self.host._start()
                except InfraError as exc:  # charged to the first case waiting, as unpipelined
                    self._finish(ticket, error=exc)
                    return
            self._measure_budget(worker)
            now = time.monotonic()
            try:
                with _pipe_errors_not_signals():
                    worker.end.send_pieces(ticket.pieces, now + ticket.timeout)
            except WireTimeout:
                self.host._stop(kill=True)
                if count:  # the pipe was smaller than it said: send those again, fewer
                    self._budget = max(self._budget // 2, 1)
                    for queued in self._queue:
                        queued.state, queued.ready_at = "queued", 0.0
                    return
                self._finish(ticket, error=CaseTimeout(ticket.timeout, "run_case"))
                return
            except WireClosed:
                if count:  # the death shows when the request ahead is answered
                    return
                self._charge_crash(ticket, worker)
                return
            ticket.state = "sent"
            if count == 0:
                ticket.ready_at = now
            count, pending = count + 1, pending + ticket.size

    def _measure_budget(self, worker: Any) -> None:
        pid = worker.process.pid
        if self._budget_for != pid:
            self._budget = _pipe_capacity(worker.end.write_fd) - 4096
            _pipe_capacity(worker.end.read_fd)  # room for answers, so the worker runs on
            self._budget_for = pid

    # -- receiving -------------------------------------------------------------------
    def _receive_head(self) -> None:
        head = self._queue[0]
        worker = self.host._worker
        if worker is None:  # the worker went away under us (a direct kill): send again
            self._requeue()
            return
        deadline = head.ready_at + head.timeout
        if deadline <= time.monotonic() and worker.end.readable():
            deadline = time.monotonic() + READ_GRACE_S  # it answered while nobody looked
        try:
            answer = worker.end.receive(deadline)
        except WireTimeout:
            self.host._stop(kill=True)
            self._fail_and_requeue(head, CaseTimeout(head.timeout, "run_case"))
        except WireClosed:
            self._charge_crash(head, worker)
            self._requeue()
        except TensorCodecError as exc:  # the frame was read whole: the wire is still in step
            self._finish(head, error=HarnessConversionError(
                f"run_case: the harness cannot read the worker's answer: {exc}"))
        except WireError as exc:
            self.host._stop(kill=True)
            self._fail_and_requeue(head, InfraError(
                f"run_case: corrupt answer from the worker: {exc}"))
        else:
            self._finish(head, answer=answer)

    def _finish(self, ticket: Ticket, answer: Any = None,
                error: BaseException | None = None) -> None:
        now = time.monotonic()
        ticket.answered_at = now
        if not ticket.ready_at:
            ticket.ready_at = now
        ticket.answer, ticket.error, ticket.state = answer, error, "done"
        with contextlib.suppress(ValueError):
            self._queue.remove(ticket)
        if self._queue and self._queue[0].state == "sent":
            self._queue[0].ready_at = now  # the worker turns to the next one now

    def _charge_crash(self, ticket: Ticket, worker: Any) -> None:
        try:
            self.host._crashed(worker, "run_case")
        except WorkerCrash as exc:
            self._finish(ticket, error=exc)

    def _fail_and_requeue(self, ticket: Ticket, error: BaseException) -> None:
        self._finish(ticket, error=error)
        self._requeue()

    def _requeue(self) -> None:
        """The worker is gone: what it was sent goes again, in order, to a fresh one."""
        for ticket in self._queue:
            if ticket.state == "sent":
                ticket.state, ticket.ready_at = "queued", 0.0
                ticket.resent += 1
        self._pump()


class PipelinedHost(_Requests):
    """A :class:`ProcessHost` whose ``run_case`` requests share a :class:`RequestPipeline`;
    any other request first collects the answers in flight."""

    def __init__(self, host: ProcessHost, window: int) -> None:
        self.host = host
        self.pipeline = RequestPipeline(host, window)

    def __getattr__(self, name: str) -> Any:  # spec, pid, worker_info, driver_module, ...
        if name in ("host", "pipeline"):
            raise AttributeError(name)
        return getattr(self.host, name)

    @property
    def restarts(self) -> int:  # type: ignore[override]
        return self.host.restarts

    def submit(self, key: str, model: bytes, feeds_list: list[Any], timeout: float) -> Ticket:
        return self.pipeline.submit(key, model, feeds_list, timeout)

    def result(self, ticket: Ticket) -> dict[str, Any]:
        return self.pipeline.result(ticket)

    def run_case(self, key: str, model: bytes, feeds_list: list[Any],
                 timeout: float) -> dict[str, Any]:
        return self.pipeline.result(self.pipeline.submit(key, model, feeds_list, timeout))

    def _request(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        self.pipeline.drain()
        return self.host._request(op, args, timeout)

    def release(self, key: str) -> None:
        self.pipeline.drain()
        self.host.release(key)

    def close(self) -> None:
        self.pipeline.close()
        self.host.close()
