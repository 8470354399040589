"""Bad input to ``shipei sim``: exit 2, one line on stderr, no traceback, and no
simulator left serving (issue 27, item 12).

Each row runs ``python -m targets.serial.sim``'s ``main`` in this process: the same
argument parsing and checks as ``shipei sim``, without an interpreter start per row.
A refused row must be refused before anything is served: the test fails if the
simulator starts (it would print its URL on stdout and wait for a peer).
"""

from __future__ import annotations

import signal

import pytest

from targets.serial.sim.__main__ import main

ROWS = [
    # the five
    pytest.param(("board", "--duration", "nan"), "--duration nan", id="duration-nan"),
    pytest.param(("board", "--duration", "-1"), "--duration -1", id="duration-negative"),
    pytest.param(("imu", "--exit-after", "-1"), "--exit-after -1", id="exit-after-negative"),
    pytest.param(("ultrasonic", "--mute-after", "-2"), "--mute-after -2",
                 id="mute-after-negative"),
    pytest.param(("board", "--duration", "inf"), "--duration inf", id="duration-inf"),
    # their neighbours
    pytest.param(("board", "--duration", "0"), "--duration 0", id="duration-zero"),
    pytest.param(("board", "--stall-ms", "nan"), "--stall-ms must be", id="stall-nan"),
    pytest.param(("imu", "--down-ms", "-5"), "--down-ms must be", id="down-negative"),
    pytest.param(("board", "--baud", "nan"), "--baud must be", id="baud-nan"),
    pytest.param(("board", "--bits-per-byte", "inf"), "--bits-per-byte", id="bits-inf"),
    pytest.param(("imu", "--rate", "nan"), "--rate must be", id="rate-nan"),
    pytest.param(("board", "--fault", "drop=nan"), "finite number", id="fault-nan"),
    pytest.param(("board", "--fault", "drop=2"), "at most 1", id="fault-rate-over-1"),
    pytest.param(("board", "--pipeline", "0"), "--pipeline must be", id="pipeline-zero"),
    pytest.param(("board", "--max-payload", "10"), "--max-payload must be",
                 id="max-payload-small"),
    pytest.param(("board", "--tcp", "70000"), "not a port number", id="tcp-port-range"),
    pytest.param(("imu", "--export-truth", "{tmp}/t.csv", "--truth-rate", "nan"),
                 "--truth-rate", id="truth-rate-nan"),
]


class StartedServing(Exception):
    """The row was not refused: the simulator is serving (and would never return)."""


@pytest.fixture
def refused_in_time():
    """A row that is not refused starts a simulator that serves until stopped; end it
    with an exception instead of hanging the test run."""
    def give_up(*_: object) -> None:
        raise StartedServing("not refused: the simulator started serving")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(15)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("refused_in_time")
@pytest.mark.parametrize(("args", "message"), ROWS)
def test_bad_sim_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str,
                                              tmp_path, capsys) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shipei sim: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert out == "", "the simulator started serving before refusing"
    assert not (tmp_path / "t.csv").exists()
