"""Devices for the serial tests, on real sockets: a simulator in a thread, and
scripted peers that break the protocol in one chosen way.

The host side under test is the real one (pyserial's ``socket://`` handler);
only the device is ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from targets.serial.protocol import (
    HEADER_SIZE,
    Frame,
    Identity,
    MsgType,
    encode_error,
    encode_frame,
    parse_header,
)
from targets.serial.receiver import FrameReceiver
from targets.serial.sim.endpoint import PeerGone, TcpEndpoint
from targets.serial.sim.faults import FaultPlan
from targets.serial.sim.server import Simulator, Stop


def _no_sigpipe() -> None:
    """Writes to a peer that left raise BrokenPipeError, as Python sets up by default
    (a command line run in-process earlier may have restored SIGPIPE's default)."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


class ThreadedSim:
    """A simulator object serving a TCP endpoint from a thread (no signals, no
    subprocess), so a test can subclass it to misbehave in one way."""

    def __init__(self, factory: Callable[..., Simulator], *, faults: FaultPlan | None = None,
                 endpoint: TcpEndpoint | None = None, **options: object) -> None:
        _no_sigpipe()
        self.endpoint = endpoint or TcpEndpoint(0)
        self.sim = factory(self.endpoint, faults or FaultPlan(), quiet=True, **options)
        self.url = self.endpoint.url
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sim = self.sim
        with contextlib.suppress(Stop):
            while not sim._stopping:
                if not self.endpoint.wait_peer(0.05):
                    continue
                sim.connections += 1
                sim.receiver.reset()
                with contextlib.suppress(PeerGone):
                    sim._session()

    def close(self) -> None:
        self.sim.request_stop()
        self._thread.join(5)
        self.endpoint.close()

    def __enter__(self) -> ThreadedSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DamagingEndpoint(TcpEndpoint):
    """A TCP endpoint that corrupts the frame check (last byte) of chosen incoming
    frames of one type, as line noise would: the device sees an intact header and a
    CRC that fails, so it answers BAD_FRAME. ``ordinals`` count the frames of
    ``msg_type`` received, retransmissions included, from 0."""

    def __init__(self, msg_type: int, ordinals: set[int]) -> None:
        super().__init__(0)
        self.msg_type = msg_type
        self.ordinals = set(ordinals)
        self.damaged = 0
        self._stream = bytearray()
        self._next = 0  # where the next frame's header starts in the stream
        self._seen = 0
        self._flip: set[int] = set()

    def read(self, timeout: float) -> bytes:
        data = bytearray(super().read(timeout))
        start = len(self._stream)
        self._stream += data
        self._find_frames()
        for at in [a for a in self._flip if start <= a < len(self._stream)]:
            data[at - start] ^= 0xFF
            self._flip.discard(at)
            self.damaged += 1
        return bytes(data)

    def _find_frames(self) -> None:
        while len(self._stream) >= self._next + HEADER_SIZE:
            header = parse_header(self._stream[self._next:self._next + HEADER_SIZE])
            assert header is not None, "the host sent a frame the relay cannot follow"
            if header.type == self.msg_type:
                if self._seen in self.ordinals:
                    self._flip.add(self._next + header.total - 1)
                self._seen += 1
            self._next += header.total


Handler = Callable[[Frame, "ScriptedPeer"], bytes | None]


class ScriptedPeer:
    """A TCP listener whose answer to each intact frame is ``handler(frame, peer)``
    (bytes to send, or None for silence). ``frames`` holds every frame received,
    by connection number; ``on_connect(conn)`` may stream on its own."""

    def __init__(self, handler: Handler,
                 on_connect: Callable[[socket.socket, ScriptedPeer], None] | None = None
                 ) -> None:
        _no_sigpipe()
        self.handler = handler
        self.on_connect = on_connect
        self.frames: list[list[Frame]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.close_now = False
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.frames.append([])
            with conn:
                if self.on_connect is not None:
                    self.on_connect(conn, self)
                    continue
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        receiver = FrameReceiver()
        conn.settimeout(0.05)
        self.close_now = False
        while not self._stop and not self.close_now:
            try:
                data = conn.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for event in receiver.feed(data):
                if isinstance(event, Frame):
                    self.frames[-1].append(event)
                    answer = self.handler(event, self)
                    if answer and not self.close_now:
                        conn.sendall(answer)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()

    def __enter__(self) -> ScriptedPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BOARD = Identity(1, "Tests", "peer-1", "1.0", "P-1", {"max_chunk": "4096"})


def identity_or(answer: Callable[[Frame, ScriptedPeer], bytes | None]) -> Handler:
    """A handler that answers IDENTIFY as a board and everything else with ``answer``."""
    def handle(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.IDENTIFY:
            return encode_frame(MsgType.IDENTITY, frame.seq, BOARD.encode())
        return answer(frame, peer)
    return handle


def error_frame(frame: Frame, code: int, text: str) -> bytes:
    return encode_frame(MsgType.ERROR, frame.seq, encode_error(code, text))


def noise_forever(conn: socket.socket, peer: ScriptedPeer, seconds: float = 30.0) -> None:
    """Random bytes, as a device at the wrong baud rate sends."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not peer._stop:
        try:
            conn.sendall(os.urandom(512))
        except OSError:
            return
        time.sleep(0.005)
