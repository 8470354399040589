"""What a run shows while it runs, besides pytest's progress, and where what target workers
print goes.

- A test that has run long is noted on the terminal (``still running ... (30 s so far)``,
  again every 30 s; ``SHIPEI_STILL_RUNNING_S`` changes the period): a TVM compile of
  minutes left the terminal silent. The note goes to the terminal pytest had before it
  began capturing output, on a line of its own, so it is seen while the test runs.
- What workers write on their stderr (a runtime's warnings) once the run's results folder
  exists goes to ``worker-stderr.log`` there, each line named by target, and the summary
  says how many lines there are. Printed as it came, it landed inside pytest's progress
  line wherever a worker computing ahead happened to be; a crashed case's record keeps
  the lines it printed either way. Before the folder exists (collection, a worker's
  start), and in a session that is no run, lines go where they went before: our stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from harness.isolation.host import set_worker_stderr_sink, worker_stderr_sink

STILL_RUNNING_ENV = "SHIPEI_STILL_RUNNING_S"
#: a test running longer than this is noted, and again every time as long after
STILL_RUNNING_EVERY_S = 30.0
WORKER_STDERR_FILE = "worker-stderr.log"


def still_running_every() -> float:
    """The period of the notes: ``SHIPEI_STILL_RUNNING_S`` if it is a positive number."""
    with contextlib.suppress(ValueError):
        seconds = float(os.environ.get(STILL_RUNNING_ENV, ""))
        if seconds > 0:
            return seconds
    return STILL_RUNNING_EVERY_S


class LiveOutput:
    """A pytest plugin for one session. ``run_folder`` gives the run's results folder once
    it exists (None before). One watcher thread looks at the running test now and then (a
    thread per test would cost the operator suite's thousands of light items)."""

    def __init__(self, config: pytest.Config, run_folder: Callable[[], Path | None]) -> None:
        self.config = config
        self.run_folder = run_folder
        self.every_s = still_running_every()
        #: how many "still running" notes were written
        self.notes = 0
        self.stderr_lines: Counter[str] = Counter()
        self._log: IO[str] | None = None
        self._lock = threading.Lock()
        self._terminal = _terminal_before_capture()
        #: (nodeid, when it started, when it was last noted) of the running test
        self._running: tuple[str, float, float] | None = None
        self._stopped = threading.Event()
        self._previous_sink = worker_stderr_sink()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name="shipei-still-running")

    # -- worker stderr -------------------------------------------------------------------
    def worker_stderr(self, source: str, line: bytes) -> None:
        with self._lock:
            log = self._open_log()
            if log is None:  # not a run (yet): where such lines went before
                self._previous_sink(source, line)
                return
            self.stderr_lines[source] += 1
            log.write(f"[{source}] {line.decode('utf-8', 'replace').rstrip()}\n")
            log.flush()

    def _open_log(self) -> IO[str] | None:
        if self._log is None:
            folder = self.run_folder()
            if folder is None:
                return None
            with contextlib.suppress(OSError):
                self._log = (folder / WORKER_STDERR_FILE).open("a", encoding="utf-8")
        return self._log

    # -- notes on long tests ------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line of its own on the terminal, seen even while pytest captures output."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        with self._lock:
            if self._terminal is None:
                if reporter is not None:
                    reporter.write_line(text)
                return
            writer = getattr(reporter, "_tw", None)
            mid_line = bool(getattr(writer, "width_of_current_line", 0))
            with contextlib.suppress(OSError, ValueError):
                self._terminal.write(("\n" if mid_line else "") + text + "\n")
                self._terminal.flush()
            if mid_line and hasattr(writer, "_current_line"):
                writer._current_line = ""  # pytest's progress goes on from a fresh line

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        now = time.monotonic()
        self._running = (nodeid, now, now)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._running = None

    def _watch(self) -> None:
        while not self._stopped.wait(min(self.every_s / 4, 5.0)):
            running, now = self._running, time.monotonic()
            if running is None or now - running[2] < self.every_s:
                continue
            nodeid, started, _ = running
            if self._running is running:
                self._running = (nodeid, started, now)
                self.notes += 1
                self.note(f"still running {nodeid} ({now - started:.0f} s so far)")

    # -- the session ----------------------------------------------------------------------
    def pytest_sessionstart(self) -> None:
        self._previous_sink = set_worker_stderr_sink(self.worker_stderr)
        self._watcher.start()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.stderr_lines or self._log is None:
            return
        counts = ", ".join(f"{name} {n}" for name, n in sorted(self.stderr_lines.items()))
        terminalreporter.write_line(f"worker stderr: {counts} line(s) in {self._log.name}")

    def pytest_unconfigure(self) -> None:
        """The sink before this session's (an outer session's, for a nested pytest run)."""
        if self._watcher.is_alive():
            set_worker_stderr_sink(self._previous_sink)
        self._stopped.set()
        with self._lock:
            if self._log is not None:
                self._log.close()
            if self._terminal is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._terminal.close()


def _terminal_before_capture() -> IO[str] | None:
    """Our own handle on the standard output pytest had before capturing (it does not
    capture while plugins are configured), or None where it is no file (a nested session
    writing to a buffer)."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8",
                         errors="replace", closefd=True)
    except (AttributeError, OSError, ValueError):
        return None


def live_output_for(config: pytest.Config, run_folder: Callable[[], Path | None]
                    ) -> LiveOutput | None:
    """The session's live output, or None in an xdist worker (the controller runs its
    own; a worker's target workers keep the worker's stderr)."""
    return None if hasattr(config, "workerinput") else LiveOutput(config, run_folder)
