"""``serial-board`` through the ``shipei`` CLI against the board simulator on a
pseudo-terminal: the representative operator subset passes, a faulty link is
survived, a vanished or hung board is infra_error (never the board's error), and
nothing hangs."""

from __future__ import annotations

import time

import pytest

from targets.serial.sim.launch import SimProcess

pytest.importorskip("serial")

FEW_CASES = "test_abs or test_relu or test_sigmoid or test_tanh or test_exp or test_sqrt"


@pytest.fixture
def board(tmp_path):
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        process = SimProcess("board", *args, log=tmp_path / "board.log", lifetime=300)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def run_operators(shipei_cli, target: str, *extra: str):
    return shipei_cli("run", "--suite", "operators", "--target", target, *extra, timeout=300)


def test_representative_operators_pass_on_a_board_over_a_pty(board, shipei_cli):
    process = board()
    assert process.url.startswith("/dev/pts/")
    result = run_operators(shipei_cli, f"serial-board,url={process.url}", "-m", "representative")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    records = result.records()
    statuses = {r["status"] for r in records}
    assert statuses <= {"pass", "skip"} and len(records) >= 40
    passed = [r for r in records if r["status"] == "pass"]
    assert len(passed) >= 40
    for record in passed:
        placement = record["placement"]
        assert placement["runs"] >= 1 and placement["device"] == "Shipei simulators sim-npu-1"
        assert 0 < placement["device_compute_s"] <= placement["round_trip_s"]
        assert len(placement["model_sha256"]) == 64
    run_info = next(iter(result.run_dirs())) / "run.json"
    assert "sim-npu-1" in run_info.read_text()


def test_a_noisy_link_is_survived_and_its_repairs_recorded(board, shipei_cli, tmp_path):
    process = board("--link", str(tmp_path / "board"), "--seed", "4",
                    "--fault", "bit_errors=0.03", "--fault", "truncate=0.03",
                    "--fault", "garbage=0.05", "--fault", "dropped_bytes=0.03")
    target = f"serial-board,url={process.url},timeout=0.5,inter_byte_timeout=0.05,retries=8"
    result = run_operators(shipei_cli, target, "-m", "representative")
    assert result.returncode == 0, result.stdout[-3000:]
    records = result.records()
    assert {r["status"] for r in records} <= {"pass", "skip"}
    assert sum(r["placement"].get("retransmissions", 0) for r in records) > 0
    assert sum(r["placement"].get("stray_bytes", 0) for r in records) > 0


def test_a_board_that_vanishes_is_infra_error_and_the_run_goes_on(board, shipei_cli, tmp_path):
    process = board("--link", str(tmp_path / "board"), "--exit-after", "10")
    started = time.monotonic()
    result = run_operators(shipei_cli, f"serial-board,url={process.url},timeout=0.5",
                           "-m", "representative", "-k", FEW_CASES)
    assert time.monotonic() - started < 120
    assert result.returncode == 1
    records = result.records()
    statuses = [r["status"] for r in records]
    assert "pass" in statuses and "infra_error" in statuses
    assert set(statuses) <= {"pass", "infra_error"}
    lost = [r for r in records if r["status"] == "infra_error"]
    assert all("serial link" in r["message"] or "cannot open" in r["message"] for r in lost)
    assert statuses.index("infra_error") > statuses.index("pass")


def test_a_board_that_hangs_is_infra_error_from_the_first_silence(board, shipei_cli,
                                                                  tmp_path):
    """A board that stops answering everything, a PING included, cannot be reached:
    the case it hung in and every later one are infra_error, none the board's
    error, and the later ones fail at once."""
    process = board("--link", str(tmp_path / "board"), "--mute-after", "10")
    result = run_operators(shipei_cli, f"serial-board,url={process.url},timeout=0.3,retries=1,"
                           "infer_timeout=1,load_timeout=1",
                           "-m", "representative", "-k", FEW_CASES)
    assert result.returncode == 1
    records = result.records()
    statuses = [r["status"] for r in records]
    assert "pass" in statuses and "infra_error" in statuses, statuses
    assert set(statuses) <= {"pass", "infra_error"}, statuses
    lost = [r for r in records if r["status"] == "infra_error"]
    first, rest = lost[0], lost[1:]
    assert "answered neither a request" in first["message"] and "PING" in first["message"]
    assert first["duration_s"] < 30  # its budgets are 1 s: not a hang
    # the later ones fail at once: the link is not tried again (no wall-clock bound, which
    # a loaded machine would break)
    assert all("cannot be reached" in r["message"] and "not tried" in r["message"]
               for r in rest)
    assert statuses.index("infra_error") > statuses.index("pass")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["pty", "tcp"])
def test_the_full_operator_suite_on_the_simulator_board_matches_its_expectations(
        board, shipei_cli, where):
    process = board(*(["--tcp", "0"] if where == "tcp" else []))
    result = shipei_cli("run", "--suite", "operators", "--target",
                        f"serial-board,url={process.url}", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:]
    records = result.records()
    assert len(records) > 1800 and all(r["as_expected"] for r in records)


@pytest.mark.parametrize("request_text, message", [
    ("serial-board", "no device given"),
    ("serial-board,url=/nonexistent/ttyUSB7", "cannot open /nonexistent/ttyUSB7"),
    ("serial-board,url=loop://,timeout=0.2,retries=0", "did not identify"),
    ("serial-board,url=/dev/null,bogus=1", "has no option 'bogus'"),
])
def test_unusable_board_targets_are_one_line_usage_errors(capsys, request_text, message):
    """Refused before pytest starts: in-process."""
    from harness.cli.main import main

    assert main(["run", "--suite", "operators", "-k", "test_abs", "--target",
                 request_text]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["sim", "imu", "--fault", "warp=1"], "unknown fault 'warp'"),
    (["sim", "board", "--fault", "disconnect=0.1"], "needs --link"),
    (["sim", "ultrasonic", "--fault", "drop=3"], "at most 1"),
    (["sim", "board", "--tcp", "70000"], "not a port number"),
    (["sim", "imu", "--export-truth", "/nonexistent/dir/t.csv"], "cannot write"),
])
def test_simulator_usage_errors_are_one_line(capsys, args, message):
    from harness.cli.main import main

    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_sim_help_and_targets_listing(capsys):
    from harness.cli.main import main

    with pytest.raises(SystemExit) as helped:
        main(["sim", "--help"])
    out = capsys.readouterr().out
    assert helped.value.code == 0 and "board" in out and "ultrasonic" in out
    assert main(["targets"]) == 0
    listed = capsys.readouterr().out
    for name in ("serial-board", "serial-imu", "serial-ultrasonic"):
        line = next(line for line in listed.splitlines() if line.startswith(name))
        assert "no device given" in line


@pytest.mark.extended
def test_a_board_silent_past_the_case_timeout_is_infra_error_for_the_rest(board, shipei_cli,
                                                                           tmp_path):
    """The board hangs during a long wait (INFER, 30 s budget) and the case timeout
    (3 s) kills the worker first: that case is a timeout; the next worker's IDENTIFY
    goes unanswered, so it and every later case are infra_error at once, never the
    board's ``error: compile: AssertionError``."""
    process = board("--link", str(tmp_path / "board"), "--mute-after", "10")
    result = run_operators(shipei_cli, f"serial-board,url={process.url},timeout=0.3,retries=1,"
                           "infer_timeout=30,load_timeout=30", "--case-timeout", "3",
                           "-m", "representative", "-k", FEW_CASES)
    assert result.returncode == 1
    records = result.records()
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {"pass", "timeout", "infra_error"}, statuses
    assert statuses.count("timeout") == 1, statuses
    later = records[statuses.index("timeout") + 1:]
    assert later and all(r["status"] == "infra_error" for r in later), statuses
    assert "did not answer IDENTIFY" in later[0]["message"]
    assert all("cannot be reached" in r["message"] for r in later)
    assert all("not tried" in r["message"] for r in later[1:])  # at once, no link wait
