"""The host end of a serial link, on pyserial.

:class:`SerialLink` opens any URL ``serial.serial_for_url`` accepts (a device
path, ``socket://``, ``rfc2217://``, ``loop://``), sends frames and receives
them through a :class:`~targets.serial.receiver.FrameReceiver`. Every wait has a
deadline. :meth:`SerialLink.request` retransmits a request (same sequence
number) a bounded number of times when its response is lost or damaged.

Who is to blame, in the harness's terms:

- :class:`LinkError` (a :class:`harness.worker.InfraError`, recorded as
  ``infra_error``): the port cannot be opened, the link dropped (EOF, I/O
  error), or every attempt of a request was damaged in transit. The cable, the
  adapter or the bench failed, not the device under test.
- :class:`DeviceTimeout` (a :class:`~harness.target.TargetError`, ``error``):
  the link is up but the device stayed silent through every attempt.
- :class:`DeviceError`: the device answered ERROR; :class:`DeviceProtocolError`:
  it answered something the protocol does not allow.
"""

from __future__ import annotations

import contextlib
import os
import select
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
WRITE_CHUNK = 4096


class LinkError(InfraError):
    """The serial link failed: infrastructure, not the device under test."""


class DeviceTimeout(TargetError):
    """The device did not answer a request within its timeout, on every attempt."""


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

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("a serial link needs a url")
        for name in ("timeout", "inter_byte_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")


@dataclass
class LinkStats:
    tx_frames: int = 0
    tx_bytes: int = 0
    retransmissions: int = 0
    silent_attempts: int = 0
    damaged_responses: int = 0
    naks: int = 0
    stale_frames: int = 0
    link_drops: int = 0
    reconnects: int = 0
    lost_on_drop_bytes: int = 0
    receiver: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            raise LinkError(f"cannot open {s.url}: {exc}") from None
        try:
            fd = port.fileno()
            # per write() call; writes go out in WRITE_CHUNK pieces
            port.write_timeout = s.timeout + WRITE_CHUNK * s.bits_per_byte / s.baudrate
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

    def drop(self, reason: str) -> LinkError:
        """Close after a failure; returns the LinkError to raise."""
        self.stats.link_drops += 1
        self.stats.lost_on_drop_bytes += self.receiver.reset()
        self.close()
        return LinkError(f"serial link {self.settings.url} lost: {reason}")

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

    def write_raw(self, data: bytes) -> None:
        import serial

        if self._port is None:
            self.open()
        port = self._port
        try:
            for start in range(0, len(data), WRITE_CHUNK):
                self.pacer.write(port.write, data[start:start + WRITE_CHUNK])
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
        """Send a request and return its response frame.

        Retransmits (same sequence number) after silence, a damaged frame or a
        NAK, up to ``retries`` times. ``on_frame`` receives other frames that
        arrive meanwhile (stream samples); ``on_event`` every damage or stray
        event. ERROR answers raise through :func:`device_error`.
        """
        s = self.settings
        expected = response_type(msg_type)
        name = type_name(msg_type)
        seq = self.next_seq()
        frame_bytes = encode_frame(msg_type, seq, payload)
        attempts = 1 + s.retries
        damaged = silent = 0
        for attempt in range(attempts):
            if attempt:
                self.stats.retransmissions += 1
            self.write_raw(frame_bytes)
            self.stats.tx_frames += 1
            outcome = self._await(seq, expected, name, first_byte_timeout or s.timeout,
                                  on_frame, on_event)
            if isinstance(outcome, Frame):
                return outcome
            if outcome == "silent":
                silent += 1
                self.stats.silent_attempts += 1
            elif outcome == "busy":
                time.sleep(min(s.timeout, 0.1 * (attempt + 1)))
            else:
                damaged += 1
        if damaged:
            raise LinkError(
                f"serial link {s.url} too unreliable: {name} (seq {seq}) failed {attempts} "
                f"attempts ({damaged} damaged in transit, {silent} unanswered)")
        raise DeviceTimeout(f"device did not answer {name} (seq {seq}) within "
                            f"{first_byte_timeout or s.timeout:g} s, {attempts} attempts")

    def _await(self, seq: int, expected: int, name: str, first_byte_timeout: float,
               on_frame: Callable[[Frame], None] | None,
               on_event: Callable[[Event], None] | None) -> Frame | str:
        """One attempt: the response frame, or why the attempt failed."""
        s = self.settings
        sent = time.perf_counter()
        cap = sent + first_byte_timeout + 4 * s.timeout
        stray_at: float | None = None
        while True:
            now = time.perf_counter()
            heard = self._last_rx > sent
            quiet_for = now - max(self._last_rx, sent)
            if not self.receiver.pending:
                if quiet_for >= (s.timeout if heard else first_byte_timeout):
                    return "silent"
                # stray bytes (line noise, or a response whose header was hit) and
                # nothing intact after them: the response was damaged in transit
                if stray_at is not None and now - max(self._last_rx, stray_at) >= \
                        2 * s.inter_byte_timeout:
                    self.stats.damaged_responses += 1
                    return "damaged"
            if now >= cap and not self.frame_in_progress():
                return "silent"
            batch = self.events(0.25)
            while batch:
                event = batch.pop(0)
                self._backlog[:0] = batch  # what follows the outcome stays for later
                batch = []
                if isinstance(event, (Damage, Stray)):
                    if on_event is not None:
                        on_event(event)
                    if isinstance(event, Damage):
                        if event.header.type == MsgType.SAMPLE and on_frame is not None:
                            continue  # a damaged stream sample, not our response
                        self.stats.damaged_responses += 1
                        return "damaged"
                    stray_at = time.perf_counter()
                    continue
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
