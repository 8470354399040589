"""What every simulator shares: serving one peer at a time, receiving requests,
answering retransmissions from a cache, sending through the fault plan."""

from __future__ import annotations

import signal
import struct
import sys
import time
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
from targets.serial.receiver import Damage, FrameReceiver
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
                 quiet: bool = False, max_payload: int = ABSOLUTE_MAX_PAYLOAD) -> None:
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
        self._last_request: tuple[int, int, int] | None = None
        self._last_replies: list[Reply] = []
        self._stopping = False

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
        last_rx = time.monotonic()
        while True:
            self._check_stop()
            data = self.endpoint.read(min(max(self.wake_in(), 0.0), 0.1))
            now = time.monotonic()
            events = []
            if data:
                last_rx = now
                events = self.receiver.feed(data)
            elif self.receiver.pending and now - last_rx >= INTER_BYTE_TIMEOUT:
                events = self.receiver.expire()
            for event in events:
                if isinstance(event, Frame):
                    self._on_frame(event)
                elif isinstance(event, Damage):
                    self._on_damage(event)
            self.tick()

    def on_session_start(self) -> None:  # noqa: B027 - optional hook
        """IDENTIFY began a new host session (docs/protocol.md section 3.1)."""

    def _on_frame(self, frame: Frame) -> None:
        if self.mute_after is not None and self.requests_answered >= self.mute_after:
            return  # a hung device: the link stays up, nothing answers
        replies = self._replies(frame)
        self.requests_answered += 1
        for reply in replies:
            self.send(reply.type, frame.seq, reply.payload)
        if self.exit_after is not None and self.requests_answered >= self.exit_after:
            self.log(f"exit_after={self.exit_after}: vanishing")
            time.sleep(0.3)  # let the last answer reach the host: a pty hangup discards it
            self.endpoint.close()
            raise Stop("exit_after reached")

    def _replies(self, frame: Frame) -> list[Reply]:
        """The answer to one intact request, from the last-answer cache for a
        retransmission. Answers that carry no result (BUSY, VERSION) are never
        cached, and IDENTIFY always runs and starts a new session with an empty cache."""
        if frame.version != VERSION:
            return [Reply(MsgType.ERROR, encode_error(
                ErrorCode.VERSION, f"protocol version {frame.version} not supported; "
                                   f"this device speaks {VERSION}"))]
        key = (frame.seq, frame.type, crc32(frame.payload))
        if frame.type == MsgType.IDENTIFY:
            self._last_request, self._last_replies = None, []
            self.on_session_start()
        elif key == self._last_request:
            return self._last_replies  # a retransmission: answer again, do not redo
        if self.faults.hits("busy", self.requests_answered):
            self.faults.record("busy", index=self.requests_answered, seq=frame.seq,
                               type=int(frame.type))
            return [Reply(MsgType.ERROR, encode_error(ErrorCode.BUSY, "busy; try again"))]
        try:
            replies = self.answer(frame)
        except ProtocolError as exc:
            replies = [Reply(MsgType.ERROR, encode_error(ErrorCode.BAD_PAYLOAD, str(exc)))]
        if frame.type != MsgType.IDENTIFY and not _busy(replies):
            self._last_request, self._last_replies = key, replies
        return replies

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
