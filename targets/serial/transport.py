"""The host end of a serial link, on pyserial.

:class:`SerialLink` opens any URL ``serial.serial_for_url`` accepts (a device
path, ``socket://``, ``rfc2217://``, ``loop://``), sends frames and receives
them through a :class:`~targets.serial.receiver.FrameReceiver`. Every wait has a
deadline. :meth:`SerialLink.request` retransmits a request (same sequence
number) a bounded number of times when its response is lost or damaged, and
sends it again under a new sequence number after BUSY (docs/protocol.md
section 3). How long it waits in silence before sending again is learned from
the round trips it measures, per request type (RFC 6298,
:class:`~targets.serial.pacing.RetransmitTimer`): at most ``timeout``, at least
``min_rto``. :meth:`SerialLink.request_many` keeps several independent requests
of one type in flight on a device that declares ``pipeline`` (section 3.2), each
under the same rules, and returns their answers in request order.

Who is to blame, in the harness's terms:

- :class:`LinkError` (a :class:`harness.isolation.host.InfraError`, recorded as
  ``infra_error``): the port cannot be opened, the link dropped (EOF, I/O
  error), or every attempt of a request was damaged in transit. The cable, the
  adapter or the bench failed, not the device under test.
- :class:`DeviceTimeout` (a :class:`~harness.driver.target.TargetError`, ``error``):
  the link is up but the device stayed silent through every attempt;
  :class:`DeviceBusy`: it answered BUSY to every attempt.
- :class:`DeviceLost` (``infra_error``): ``lost_after`` requests in a row went
  unanswered; later requests fail at once instead of waiting again.
- :class:`DeviceError`: the device answered ERROR; :class:`DeviceProtocolError`:
  it answered something the protocol does not allow.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from harness.driver.target import InfraError, InputMismatchError, TargetError, UnsupportedModelError
from targets.serial.pacing import Pacer, RetransmitTimer
from targets.serial.protocol import (
    ABSOLUTE_MAX_PAYLOAD,
    OVERHEAD,
    VERSION,
    ErrorCode,
    Frame,
    MsgType,
    ProtocolError,
    decode_error,
    encode_frame,
    error_name,
    response_type,
    type_name,
)
from targets.serial.receiver import Damage, Event, FrameReceiver, Stray

T = TypeVar("T")
POLL_S = 0.02
#: the write timeout covers at least a frame this large (grown for larger frames)
MIN_WRITE_BUDGET_BYTES = 4096 + 64
#: request bytes a pipelined batch keeps in flight beyond its oldest request: a
#: device's receive buffer (a pty's holds about 64 KiB) must take them while it is
#: itself sending an answer the host is not yet reading
PIPELINE_BYTES = 32 * 1024


class LinkError(InfraError):
    """The serial link failed: infrastructure, not the device under test."""


class LinkDropped(LinkError):
    """An open link failed: end of file, an I/O error, the port vanished."""


class LinkOpenError(LinkError):
    """The port could not be opened at all: a wrong path or URL, no listener."""


class DeviceLost(InfraError):
    """The device stopped answering for good: requests are no longer tried."""


class DeviceTimeout(TargetError):
    """The device did not answer a request within its timeout, on every attempt."""


class DeviceBusy(TargetError):
    """The device answered BUSY to every attempt of a request."""


class DeviceProtocolError(TargetError):
    """The device sent something the protocol does not allow."""


class DeviceError(TargetError):
    """The device answered a request with ERROR."""

    def __init__(self, code: int, text: str, request: str) -> None:
        super().__init__(f"device refused {request}: {error_name(code)} ({code:#06x}): {text}")
        self.code = code
        self.text = text


def device_error(code: int, text: str, request: str) -> TargetError:
    """The harness exception for a device ERROR code (see docs/protocol.md)."""
    error = DeviceError(code, text, request)
    if code == ErrorCode.UNSUPPORTED_MODEL:
        return UnsupportedModelError(str(error))
    if code == ErrorCode.BAD_INPUT:
        return InputMismatchError(str(error))
    return error


@dataclass
class LinkSettings:
    url: str
    baudrate: int = 921600
    #: seconds of silence before an attempt counts as lost: the longest the host
    #: waits before sending a request again (the adaptive timeout's ceiling, and its
    #: value before a round trip was measured)
    timeout: float = 2.0
    inter_byte_timeout: float = 0.2  # a partial frame quiet this long is discarded
    retries: int = 3  # retransmissions after the first attempt
    pace_baud: float = 0.0  # hold host writes to this line rate (0: as fast as possible)
    bits_per_byte: float = 10.0
    exclusive: bool = True  # lock a device path against a second opener
    max_payload: int = ABSOLUTE_MAX_PAYLOAD
    #: consecutive requests without an answer (timeouts, link failures) after which
    #: the device counts as lost and further requests fail at once (0: never)
    lost_after: int = 3
    #: the adaptive retransmission timeout's floor, added to the smoothed round trip
    #: (RFC 6298's clock granularity G); ``min_rto >= timeout`` sends again after
    #: ``timeout`` always, as revision 1.4's host did
    min_rto: float = 0.1

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("a serial link needs a url")
        for name in ("timeout", "inter_byte_timeout", "min_rto"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.lost_after < 0:
            raise ValueError("lost_after must be >= 0")


@dataclass
class LinkStats:
    tx_frames: int = 0
    tx_bytes: int = 0
    retransmissions: int = 0
    silent_attempts: int = 0
    #: seconds of silence waited out before those attempts were sent again
    silence_s: float = 0.0
    damaged_responses: int = 0
    naks: int = 0
    busy_answers: int = 0
    #: answers to a request already answered (a retransmission's answer from the
    #: device's cache, arriving after the first one): discarded, counted
    duplicate_answers: int = 0
    #: answers whose SEQ matches no recent request (an earlier session's, a stray)
    stale_frames: int = 0
    link_drops: int = 0
    reconnects: int = 0
    lost_on_drop_bytes: int = 0
    receiver: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _no_delay(port: Any) -> None:
    """Set TCP_NODELAY on a ``socket://`` port: a request is one small frame that the
    peer must see at once, never held back waiting for an ACK (Nagle)."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class AttemptTally:
    """How the failed attempts of one request failed, for the message that ends it."""

    silent: int = 0
    busy: int = 0
    damaged: int = 0
    naks: int = 0
    noise_bytes: int = 0  # bytes that formed no frame
    heard_frame: bool = False
    slowest_answer_s: float = 0.0

    def count(self, outcome: str) -> None:
        field_name = {"silent": "silent", "busy": "busy", "damaged": "damaged",
                      "nak": "naks"}[outcome]
        setattr(self, field_name, getattr(self, field_name) + 1)

    def describe(self) -> str:
        parts = [f"{n} {what}" for n, what in (
            (self.silent, "unanswered"), (self.busy, "answered BUSY"),
            (self.damaged, "damaged in transit"), (self.naks, "refused as damaged (BAD_FRAME)"))
            if n]
        if self.noise_bytes:
            parts.append(f"{self.noise_bytes} bytes of line noise"
                         + ("" if self.heard_frame else " and no intact frame: a wrong baud "
                            "rate or a noisy line?"))
        return ", ".join(parts) or "no answer"


@dataclass(eq=False)
class Pending:
    """One request under way: its current frame, its attempts and how they failed."""

    msg_type: int
    payload: bytes
    seq: int
    frame: bytes
    wait: float  # the request's budget: seconds the device may take to begin answering
    received_before: int = 0  # the receiver's byte count when it started
    frames_before: int = 0  # the receiver's intact frames when it started
    stray_before: int = 0  # the receiver's stray bytes when it started
    attempt: int = 0
    #: when the current attempt was sent
    sent_at: float = 0.0
    #: the shortest and longest silence waited for an attempt (for the message)
    shortest_wait: float = float("inf")
    longest_wait: float = 0.0
    #: when the budget runs out (set when the request is first awaited)
    budget_end: float | None = None
    #: silent attempts that ended within the budget: retransmissions on the link's
    #: schedule while the device may still be computing, not counted against retries
    free_attempts: int = 0
    tally: AttemptTally = field(default_factory=AttemptTally)
    # pipelining: which requests may be executed after this one, and when it was sent
    ident: int = 0
    first_tx: int = 0
    last_tx: int = 0
    exposure: set[int] = field(default_factory=set)
    #: frames and damage that arrived for it while an older request was awaited
    stash: list[Event] = field(default_factory=list)

    def renew(self, seq: int) -> None:
        """Take a new SEQ (after BUSY: the device did not act on the old one)."""
        self.seq = seq
        self.frame = encode_frame(self.msg_type, seq, self.payload)


class Window:
    """Pipelined requests in flight, oldest first (docs/protocol.md section 3.2).

    A device declaring ``pipeline=N`` keeps its last N answers. A request whose
    answer the host may still have to ask for again must never see N other requests
    executed after it, or its retransmission would be executed a second time. So
    each request counts the others that may be executed after it (its *exposure*:
    those in flight with it, and older ones sent again after it) and no request is
    admitted while one's exposure is already N-1. Beyond the oldest request, at most
    ``budget`` bytes of requests are in flight.
    """

    def __init__(self, depth: int, budget: int = PIPELINE_BYTES) -> None:
        self.depth = depth
        self.budget = budget
        self.entries: list[Pending] = []
        self._admitted = 0

    @property
    def head(self) -> Pending:
        return self.entries[0]

    def has_room(self, frame_bytes: int) -> bool:
        """Whether a request of ``frame_bytes`` may be sent now."""
        if not self.entries:
            return True
        in_flight = sum(len(p.frame) for p in self.entries[1:])
        return (len(self.entries) < self.depth and in_flight + frame_bytes <= self.budget
                and all(len(p.exposure) < self.depth - 1 for p in self.entries))

    def admit(self, pending: Pending, tx_count: int) -> None:
        """Add a request about to be sent as frame number ``tx_count + 1``."""
        self._admitted += 1
        pending.ident, pending.first_tx = self._admitted, tx_count + 1
        pending.exposure = {p.ident for p in self.entries}
        for other in self.entries:
            other.exposure.add(pending.ident)
        self.entries.append(pending)

    def retire(self) -> None:
        """The oldest request is answered: it can no longer run after one sent after
        its last transmission."""
        done = self.entries.pop(0)
        for other in self.entries:
            if done.last_tx < other.first_tx:
                other.exposure.discard(done.ident)

    def stash(self, event: Frame | Damage) -> bool:
        """Keep an event for a younger request in flight; False if it is none's."""
        seq = event.header.seq if isinstance(event, Damage) else event.seq
        for pending in self.entries[1:]:
            if pending.seq == seq:
                pending.stash.append(event)
                return True
        return False


class SerialLink:
    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.receiver = FrameReceiver(settings.max_payload)
        self.stats = LinkStats()
        self.pacer = Pacer(settings.pace_baud, settings.bits_per_byte)
        self._port: Any = None
        self._fd: int | None = None
        self._seq = 0
        self._tx_count = 0  # frames of requests sent (pipelining's clock)
        self._last_rx = time.perf_counter()
        self._backlog: list[Event] = []
        #: SEQs of the last requests answered: a later frame with one is a duplicate
        self._answered: deque[int] = deque(maxlen=64)
        self.unanswered_in_a_row = 0
        self.lost_reason: str | None = None
        #: the retransmission timeout of each request type, learned from its round trips
        self.timers: dict[int, RetransmitTimer] = {}

    # -- lifecycle -----------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        if self._port is not None:
            return
        try:
            import serial
        except ImportError as exc:
            raise LinkError(f"pyserial is not installed ({exc}); pip install pyserial") from None
        s = self.settings
        kwargs: dict[str, Any] = {"baudrate": s.baudrate, "timeout": 0}
        if "://" not in s.url:
            kwargs["exclusive"] = s.exclusive
        try:
            port = serial.serial_for_url(s.url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkOpenError(f"cannot open {s.url}: {exc}") from None
        _no_delay(port)
        try:
            fd = port.fileno()
            port.write_timeout = self._write_budget(MIN_WRITE_BUDGET_BYTES)
        except Exception:  # loop://, rfc2217:// and friends: no descriptor, no write timeout
            fd = None
            port.timeout = POLL_S
        self._port, self._fd = port, fd
        self.receiver.reset()
        self._backlog = []
        self._last_rx = time.perf_counter()

    def close(self) -> None:
        port, self._port, self._fd = self._port, None, None
        if port is not None:
            with contextlib.suppress(Exception):  # closing a dead port must not raise
                port.close()

    def __enter__(self) -> SerialLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop(self, reason: str) -> LinkDropped:
        """Close after a failure; returns the LinkError to raise."""
        self.stats.link_drops += 1
        self.stats.lost_on_drop_bytes += self.receiver.reset()
        self.close()
        return LinkDropped(f"serial link {self.settings.url} lost: {reason}")

    def reconnect(self, within: float) -> None:
        """Reopen the URL, retrying until ``within`` seconds have passed."""
        self.close()
        deadline = time.perf_counter() + within
        delay = 0.05
        while True:
            try:
                self.open()
                self.stats.reconnects += 1
                return
            except LinkError as exc:
                if time.perf_counter() + delay > deadline:
                    raise LinkError(f"could not reconnect within {within:g} s: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def timer(self, msg_type: int) -> RetransmitTimer:
        """The retransmission timer of ``msg_type`` requests (their round trips differ:
        INFER's and LOAD_END's include the device's computing)."""
        timer = self.timers.get(msg_type)
        if timer is None:
            s = self.settings
            # the link's round trip is known from other requests, this type's own
            # processing is not: twice their longest timeout (it grows if too short;
            # a copy sent early is answered, never executed twice: protocol.md 3)
            known = [t.rto() for t in self.timers.values() if t.samples]
            initial = min(2 * max(known), s.timeout) if known else s.timeout
            timer = self.timers[msg_type] = RetransmitTimer(
                initial=initial, floor=min(s.min_rto, s.timeout), ceiling=s.timeout)
        return timer

    def timer_states(self) -> dict[str, dict[str, float | int | None]]:
        """Each request type's retransmission timer, by type name."""
        return {type_name(t): timer.as_dict() for t, timer in sorted(self.timers.items())}

    # -- bytes ---------------------------------------------------------------------
    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def write_frame(self, msg_type: int, seq: int, payload: bytes = b"",
                    version: int = VERSION) -> None:
        self.write_raw(encode_frame(msg_type, seq, payload, version))
        self.stats.tx_frames += 1

    def _write_budget(self, nbytes: int) -> float:
        """Seconds one write of ``nbytes`` may take before the device counts as stalled."""
        s = self.settings
        return s.timeout + nbytes * s.bits_per_byte / s.baudrate

    def write_raw(self, data: bytes) -> None:
        """Send ``data`` (one frame) in one write call: a frame split over two writes
        leaves a TCP link as two segments, the second held for the peer's delayed ACK."""
        import serial

        if self._port is None:
            self.open()
        port = self._port
        try:
            if self._fd is not None and port.write_timeout < self._write_budget(len(data)):
                port.write_timeout = self._write_budget(len(data))
            self.pacer.write(port.write, data)
        except serial.SerialTimeoutException:
            raise DeviceTimeout(f"the device stopped taking data ({len(data)} bytes to send, "
                                f"none accepted for {port.write_timeout:.3g} s)") from None
        except (serial.SerialException, OSError) as exc:
            raise self.drop(f"write failed: {exc}") from None
        self.stats.tx_bytes += len(data)

    def _read_some(self, wait: float) -> bytes:
        import serial

        port = self._port
        if port is None:
            self.open()
            port = self._port
        if self._fd is None:
            try:
                first = port.read(1)
                return first + port.read(port.in_waiting) if first else b""
            except (serial.SerialException, OSError) as exc:
                raise self.drop(f"read failed: {exc}") from None
        # one read(2) on the descriptor: pyserial's read() loops and, when the line
        # closes right after the last bytes, raises and loses what it had read
        try:
            ready, _, _ = select.select([self._fd], [], [], max(wait, 0.0))
            if not ready:
                return b""
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self.drop(f"read failed: {exc}") from None
        if not data:
            raise self.drop("end of file: the other end closed the line")
        return data

    def events(self, wait: float) -> list[Event]:
        """Receive for up to ``wait`` seconds and return what was recognised.

        Returns as soon as at least one event is available. A partial frame that
        stays quiet for ``inter_byte_timeout`` is expired into a damage event.
        """
        if self._backlog:
            found, self._backlog = self._backlog, []
            return found
        deadline = time.perf_counter() + wait
        while True:
            now = time.perf_counter()
            slice_s = min(max(deadline - now, 0.0), POLL_S if self._fd is None else 0.05)
            if self.receiver.pending:
                slice_s = min(slice_s, max(self.settings.inter_byte_timeout
                                           - (now - self._last_rx), 0.0))
            data = self._read_some(slice_s)
            now = time.perf_counter()
            found: list[Event] = []
            if data:
                self._last_rx = now
                found = self.receiver.feed(data)
            elif self.receiver.pending and now - self._last_rx >= \
                    self.settings.inter_byte_timeout:
                found = self.receiver.expire()
            if found or now >= deadline:
                self.stats.receiver = self.receiver.counters.as_dict()
                return found

    def frame_in_progress(self) -> bool:
        return self.receiver.needed() > 0

    # -- requests ------------------------------------------------------------------
    def request(self, msg_type: int, payload: bytes = b"", *,
                first_byte_timeout: float | None = None,
                on_frame: Callable[[Frame], None] | None = None,
                on_event: Callable[[Event], None] | None = None) -> Frame:
        """Send a request and return its response frame (see :meth:`_exchange`).

        After ``lost_after`` requests in a row ended without an answer (every attempt
        silent, or the link failed) the device is *lost*: this and every later request
        raises :class:`DeviceLost` at once instead of waiting out its timeouts again.
        """
        return self._tracked(lambda: self._exchange(msg_type, payload, first_byte_timeout,
                                                    on_frame, on_event))

    def request_many(self, msg_type: int, payloads: Iterable[bytes], depth: int, *,
                     first_byte_timeout: float | None = None) -> list[Frame]:
        """Send independent requests of one type with up to ``depth`` of them in flight
        (docs/protocol.md section 3.2) and return their response frames in request order.

        Each request is retransmitted, resent after BUSY and given up exactly as by
        :meth:`request`; the first one that fails raises and ends the batch. Depth 1
        (or a single request) is :meth:`request` in a loop.
        """
        payloads = list(payloads)
        if depth <= 1 or len(payloads) <= 1:
            return [self.request(msg_type, payload, first_byte_timeout=first_byte_timeout)
                    for payload in payloads]
        return self._tracked(lambda: self._pipelined(msg_type, payloads, depth,
                                                     first_byte_timeout))

    def _tracked(self, exchange: Callable[[], T]) -> T:
        """Run ``exchange`` under the lost-device rule (``lost_after``)."""
        if self.lost_reason is not None:
            raise DeviceLost(self.lost_reason)
        try:
            result = exchange()
        except (DeviceTimeout, LinkError) as exc:
            self.unanswered_in_a_row += 1
            limit = self.settings.lost_after
            if limit and self.unanswered_in_a_row >= limit:
                self.lost_reason = (
                    f"device at {self.settings.url} lost: {self.unanswered_in_a_row} requests "
                    f"in a row went unanswered (last: {exc}); the remaining requests are not "
                    "tried")
            raise
        except TargetError:
            self.unanswered_in_a_row = 0  # it answered, if only to refuse
            raise
        self.unanswered_in_a_row = 0
        return result

    def _exchange(self, msg_type: int, payload: bytes, first_byte_timeout: float | None,
                  on_frame: Callable[[Frame], None] | None,
                  on_event: Callable[[Event], None] | None) -> Frame:
        """Send a request and return its response frame.

        Retransmits the identical frame (same sequence number) after silence, a
        damaged answer or a NAK, up to ``retries`` times. After BUSY it sends the
        request again under a *new* sequence number: BUSY means the device did not
        act, and a device that cached the BUSY answer (protocol revision 1.0 left
        that open) would otherwise answer the retransmission with BUSY forever.
        ``on_frame`` receives other frames that arrive meanwhile (stream samples);
        ``on_event`` every damage or stray event. ERROR answers raise through
        :func:`device_error`.
        """
        pending = self._start(msg_type, payload, first_byte_timeout)
        while True:
            self._transmit(pending)
            outcome = self._await(pending, on_frame, on_event)
            if isinstance(outcome, Frame):
                return outcome
            self._failed(pending, outcome)

    def _pipelined(self, msg_type: int, payloads: list[bytes], depth: int,
                   first_byte_timeout: float | None) -> list[Frame]:
        """Keep up to ``depth`` requests in flight; wait for the oldest, keeping the
        answers (and NAKs, BUSYs, damage) that arrive for the others meanwhile."""
        window = Window(depth)
        answers: list[Frame] = []
        sent = 0
        while len(answers) < len(payloads):
            while sent < len(payloads) and window.has_room(OVERHEAD + len(payloads[sent])):
                pending = self._start(msg_type, payloads[sent], first_byte_timeout)
                window.admit(pending, self._tx_count)
                self._transmit(pending)
                sent += 1
            head = window.head
            self._backlog[:0], head.stash = head.stash, []  # what came for it meanwhile
            outcome = self._await(head, None, None, stash=window.stash)
            if isinstance(outcome, Frame):
                answers.append(outcome)
                window.retire()
                continue
            self._failed(head, outcome)
            self._transmit(head)
        return answers

    def _start(self, msg_type: int, payload: bytes, first_byte_timeout: float | None
               ) -> Pending:
        seq = self.next_seq()
        counters = self.receiver.counters
        return Pending(msg_type, payload, seq, encode_frame(msg_type, seq, payload),
                       first_byte_timeout or self.settings.timeout,
                       received_before=counters.received_bytes,
                       frames_before=counters.frames, stray_before=counters.stray_bytes)

    def _transmit(self, pending: Pending) -> None:
        """Send the request's current frame (a retransmission after the first)."""
        if pending.attempt:
            self.stats.retransmissions += 1
        self.write_raw(pending.frame)
        pending.sent_at = time.perf_counter()
        self.stats.tx_frames += 1
        pending.attempt += 1
        self._tx_count += 1
        pending.last_tx = self._tx_count

    def _failed(self, pending: Pending, outcome: str) -> None:
        """Count a failed attempt; after BUSY take a new SEQ; raise when none is left.

        A silent attempt that ended while the request's budget (``infer_timeout``,
        ``load_timeout``) still runs is free: the device may still be computing, or its
        answer was lost, so the request is sent again on the link's schedule
        (``timeout``) without using up a retry (docs/protocol.md section 7)."""
        s = self.settings
        pending.tally.count(outcome)
        if outcome == "silent":
            self.stats.silent_attempts += 1
            self.timer(pending.msg_type).expired()
            if pending.budget_end is not None and time.perf_counter() < pending.budget_end:
                pending.free_attempts += 1
        elif outcome == "busy":
            self.stats.busy_answers += 1
            time.sleep(min(s.timeout, 0.1 * pending.attempt))
            pending.renew(self.next_seq())
        if pending.attempt - pending.free_attempts >= 1 + s.retries:
            raise self._given_up(pending)

    def _given_up(self, pending: Pending) -> TargetError | LinkError:
        """The exception that ends a request whose every attempt failed."""
        s = self.settings
        tally = pending.tally
        attempts = pending.attempt
        counters = self.receiver.counters
        # an intact frame for another request (an earlier one of a pipelined batch)
        # proves the line carries frames: not noise, not a wrong baud rate
        tally.heard_frame = tally.heard_frame or counters.frames > pending.frames_before
        if not tally.heard_frame:  # every byte that came was noise (strays not yet reported)
            tally.noise_bytes = counters.received_bytes - pending.received_before
        else:
            tally.noise_bytes = counters.stray_bytes - pending.stray_before
        what = f"{type_name(pending.msg_type)} (last seq {pending.seq})"
        if tally.busy == attempts:
            return DeviceBusy(f"device answered BUSY to {what} on all {attempts} attempts "
                              f"(each answer within {tally.slowest_answer_s * 1e3:.0f} ms)")
        if tally.damaged or (tally.noise_bytes and not tally.heard_frame):
            return LinkError(
                f"serial link {s.url} too unreliable: no usable answer to {what} in "
                f"{attempts} attempts ({tally.describe()})")
        shortest, longest = pending.shortest_wait, pending.longest_wait
        every = f"one every {longest:.3g} s" if longest - shortest < 1e-3 else \
            f"each sent again after {shortest:.3g} to {longest:.3g} s"
        return DeviceTimeout(f"device did not answer {what} within {pending.wait:g} s, "
                             f"{attempts} attempts, {every} of silence ({tally.describe()})")

    def _transfer_s(self, nbytes: int) -> float:
        """Seconds ``nbytes`` take on the line at the nominal baud rate."""
        s = self.settings
        return nbytes * s.bits_per_byte / s.baudrate

    def _attempt_wait(self, pending: Pending) -> float:
        """Seconds of silence after which an attempt is sent again: the request
        type's retransmission timeout (plus its frame's time on the line), at most the
        link's ``timeout`` and the request's budget."""
        rto = self.timer(pending.msg_type).rto() + self._transfer_s(len(pending.frame))
        return min(rto, self.settings.timeout, pending.wait)

    def _round_trip(self, pending: Pending, pipelined: bool) -> None:
        """An answer to ``pending`` arrived: a round trip for its timer, when it is
        unambiguous (the first transmission's, not a pipelined request's, whose wait
        began behind others: Karn's rule)."""
        if pending.attempt == 1 and not pipelined:
            rtt = time.perf_counter() - pending.sent_at - self._transfer_s(len(pending.frame))
            self.timer(pending.msg_type).sample(rtt)

    def _await(self, pending: Pending, on_frame: Callable[[Frame], None] | None,
               on_event: Callable[[Event], None] | None,
               stash: Callable[[Frame | Damage], bool] | None = None) -> Frame | str:
        """One attempt: the response frame, or why the attempt failed.

        Only frames count as an answer arriving: bytes that form no intact header
        (line noise, a wrong baud rate) never extend the wait, so an attempt ends
        ``first_byte_timeout`` after the request unless a frame is on its way, and
        then ``timeout`` after its last byte. A frame or damage for another SEQ goes
        to ``stash`` (pipelined requests still in flight); what it refuses is stale.
        """
        s = self.settings
        seq, tally = pending.seq, pending.tally
        first_byte_timeout = self._attempt_wait(pending)
        pending.shortest_wait = min(pending.shortest_wait, first_byte_timeout)
        pending.longest_wait = max(pending.longest_wait, first_byte_timeout)
        name = type_name(pending.msg_type)
        expected = response_type(pending.msg_type)
        sent = time.perf_counter()
        if pending.budget_end is None:  # the budget runs from the first wait for it
            pending.budget_end = sent + pending.wait
        progress = sent  # the last time a frame (or part of one) arrived
        cap = sent + first_byte_timeout + 4 * s.timeout
        stray_at: float | None = None
        while True:
            now = time.perf_counter()
            heard = progress > sent
            if not self.frame_in_progress():
                if now - progress >= (s.timeout if heard else first_byte_timeout):
                    self.stats.silence_s += now - progress
                    return "silent"
                # stray bytes (a response whose header was hit) and nothing intact
                # after them: the response was damaged in transit
                if stray_at is not None and now - max(self._last_rx, stray_at) >= \
                        2 * s.inter_byte_timeout:
                    self.stats.damaged_responses += 1
                    return "damaged"
            if now >= cap and not self.frame_in_progress():
                self.stats.silence_s += now - progress
                return "silent"
            # wake when the attempt's silence is up, not a poll interval later
            silence_left = progress + (s.timeout if heard else first_byte_timeout) - now
            batch = self.events(min(0.25, max(silence_left, 0.001)))
            if self.frame_in_progress():
                progress = self._last_rx
            while batch:
                event = batch.pop(0)
                self._backlog[:0] = batch  # what follows the outcome stays for later
                batch = []
                if isinstance(event, Stray):
                    tally.noise_bytes += event.nbytes
                    if on_event is not None:
                        on_event(event)
                    stray_at = time.perf_counter()
                    continue
                progress = time.perf_counter()
                tally.heard_frame = True
                if isinstance(event, Damage):
                    if on_event is not None:
                        on_event(event)
                    if event.header.type == MsgType.SAMPLE and on_frame is not None:
                        continue  # a damaged stream sample, not our response
                    if event.header.seq != seq and stash is not None and stash(event):
                        continue
                    self.stats.damaged_responses += 1
                    return "damaged"
                stray_at = None
                if event.version != VERSION:
                    raise DeviceProtocolError(
                        f"device answered with protocol version {event.version}, "
                        f"this host speaks {VERSION}")
                if event.type == MsgType.SAMPLE and on_frame is not None:
                    on_frame(event)
                    continue
                if event.seq != seq:
                    if stash is None or not stash(event):
                        self._unexpected(event)
                    continue
                if event.type == MsgType.ERROR:
                    code, text = self._decode(decode_error, event)
                    if code == ErrorCode.BAD_FRAME:
                        self.stats.naks += 1
                        return "nak"
                    if code == ErrorCode.BUSY:
                        tally.slowest_answer_s = max(tally.slowest_answer_s,
                                                     time.perf_counter() - sent)
                        return "busy"
                    self._answered.append(seq)
                    self._round_trip(pending, stash is not None)
                    raise device_error(code, text, name)
                if event.type != expected:
                    raise DeviceProtocolError(
                        f"device answered {name} (seq {seq}) with {event.type_name}, "
                        f"expected {type_name(expected)}")
                self._answered.append(seq)
                self._round_trip(pending, stash is not None)
                return event

    def _unexpected(self, frame: Frame) -> None:
        """Count a frame that answers no request awaited: a duplicate answer to one
        already answered, or a stale one."""
        if frame.seq in self._answered:
            self.stats.duplicate_answers += 1
        else:
            self.stats.stale_frames += 1

    @staticmethod
    def _decode(decoder: Callable[[bytes], Any], frame: Frame) -> Any:
        try:
            return decoder(frame.payload)
        except ProtocolError as exc:
            raise DeviceProtocolError(f"malformed {frame.type_name} payload: {exc}") from None


def frame_size(payload_bytes: int) -> int:
    return OVERHEAD + payload_bytes
