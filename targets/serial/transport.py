"""The host end of a serial link, on pyserial.

:class:`SerialLink` opens any URL ``serial.serial_for_url`` accepts (a device
path, ``socket://``, ``rfc2217://``, ``loop://``), sends frames and receives
them through a :class:`~targets.serial.receiver.FrameReceiver`. Every wait has a
deadline. :meth:`SerialLink.request` retransmits a request (same sequence
number) a bounded number of times when its response is lost or damaged, and
sends it again under a new sequence number after BUSY (docs/protocol.md
section 3).

Who is to blame, in the harness's terms:

- :class:`LinkError` (a :class:`harness.worker.InfraError`, recorded as
  ``infra_error``): the port cannot be opened, the link dropped (EOF, I/O
  error), or every attempt of a request was damaged in transit. The cable, the
  adapter or the bench failed, not the device under test.
- :class:`DeviceTimeout` (a :class:`~harness.target.TargetError`, ``error``):
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.target import InfraError, InputMismatchError, TargetError, UnsupportedModelError
from targets.serial.pacing import Pacer
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

POLL_S = 0.02
#: the write timeout covers at least a frame this large (grown for larger frames)
MIN_WRITE_BUDGET_BYTES = 4096 + 64


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
    timeout: float = 2.0  # seconds of silence before an attempt counts as lost
    inter_byte_timeout: float = 0.2  # a partial frame quiet this long is discarded
    retries: int = 3  # retransmissions after the first attempt
    pace_baud: float = 0.0  # hold host writes to this line rate (0: as fast as possible)
    bits_per_byte: float = 10.0
    exclusive: bool = True  # lock a device path against a second opener
    max_payload: int = ABSOLUTE_MAX_PAYLOAD
    #: consecutive requests without an answer (timeouts, link failures) after which
    #: the device counts as lost and further requests fail at once (0: never)
    lost_after: int = 3

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("a serial link needs a url")
        for name in ("timeout", "inter_byte_timeout"):
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
    damaged_responses: int = 0
    naks: int = 0
    busy_answers: int = 0
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


class SerialLink:
    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.receiver = FrameReceiver(settings.max_payload)
        self.stats = LinkStats()
        self.pacer = Pacer(settings.pace_baud, settings.bits_per_byte)
        self._port: Any = None
        self._fd: int | None = None
        self._seq = 0
        self._last_rx = time.perf_counter()
        self._backlog: list[Event] = []
        self.unanswered_in_a_row = 0
        self.lost_reason: str | None = None

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
        if self.lost_reason is not None:
            raise DeviceLost(self.lost_reason)
        try:
            frame = self._exchange(msg_type, payload, first_byte_timeout, on_frame, on_event)
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
        return frame

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
        s = self.settings
        expected = response_type(msg_type)
        name = type_name(msg_type)
        wait = first_byte_timeout or s.timeout
        seq = self.next_seq()
        frame_bytes = encode_frame(msg_type, seq, payload)
        attempts = 1 + s.retries
        tally = AttemptTally()
        received_before = self.receiver.counters.received_bytes
        for attempt in range(attempts):
            if attempt:
                self.stats.retransmissions += 1
            self.write_raw(frame_bytes)
            self.stats.tx_frames += 1
            outcome = self._await(seq, expected, name, wait, on_frame, on_event, tally)
            if isinstance(outcome, Frame):
                return outcome
            tally.count(outcome)
            if outcome == "silent":
                self.stats.silent_attempts += 1
            elif outcome == "busy":
                self.stats.busy_answers += 1
                time.sleep(min(s.timeout, 0.1 * (attempt + 1)))
                seq = self.next_seq()
                frame_bytes = encode_frame(msg_type, seq, payload)
        if not tally.heard_frame:  # every byte that came was noise (strays not yet reported)
            tally.noise_bytes = self.receiver.counters.received_bytes - received_before
        what = f"{name} (last seq {seq})"
        if tally.busy == attempts:
            raise DeviceBusy(f"device answered BUSY to {what} on all {attempts} attempts "
                             f"(each answer within {tally.slowest_answer_s * 1e3:.0f} ms)")
        if tally.damaged or (tally.noise_bytes and not tally.heard_frame):
            raise LinkError(
                f"serial link {s.url} too unreliable: no usable answer to {what} in "
                f"{attempts} attempts ({tally.describe()})")
        raise DeviceTimeout(f"device did not answer {what} within {wait:g} s, "
                            f"{attempts} attempts ({tally.describe()})")

    def _await(self, seq: int, expected: int, name: str, first_byte_timeout: float,
               on_frame: Callable[[Frame], None] | None,
               on_event: Callable[[Event], None] | None,
               tally: AttemptTally) -> Frame | str:
        """One attempt: the response frame, or why the attempt failed.

        Only frames count as an answer arriving: bytes that form no intact header
        (line noise, a wrong baud rate) never extend the wait, so an attempt ends
        ``first_byte_timeout`` after the request unless a frame is on its way, and
        then ``timeout`` after its last byte.
        """
        s = self.settings
        sent = time.perf_counter()
        progress = sent  # the last time a frame (or part of one) arrived
        cap = sent + first_byte_timeout + 4 * s.timeout
        stray_at: float | None = None
        while True:
            now = time.perf_counter()
            heard = progress > sent
            if not self.frame_in_progress():
                if now - progress >= (s.timeout if heard else first_byte_timeout):
                    return "silent"
                # stray bytes (a response whose header was hit) and nothing intact
                # after them: the response was damaged in transit
                if stray_at is not None and now - max(self._last_rx, stray_at) >= \
                        2 * s.inter_byte_timeout:
                    self.stats.damaged_responses += 1
                    return "damaged"
            if now >= cap and not self.frame_in_progress():
                return "silent"
            batch = self.events(0.25)
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
                    self.stats.stale_frames += 1
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
                    raise device_error(code, text, name)
                if event.type != expected:
                    raise DeviceProtocolError(
                        f"device answered {name} (seq {seq}) with {event.type_name}, "
                        f"expected {type_name(expected)}")
                return event

    @staticmethod
    def _decode(decoder: Callable[[bytes], Any], frame: Frame) -> Any:
        try:
            return decoder(frame.payload)
        except ProtocolError as exc:
            raise DeviceProtocolError(f"malformed {frame.type_name} payload: {exc}") from None


def frame_size(payload_bytes: int) -> int:
    return OVERHEAD + payload_bytes
