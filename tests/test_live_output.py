"""What a run shows while it runs: a note on a test that runs long, and the lines target
workers write on their stderr, each on a line of its own (a TVM compile of minutes was
silent, and its warnings broke pytest's progress line). The worker side is checked on a
real run in tests/test_worker_blame.py; here the plugin runs in this process."""

from __future__ import annotations

import pytest

import harness.run.plugin  # noqa: F401  (imported before pytester's sys.modules snapshot)
from harness.isolation import host
from harness.run import live_output

pytest_plugins = ["pytester"]

LONG_TEST = """
import time

def test_long(request):
    live = request.config.pluginmanager.get_plugin("shipei-live-output")
    deadline = time.monotonic() + 120
    while live.notes < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.notes >= 2

def test_short():
    pass
"""


def test_a_long_test_is_noted_while_it_runs_on_lines_of_its_own(
        pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv(live_output.STILL_RUNNING_ENV, "0.2")
    pytester.makepyfile(test_slowly=LONG_TEST)
    done = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    assert done.ret == 0, "\n".join(done.outlines[-30:])
    notes = [line for line in done.outlines if line.startswith("still running")]
    assert len(notes) >= 2
    assert all("test_slowly.py::test_long (" in line and line.endswith("s so far)")
               for line in notes)
    assert not any("test_short" in line for line in notes)
    # the progress carries on after the notes: both results, with the percentage
    progress = [line for line in done.outlines if line.rstrip().endswith("%]")]
    assert "".join(line.split()[0] for line in progress) == ".."


def test_worker_stderr_outside_a_run_goes_where_it_went_before(
        pytester: pytest.Pytester) -> None:
    """In a session that writes no run (or before its folder exists) a worker's stderr
    lines go to the sink there was before; after the session that sink is restored (an
    outer session's, or our own stderr)."""
    before = host.worker_stderr_sink()
    seen: list[tuple[str, bytes]] = []
    host.set_worker_stderr_sink(lambda source, line: seen.append((source, line)))
    try:
        pytester.makepyfile(test_sink="""
from harness.isolation import host

def test_line():
    host.worker_stderr_sink()("some-target", b"a warning from the runtime\\n")
""")
        done = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
        assert done.ret == 0, "\n".join(done.outlines[-30:])
        assert seen == [("some-target", b"a warning from the runtime\n")]
        assert not any("worker stderr" in line for line in done.outlines)
    finally:
        host.set_worker_stderr_sink(before)
    assert host.worker_stderr_sink() is before


@pytest.mark.parametrize("value, expected", [("2.5", 2.5), ("0", 30.0), ("-1", 30.0),
                                             ("nan", 30.0), ("soon", 30.0), ("", 30.0)])
def test_the_period_of_the_notes(monkeypatch, value, expected) -> None:
    monkeypatch.setenv(live_output.STILL_RUNNING_ENV, value)
    assert live_output.still_running_every() == expected
