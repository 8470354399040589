"""Starting a simulator as a subprocess and stopping it again (tests, benchmarks)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

STARTUP_TIMEOUT = 90.0  # a loaded CI machine starts a dozen side by side
#: a launched simulator exits on its own after this long, whatever happens to its parent
DEFAULT_LIFETIME = 600.0


class SimProcess:
    """``shipei sim DEVICE ARGS...`` in a subprocess; :attr:`url` is where it serves."""

    def __init__(self, device: str, *args: str, lifetime: float = DEFAULT_LIFETIME,
                 log: Path | None = None) -> None:
        argv = [sys.executable, "-m", "targets.serial.sim", device, *args]
        if "--duration" not in args:
            argv += ["--duration", str(lifetime)]
        self._log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                        cwd=Path(__file__).resolve().parents[3])
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Where it serves; waits for the simulator's first line (start many, then ask)."""
        if self._url is None:
            self._url = self._read_url()
        return self._url

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise RuntimeError(f"simulator did not start within {STARTUP_TIMEOUT:g} s")
            chunk = os.read(fd, 1)
            if not chunk:
                code = self.process.wait(5)
                raise RuntimeError(f"simulator exited with status {code} before serving")
            line += chunk
        return line.decode().strip()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
