"""Many boards at once (``shipei run --places``): shards on several simulated boards,
joined, equal to the one-board run case for case; a board lost mid-run has its
remaining cases re-run on another place and recorded as ``infra_error`` attempts,
never as the chip's result.

The boards are real ``shipei sim board`` processes on loopback TCP; the shards are
real ``shipei run`` children.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli.common import CliError
from harness.lab.case_filter import read_case_list, write_case_list
from harness.lab.farm import CHILD_PYTEST_ARGS, Farm, FarmError, FarmPlan, Place, check_target
from harness.lab.farm_merge import join
from harness.lab.reservations import parse_filter
from harness.results.record_files import load_run
from tests.lab_support import Lab, running_lab

ROOT = Path(__file__).resolve().parent.parent
#: a small slice of the representative operator cases, enough for two shards of several
SELECTION = ("--suite", "operators", "-m", "representative",
             "-k", "abs or add or sigmoid or sqrt or sub or tanh or relu or exp")


class SimBoard:
    """``shipei sim board --tcp 0`` in its own process."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "sim", "board", "--tcp", "0", "-q", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("socket://"), self.url

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def boards() -> Iterator[list[SimBoard]]:
    started: list[SimBoard] = []
    yield started
    for board in started:
        board.close()


def statuses(run_dir: Path) -> dict[tuple[str, str], str]:
    _, records = load_run(run_dir)
    return {(r["suite"], r["case"]): r["status"] for r in records}


@pytest.fixture(scope="module")
def one_board(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """The same selection on one board, as a plain ``shipei run``."""
    out = tmp_path_factory.mktemp("one")
    board = SimBoard()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "harness", "run", *SELECTION,
             "--target", f"serial-board,url={board.url}", "--run-id", "one",
             "--results-dir", str(out / "results"), "--reports-dir", str(out / "reports"),
             "--", *CHILD_PYTEST_ARGS], capture_output=True, text=True, cwd=ROOT, check=False)
    finally:
        board.close()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = statuses(out / "results" / "one")
    assert len(found) >= 6, found
    return found


def run_farm(boards: list[SimBoard], tmp_path: Path, shards_per_place: int = 1
             ) -> tuple[Farm, dict]:
    lines: list[str] = []
    plan = FarmPlan("serial-board", SELECTION, tmp_path / "results", tmp_path / "reports",
                    run_id="farm", shards_per_place=shards_per_place)
    farm = Farm(plan, [Place(f"sim-{i}", b.url, {"board": "sim"})
                       for i, b in enumerate(boards)], log=lines.append)
    result = join(farm, farm.run())
    return farm, result.info


def check_equal_to_one(tmp_path: Path, one: dict[tuple[str, str], str], places: int,
                       shards: int | None = None) -> None:
    info, records = load_run(tmp_path / "results" / "farm")
    assert {(r["suite"], r["case"]): r["status"] for r in records} == one
    assert {r["target"] for r in records} == {"serial-board"}
    assert list(info["targets"]) == ["serial-board"]
    assert "url" not in info["targets"]["serial-board"]["request"]["options"]
    used = {r["place"] for r in records}
    assert len(used) == places  # every place ran a shard
    assert len(info["farm"]["children"]) == info["farm"]["shards"] == (shards or places)
    assert info["farm"]["requeued"] == []


@pytest.mark.extended
def test_two_places_equal_one_board(boards: list[SimBoard], tmp_path: Path,
                                    one_board: dict[tuple[str, str], str]) -> None:
    boards += [SimBoard(), SimBoard()]
    farm, info = run_farm(boards, tmp_path)
    check_equal_to_one(tmp_path, one_board, 2)
    assert info["counts"]["serial-board"]["pass"] == len(one_board)
    # the children stay as written, each with its own place's label
    child = tmp_path / "results" / "farm-s1"
    _, raw = load_run(child)
    assert {r["target"] for r in raw} == {f"serial-board,url={boards[0].url}"}
    assert json.loads(json.dumps(info["farm"]))["places"][0]["runs"] == ["farm-s1"]
    assert info["farm"]["wall_time_s"] == info["wall_time_s"] == round(farm.wall_s, 3)


@pytest.mark.slow  # four children on two boards: about 20 s
def test_more_shards_than_places_equal_one_board(boards: list[SimBoard], tmp_path: Path,
                                                 one_board: dict[tuple[str, str], str]
                                                 ) -> None:
    boards += [SimBoard(), SimBoard()]
    farm, info = run_farm(boards, tmp_path, shards_per_place=2)
    check_equal_to_one(tmp_path, one_board, 2, shards=4)
    assert sorted(c["shard"] for c in info["farm"]["children"]) == [1, 2, 3, 4]
    assert info["farm"]["requeued"] == []


@pytest.mark.slow
def test_four_places_equal_one_board(boards: list[SimBoard], tmp_path: Path,
                                     one_board: dict[tuple[str, str], str]) -> None:
    boards += [SimBoard() for _ in range(4)]
    run_farm(boards, tmp_path)
    check_equal_to_one(tmp_path, one_board, 4)


@pytest.mark.extended
def test_board_lost_mid_run_is_requeued_not_blamed(boards: list[SimBoard], tmp_path: Path,
                                                   one_board: dict[tuple[str, str], str]
                                                   ) -> None:
    boards += [SimBoard("--exit-after", "12"), SimBoard()]  # the first vanishes midway
    farm, info = run_farm(boards, tmp_path)
    assert set(farm.lost) == {"sim-0"}
    assert info["farm"]["requeued"] == [{"shard": 1, "from": "sim-0", "to": "sim-1",
                                         "run_id": "farm-s1-r1"}]
    run_dir = tmp_path / "results" / "farm"
    assert statuses(run_dir) == one_board  # the chip's results, nothing blamed on it
    _, every = load_run(run_dir, all_attempts=True)
    lost = [r for r in every if r["status"] == "infra_error"]
    assert lost and {r["place"] for r in lost} == {"sim-0"}
    rerun = {(r["suite"], r["case"]): r for r in every if r["place_run_id"] == "farm-s1-r1"}
    for record in lost:  # each lost attempt has a later attempt on the other place
        again = rerun[(record["suite"], record["case"])]
        assert again["attempt"] > record["attempt"] and again["place"] == "sim-1"
    _, effective = load_run(run_dir)
    requeued = [r for r in effective if r.get("previous_attempts")]
    assert requeued and all(r["status"] == "pass" and r["as_expected"] for r in requeued)
    assert all(p["status"] == "infra_error" for r in requeued for p in r["previous_attempts"])


@pytest.mark.extended
def test_every_place_lost_leaves_infra_error_not_a_failure(boards: list[SimBoard],
                                                           tmp_path: Path) -> None:
    boards += [SimBoard("--exit-after", "12")]
    farm, info = run_farm(boards, tmp_path)
    assert info["farm"]["gave_up"] == {"1": "place sim-0 was lost and no other place is left"}
    _, effective = load_run(tmp_path / "results" / "farm")
    assert {r["status"] for r in effective} <= {"pass", "infra_error"}
    assert any(r["status"] == "infra_error" for r in effective)


def test_child_dying_on_an_answering_board_is_retried_then_given_up(boards: list[SimBoard],
                                                                    tmp_path: Path) -> None:
    boards += [SimBoard()]
    lines: list[str] = []
    plan = FarmPlan("serial-board", SELECTION, tmp_path / "results", tmp_path / "reports",
                    run_id="dies", pytest_args=("--no-such-option",))  # every child: exit 2
    farm = Farm(plan, [Place("only", boards[0].url)], log=lines.append)
    jobs = farm.run()
    assert farm.lost == {}  # the board answers: the place is not blamed
    assert [c.run_id for c in jobs[0].runs] == ["dies-s1", "dies-s1-r1"]
    assert jobs[0].gave_up.startswith("its runs died 2 times")
    assert any("the board still answers" in line for line in lines)
    with pytest.raises(FarmError, match="no child run wrote a run folder"):
        join(farm, jobs)


# -- small pieces ------------------------------------------------------------------
def test_case_list_round_trip_and_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "skip"
    write_case_list(path, [("operators", "test_abs"), ("operators", "test_add")])
    assert read_case_list(path) == {("operators", "test_abs"), ("operators", "test_add")}
    path.write_text("operators test_abs\n", encoding="utf-8")
    with pytest.raises(pytest.UsageError, match="line 1"):
        read_case_list(path)


@pytest.mark.parametrize("label", ["serial-board,url=socket://x:1", "serial-board,place=a"])
def test_farm_target_must_not_name_a_place(label: str) -> None:
    with pytest.raises(FarmError, match="must not give"):
        check_target(label)


def test_no_places_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FarmError, match="no places"):
        Farm(FarmPlan("serial-board", (), tmp_path, tmp_path), [])


def test_shards_per_place_makes_that_many_shards_for_each_place(tmp_path: Path) -> None:
    places = [Place("a", "socket://127.0.0.1:9"), Place("b", "socket://127.0.0.1:9")]
    farm = Farm(FarmPlan("serial-board", (), tmp_path, tmp_path, shards_per_place=3), places)
    assert [job.shard for job in farm.jobs] == [1, 2, 3, 4, 5, 6]
    assert farm.summary()["shards"] == 6
    assert len(Farm(FarmPlan("serial-board", (), tmp_path, tmp_path), places).jobs) == 2


@pytest.mark.parametrize("per_place", [0, -1])
def test_fewer_than_one_shard_per_place_is_refused(tmp_path: Path, per_place: int) -> None:
    with pytest.raises(FarmError, match="at least one shard per place"):
        Farm(FarmPlan("serial-board", (), tmp_path, tmp_path, shards_per_place=per_place),
             [Place("a", "socket://127.0.0.1:9")])


def test_shards_per_place_reaches_the_farm_s_plan() -> None:
    from harness.cli.run_farm import farm_plan

    args = _run_args("--places", "board=sim", "--shards-per-place", "3",
                     "--target", "serial-board")
    assert farm_plan(args).shards_per_place == 3
    plan = farm_plan(_run_args("--places", "board=sim", "--target", "serial-board"))
    assert plan.shards_per_place == 1


@pytest.mark.parametrize("text", ["board", "Board=x", "board=a b", ""])
def test_bad_places_filter(text: str) -> None:
    with pytest.raises(ValueError, match="--places"):
        parse_filter(text)


def test_places_filter() -> None:
    assert parse_filter("board=sim_npu,lab=bj-2") == {"board": "sim_npu", "lab": "bj-2"}


def _run_args(*argv: str) -> argparse.Namespace:
    from harness.cli.main import build_parser

    return build_parser().parse_args(["run", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (("--places", "board=sim", "--shard", "1/2", "--target", "serial-board"), "--shard"),
    (("--places", "board=sim", "--target", "a", "--target", "b"), "exactly one --target"),
    (("--places", "board=sim"), "exactly one --target"),
    (("--max-places", "2", "--target", "serial-board"), "--max-places needs --places"),
    (("--shards-per-place", "2", "--target", "serial-board"),
     "--shards-per-place needs --places"),
    (("--places", "board=sim", "--target", "serial-board,url=/dev/x"), "must not give"),
    (("--places", "nonsense", "--target", "serial-board"), "TAG=VALUE"),
])
def test_cli_refusals(argv: tuple[str, ...], message: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli.cmd_run import run

    monkeypatch.setenv("LG_COORDINATOR", "127.0.0.1:9")  # never reached: refused before
    with pytest.raises(CliError, match=message):
        run(_run_args(*argv))


def test_cli_without_coordinator(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli.cmd_run import run

    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    with pytest.raises(CliError, match="LG_COORDINATOR"):
        run(_run_args("--places", "board=sim", "--target", "serial-board"))


def test_cli_with_nothing_listening_at_the_coordinator(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from harness.cli.cmd_run import run

    monkeypatch.setenv("LG_COORDINATOR", "127.0.0.1:9")
    with pytest.raises(CliError, match="cannot reach the labgrid coordinator at 127.0.0.1:9"):
        run(_run_args("--places", "board=sim", "--target", "serial-board"))


@pytest.mark.parametrize("option", ["--max-places", "--shards-per-place"])
def test_place_counts_must_be_positive(option: str) -> None:
    with pytest.raises(SystemExit):
        _run_args("--places", "board=sim", option, "0")


# -- through labgrid: reservations, acquisition, ser2net, an exporter killed ---------
class SecondExporter:
    """A second exporter host on the lab's coordinator: its own simulated board (slowed
    by ``--fault jitter`` so a run on it lasts long enough to be cut) exported as
    ``exp-b/boardb``, and place ``p-b`` on it. :meth:`kill` kills the exporter with its
    ser2net, as a lost exporter host would be."""

    def __init__(self, lab: Lab, tags: dict[str, str]) -> None:
        self.lab = lab
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "harness", "sim", "board", "-q", "--fault", "jitter=0.05"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            start_new_session=True)
        assert self.sim.stdout is not None
        pty = self.sim.stdout.readline().strip()
        config = lab.folder / "exp-b.yaml"
        config.write_text(f"boardb:\n  RawSerialPort:\n    port: {pty}\n    speed: 921600\n",
                          encoding="utf-8")
        self.exporter = subprocess.Popen(
            [sys.executable, "-c", "from labgrid.remote.exporter import main; main()",
             "-c", lab.address, "-n", "exp-b", "--hostname", "127.0.0.1", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lab.env,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while "exp-b/boardb" not in lab.client("resources").stdout:
            assert time.monotonic() < deadline, "the second exporter's board did not appear"
            time.sleep(0.5)
        lab.client("create", place="p-b")
        lab.client("add-match", "exp-b/boardb/*", place="p-b")
        lab.client("set-tags", *(f"{k}={v}" for k, v in tags.items()), place="p-b")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.exporter.pid, signal.SIGKILL)  # the exporter and its ser2net
        self.exporter.wait(10)

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.sim.pid, signal.SIGKILL)
        self.sim.wait(10)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with running_lab(boards=1) as started:
        yield started


@pytest.mark.slow  # a lab, two places, a representative run: about a minute, more if loaded
def test_exporter_killed_mid_run_requeues_on_the_other_place(lab: Lab, tmp_path: Path
                                                               ) -> None:
    tags = {"board": "sim_farm"}
    lab.create_place("p-a", board=0, tags=tags)
    second = SecondExporter(lab, tags)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--places", "board=sim_farm",
             "--target", "serial-board", "--suite", "operators", "-m", "representative",
             "--run-id", "lab-farm", "--results-dir", str(tmp_path / "results"),
             "--reports-dir", str(tmp_path / "reports")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env=lab.env)
        assert proc.stdout is not None
        output: list[str] = []
        for line in proc.stdout:
            output.append(line)
            if " on p-b as run " in line:
                records = tmp_path / "results" / line.split()[-1] / "records.jsonl"
                deadline = time.monotonic() + 120
                while not (records.exists() and records.read_text().count("\n") >= 2):
                    assert time.monotonic() < deadline, "".join(output)
                    time.sleep(0.05)
                second.kill()  # mid-run: two cases recorded, the rest to come
        assert proc.wait(300) == 0, "".join(output)
    finally:
        second.close()
    info, effective = load_run(tmp_path / "results" / "lab-farm")
    assert {p["name"] for p in info["farm"]["places"]} == {"p-a", "p-b"}
    assert [p["name"] for p in info["farm"]["places"] if p["lost"]] == ["p-b"]
    assert [(r["from"], r["to"]) for r in info["farm"]["requeued"]] == [("p-b", "p-a")]
    assert {r["status"] for r in effective} == {"pass"}  # nothing blamed on the board
    assert len(effective) == sum(c["finished_cases"] for c in info["farm"]["children"])
    _, every = load_run(tmp_path / "results" / "lab-farm", all_attempts=True)
    lost = [r for r in every if r["status"] == "infra_error"]
    assert lost and {r["place"] for r in lost} == {"p-b"}
    where = {p["name"]: p["where"] for p in info["farm"]["places"]}
    assert where["p-b"]["exporter"] == "exp-b" and where["p-a"]["place"] == "p-a"
    # released on the way out, reservations cancelled
    assert lab.wait_free("p-a") and lab.wait_free("p-b")
    assert lab.client("reservations").stdout.strip() == ""
