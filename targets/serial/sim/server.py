"""What every simulator shares: serving one peer at a time, receiving requests,
answering retransmissions from a cache of the last ``pipeline`` answers, sending
through the fault plan."""

from __future__ import annotations

import contextlib
import signal
import struct
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from targets.serial.protocol import (
    ABSOLUTE_MAX_PAYLOAD,
    MAX_PING,
    VERSION,
    ErrorCode,
    Frame,
    Identity,
    MsgType,
    ProtocolError,
    crc32,
    encode_error,
    encode_frame,
)
from targets.serial.receiver import Damage, Event, FrameReceiver
from targets.serial.sim.endpoint import Endpoint, PeerGone
from targets.serial.sim.faults import FaultPlan, summary

INTER_BYTE_TIMEOUT = 0.2
REQUEST_TYPES = {int(t) for t in MsgType if t < 0x80}


@dataclass
class Reply:
    type: int
    payload: bytes


def error_reply(code: int, text: str) -> list[Reply]:
    return [Reply(MsgType.ERROR, encode_error(code, text))]


def pong(frame: Frame) -> list[Reply]:
    """PONG with the PING payload; a payload over MAX_PING bytes is TOO_LARGE."""
    if len(frame.payload) > MAX_PING:
        return error_reply(ErrorCode.TOO_LARGE, f"PING of {len(frame.payload)} bytes; at "
                                                f"most {MAX_PING}")
    return [Reply(MsgType.PONG, frame.payload)]


def _busy(replies: list[Reply]) -> bool:
    """Whether the answer is ERROR BUSY: the request was not executed."""
    return (len(replies) == 1 and replies[0].type == MsgType.ERROR
            and replies[0].payload[:2] == struct.pack("<H", ErrorCode.BUSY))


class Stop(Exception):
    """Leave the serving loop (a signal, the configured duration, exit_after)."""


class Simulator:
    """A device on an endpoint. Subclasses answer requests in :meth:`answer`."""

    device_name = "device"

    def __init__(self, endpoint: Endpoint, faults: FaultPlan, *, down_s: float = 0.3,
                 stall_s: float = 1.0, duration: float | None = None,
                 exit_after: int | None = None, mute_after: int | None = None,
                 quiet: bool = False, max_payload: int = ABSOLUTE_MAX_PAYLOAD,
                 pipeline: int = 1) -> None:
        self.endpoint = endpoint
        self.faults = faults
        self.down_s = down_s
        self.stall_s = stall_s
        self.deadline = time.monotonic() + duration if duration else None
        self.exit_after = exit_after
        self.mute_after = mute_after
        self.quiet = quiet
        self.receiver = FrameReceiver(max_payload)
        self.frames_sent = 0
        self.requests_answered = 0
        self.connections = 0
        #: requests it accepts in flight; it keeps as many answers for retransmissions
        self.pipeline = max(1, pipeline)
        self._answers: OrderedDict[tuple[int, int, int], list[Reply]] = OrderedDict()
        #: the most requests seen at once: one being answered and those received after it
        self.max_in_flight = 0
        self._inbox: deque[Event] = deque()
        self._last_rx = time.monotonic()
        self._stopping = False

    @property
    def _last_request(self) -> tuple[int, int, int] | None:
        """The (SEQ, TYPE, CRC) of the last request executed and cached, if any."""
        return next(reversed(self._answers), None)

    # -- to be provided ------------------------------------------------------------
    def identity(self) -> Identity:
        raise NotImplementedError

    def answer(self, frame: Frame) -> list[Reply]:
        raise NotImplementedError

    def on_connect(self) -> None:  # noqa: B027 - optional hook
        pass

    def on_disconnect(self) -> None:  # noqa: B027 - optional hook
        pass

    def wake_in(self) -> float:
        """Seconds until the device has something to do unasked (stream samples)."""
        return 0.1

    def tick(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- serving -------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"shipei sim {self.device_name}: {message}", file=sys.stderr, flush=True)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def _check_stop(self) -> None:
        if self._stopping:
            raise Stop("signal")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Stop("duration reached")

    def serve(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        try:
            while True:
                self._check_stop()
                if not self.endpoint.wait_peer(0.1):
                    continue
                self.connections += 1
                self.receiver.reset()
                self.on_connect()
                try:
                    self._session()
                except PeerGone as exc:
                    self.log(f"peer gone ({exc})")
                finally:
                    self.on_disconnect()
        except Stop as exc:
            self.log(f"stopping: {exc}")
        finally:
            self.endpoint.close()
            self.faults.close()
            self.log(f"injected: {summary(self.faults.counts)}")

    def _session(self) -> None:
        self._last_rx = time.monotonic()
        self._inbox.clear()
        while True:
            self._check_stop()
            self._receive(min(max(self.wake_in(), 0.0), 0.1))
            while self._inbox:  # in arrival order, one at a time
                event = self._inbox.popleft()
                if isinstance(event, Frame):
                    self._on_frame(event)
                elif isinstance(event, Damage):
                    self._on_damage(event)
            self.tick()

    def _receive(self, wait: float) -> None:
        """Queue what arrives within ``wait`` seconds; expire a partial frame gone quiet."""
        data = self.endpoint.read(wait)
        now = time.monotonic()
        if data:
            self._last_rx = now
            self._inbox.extend(self.receiver.feed(data))
        elif self.receiver.pending and now - self._last_rx >= INTER_BYTE_TIMEOUT:
            self._inbox.extend(self.receiver.expire())

    def _note_in_flight(self) -> None:
        """Before answering: count the requests that arrived after the one being
        answered (sent by a host that did not wait for its answer)."""
        with contextlib.suppress(PeerGone):  # the next read reports it
            self._receive(0.0)
        ahead = sum(isinstance(e, Frame | Damage) for e in self._inbox)
        ahead += 1 if self.receiver.pending else 0
        self.max_in_flight = max(self.max_in_flight, 1 + ahead)

    def on_session_start(self) -> None:  # noqa: B027 - optional hook
        """IDENTIFY began a new host session (docs/protocol.md section 3.1)."""

    def _on_frame(self, frame: Frame) -> None:
        if self.mute_after is not None and self.requests_answered >= self.mute_after:
            return  # a hung device: the link stays up, nothing answers
        replies = self._replies(frame)
        self._note_in_flight()
        self.requests_answered += 1
        for reply in replies:
            self.send(reply.type, frame.seq, reply.payload)
        if self.exit_after is not None and self.requests_answered >= self.exit_after:
            self.log(f"exit_after={self.exit_after}: vanishing")
            time.sleep(0.3)  # let the last answer reach the host: a pty hangup discards it
            self.endpoint.close()
            raise Stop("exit_after reached")

    def _replies(self, frame: Frame) -> list[Reply]:
        """The answer to one intact request, from the cache of the last ``pipeline``
        answers for a retransmission. Answers that carry no result (BUSY, VERSION) are
        never cached, and IDENTIFY always runs and starts a new session with an empty
        cache."""
        if frame.version != VERSION:
            return [Reply(MsgType.ERROR, encode_error(
                ErrorCode.VERSION, f"protocol version {frame.version} not supported; "
                                   f"this device speaks {VERSION}"))]
        key = (frame.seq, frame.type, crc32(frame.payload))
        if frame.type == MsgType.IDENTIFY:
            self._answers.clear()
            self.on_session_start()
        elif key in self._answers:
            return self._answers[key]  # a retransmission: answer again, do not redo
        if self.faults.hits("busy", self.requests_answered):
            self.faults.record("busy", index=self.requests_answered, seq=frame.seq,
                               type=int(frame.type))
            return [Reply(MsgType.ERROR, encode_error(ErrorCode.BUSY, "busy; try again"))]
        try:
            replies = self.answer(frame)
        except ProtocolError as exc:
            replies = [Reply(MsgType.ERROR, encode_error(ErrorCode.BAD_PAYLOAD, str(exc)))]
        if frame.type != MsgType.IDENTIFY and not _busy(replies):
            self._remember(key, replies)
        return replies

    def _remember(self, key: tuple[int, int, int], replies: list[Reply]) -> None:
        self._answers[key] = replies
        while len(self._answers) > self.pipeline:
            self._answers.popitem(last=False)

    def _on_damage(self, damage: Damage) -> None:
        """A request whose header held but whose body did not: BAD_FRAME (retransmit),
        or TOO_LARGE when it declared more than this device accepts. Neither is
        cached: the request was never received."""
        if damage.header.type not in REQUEST_TYPES:
            return
        if damage.kind == "oversize":
            reply = encode_error(ErrorCode.TOO_LARGE, f"payload of {damage.header.length} "
                                 f"bytes exceeds max_payload {self.receiver.max_payload}")
        else:
            reply = encode_error(ErrorCode.BAD_FRAME, "frame check failed; retransmit")
        self.send(MsgType.ERROR, damage.header.seq, reply)

    def send(self, msg_type: int, seq: int, payload: bytes) -> None:
        """Encode one frame and send it through the byte-level faults."""
        index = self.frames_sent
        self.frames_sent += 1
        detail = {"seq": seq, "type": int(msg_type)}
        if self.faults.hits("disconnect", index):
            self.faults.record("disconnect", index=index, **detail)
            self.log(f"fault: disconnect for {self.down_s:g} s")
            self.endpoint.drop(self.down_s)
            raise PeerGone("injected disconnect")
        if self.faults.hits("stall", index):
            self.faults.record("stall", index=index, seconds=self.stall_s, **detail)
            time.sleep(self.stall_s)
        data = self.faults.damage(encode_frame(msg_type, seq, payload), index, **detail)
        if data is not None:
            self.endpoint.write(data)
