"""Where a simulator serves: a pseudo-terminal or a TCP port on 127.0.0.1.

Both serve one peer at a time, as a serial line does. A pty's peer is whoever
has the slave side open (the master sees POLLHUP while nobody does); a TCP peer
is the one accepted connection. :meth:`Endpoint.drop` pulls the cable: the peer
sees the link die (EIO on the pty, EOF on the socket); after ``down_s`` the
endpoint serves again. A pty is replaced by a new one on reconnect, as a USB
adapter re-enumerates, so pty simulators keep a stable symlink (``--link``), the
way udev keeps ``/dev/serial/by-id/...``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import termios
import time
import tty
from pathlib import Path

from targets.serial.pacing import Pacer

#: a peer that takes nothing for this long is treated as gone
WRITE_STALL_S = 2.0


class PeerGone(Exception):
    """The peer closed its end or the link failed."""


class Endpoint:
    url: str
    pacer: Pacer

    def wait_peer(self, timeout: float) -> bool:
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        """Bytes from the peer (b"" after ``timeout``); PeerGone when it left."""
        raise NotImplementedError

    def _write_now(self, data: bytes) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        self.pacer.write(self._write_now, data)

    def drop(self, down_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + WRITE_STALL_S
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            raise PeerGone(f"write failed: {exc}") from None
        view = view[written:]
        if view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerGone(f"the peer took nothing for {WRITE_STALL_S:g} s")
            select.select([], [fd], [], min(left, 0.1))


class PtyEndpoint(Endpoint):
    def __init__(self, link: Path | None = None, pacer: Pacer | None = None) -> None:
        self.link = link
        self.pacer = pacer or Pacer()
        self._open()

    def _open(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        self.pty_path = os.ttyname(slave)
        os.close(slave)  # the master sees POLLHUP until a peer opens the slave
        os.set_blocking(master, False)
        self.master = master
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(self.pty_path, tmp)
            os.replace(tmp, self.link)
        self.url = str(self.link) if self.link is not None else self.pty_path

    def _connected(self) -> bool:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def wait_peer(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._connected():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def read(self, timeout: float) -> bytes:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        events = poller.poll(max(timeout, 0.0) * 1000)
        if not events:
            return b""
        if events[0][1] & select.POLLHUP and not events[0][1] & select.POLLIN:
            raise PeerGone("the peer closed the pty")
        try:
            data = os.read(self.master, 1 << 16)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise PeerGone("the peer closed the pty") from None
            raise
        return data

    def _write_now(self, data: bytes) -> None:
        _write_fd(self.master, data)

    def drop(self, down_s: float) -> None:
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()  # first, so nobody opens a recycled pty number
        os.close(self.master)
        time.sleep(down_s)
        self._open()

    def close(self) -> None:
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink():
                    self.link.unlink()
        with contextlib.suppress(OSError):
            os.close(self.master)


class TcpEndpoint(Endpoint):
    def __init__(self, port: int = 0, host: str = "127.0.0.1", pacer: Pacer | None = None
                 ) -> None:
        self.pacer = pacer or Pacer()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4)
        self.host, self.port = self.listener.getsockname()[:2]
        self.url = f"socket://{self.host}:{self.port}"
        self.conn: socket.socket | None = None

    def wait_peer(self, timeout: float) -> bool:
        if self.conn is not None:
            return True
        ready, _, _ = select.select([self.listener], [], [], max(timeout, 0.0))
        if not ready:
            return False
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        self.conn = conn
        return True

    def _lost(self, reason: str) -> PeerGone:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
        self.conn = None
        return PeerGone(reason)

    def read(self, timeout: float) -> bytes:
        if self.conn is None:
            raise PeerGone("no peer")
        ready, _, _ = select.select([self.conn], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        try:
            data = self.conn.recv(1 << 16)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._lost(f"read failed: {exc}") from None
        if not data:
            raise self._lost("the peer closed the connection")
        return data

    def _write_now(self, data: bytes) -> None:
        if self.conn is None:
            raise PeerGone("no peer")
        try:
            _write_fd(self.conn.fileno(), data)
        except PeerGone as exc:
            raise self._lost(str(exc)) from None

    def drop(self, down_s: float) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)
        self._lost("dropped")
        time.sleep(down_s)

    def close(self) -> None:
        self._lost("closed")
        with contextlib.suppress(OSError):
            self.listener.close()
