"""A board on a labgrid place, against a real lab on loopback (tests/lab_support.py):
labgrid's coordinator and exporter, ser2net serving a simulated board's pty as
RFC 2217, places made with labgrid-client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.lab.coordinator import Coordinator, LabError, LabUnavailable, PlaceBusy
from harness.lab.place import RELEASE_TIMEOUT_S, acquire_place
from tests.lab_support import REPO, Lab, free_port, running_lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(devices=["board", "board", "imu"]) as started:
        yield started


HOLD_SCRIPT = """
import sys, time
from harness.lab.place import hold_place
place = hold_place(sys.argv[1], cycle_power=False)
print(place.serial_url, flush=True)
if sys.argv[2] == "crash":
    raise RuntimeError("the run crashed")
time.sleep(120)
"""


def _run(lab: Lab, tmp_path: Path, target: str, *args: str, suite: str = "operators"
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", "--results-dir", str(tmp_path / "results"),
         "--reports-dir", str(tmp_path / "reports"), "--suite", suite, "--target",
         target, *args], cwd=REPO, env=lab.env, capture_output=True, text=True, timeout=300,
        check=False)


def _run_json(tmp_path: Path) -> dict:
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    return json.loads((run_dir / "run.json").read_text())


def _records(tmp_path: Path) -> list[dict]:
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()
            if line.strip()]


def test_a_run_through_a_place_records_it_and_releases_it(lab: Lab, tmp_path: Path) -> None:
    place = lab.create_place("lab-run", board=0, tags={"soc": "sim"})
    done = _run(lab, tmp_path, f"serial-board,place={place}", "-k", "test_abs or test_relu")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = _records(tmp_path)
    assert records and {r["status"] for r in records} <= {"pass", "xfail"}
    described = next(iter(_run_json(tmp_path)["targets"].values()))
    where = described["place"]
    assert where["place"] == place and where["coordinator"] == lab.address
    assert where["exporter"] == lab.exporter and where["exporter_host"] == "127.0.0.1"
    assert where["resource"] == f"{lab.exporter}/board0/NetworkSerialPort/RawSerialPort"
    assert where["device_path"] == lab.ptys[0] and where["tags"] == {"soc": "sim"}
    # the board's power was cycled before the run, through labgrid, and recorded
    (cycle,) = where["power"]["actions"]
    assert cycle["why"] == "before the run" and cycle["ok"] is True
    assert lab.power.switched(0) == ["off", "on"]
    # the serial link went through the exporter's ser2net (RFC 2217)
    assert described["capabilities"]["extra"]["url"].startswith("rfc2217://127.0.0.1:")
    # released as the run ended (by its holder, which sees the run's process go)
    assert lab.wait_free(place)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")
def test_the_certificate_s_target_identity_names_the_place(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cert.certify import describe_target
    from harness.lab.place import release_all

    place = lab.create_place("lab-cert", board=0)
    monkeypatch.setenv("LG_COORDINATOR", lab.address)
    try:
        _, described, _ = describe_target(f"serial-board,place={place},power_cycle=false")
    finally:
        release_all()
    assert described["available"], described["reason"]
    assert described["place"]["place"] == place
    assert described["place"]["resource"].startswith(f"{lab.exporter}/board0/")
    assert lab.holder(place) is None  # released at once, not at exit


def test_a_place_held_by_someone_else_is_refused_naming_them(lab: Lab) -> None:
    place = lab.create_place("lab-busy", board=1)
    lab.client("acquire", place=place, user="alice")
    try:
        with pytest.raises(PlaceBusy) as refused:
            acquire_place(place, lab.address)
        assert refused.value.holder.endswith("/alice")
        assert "alice" in str(refused.value) and "wait=SECONDS" in str(refused.value)
        with pytest.raises(PlaceBusy, match="after waiting 1 s"):
            acquire_place(place, lab.address, wait=1)
        # never taken from her (read as a farm would, without holding the place)
        assert Coordinator(lab.address).place(place).acquired.endswith("/alice")
    finally:
        lab.client("release", place=place, user="alice")


@pytest.mark.slow
def test_a_sensor_on_a_place(lab: Lab, tmp_path: Path) -> None:
    place = lab.create_place("lab-imu", board=2, tags={"sensor": "imu"})
    done = _run(lab, tmp_path, f"serial-imu,place={place},capture_s=1,power_cycle=false",
                "-k", "frame_integrity or timestamps_monotonic", suite="sensors")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    statuses = [r["status"] for r in _records(tmp_path)]
    assert statuses and set(statuses) == {"pass"}
    described = next(iter(_run_json(tmp_path)["targets"].values()))
    assert described["kind"] == "sensor" and described["place"]["place"] == place
    assert described["place"]["power"]["actions"] == []  # power_cycle=false
    assert lab.power.switched(2) == []
    assert lab.wait_free(place)


@pytest.mark.slow
def test_a_run_on_a_place_held_by_someone_else_stops_before_its_first_case(
        lab: Lab, tmp_path: Path) -> None:
    place = lab.create_place("lab-busy-run", board=1)
    lab.client("acquire", place=place, user="carol")
    try:
        done = _run(lab, tmp_path, f"serial-board,place={place}", "-k", "test_abs")
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"place {place!r}" in done.stderr and "carol" in done.stderr
        assert lab.holder(place).endswith("/carol")
    finally:
        lab.client("release", place=place, user="carol")


@pytest.mark.extended
def test_a_place_reserved_for_someone_else_is_refused(lab: Lab) -> None:
    place = lab.create_place("lab-reserved", board=1, tags={"pool": "reserved"})
    reserved = lab.client("reserve", "--wait", "--shell", "pool=reserved", user="dave")
    token = next(line.split("=", 1)[1].strip("'\"") for line in reserved.stdout.splitlines()
                 if "LG_TOKEN=" in line)  # export LG_TOKEN=...
    try:
        with pytest.raises(PlaceBusy, match="reservation") as refused:
            acquire_place(place, lab.address)
        assert token in str(refused.value) and lab.holder(place) is None
    finally:
        lab.client("cancel-reservation", token, user="dave")


@pytest.mark.extended
def test_a_bounded_wait_gets_the_place_when_its_holder_lets_go(lab: Lab) -> None:
    place = lab.create_place("lab-wait", board=1)
    lab.client("acquire", place=place, user="bob")
    letting_go = threading.Timer(2.0, lambda: lab.client("release", place=place, user="bob"))
    letting_go.start()
    try:
        with acquire_place(place, lab.address, wait=60) as held:
            assert not held.borrowed and held.state.acquired and \
                not held.state.acquired.endswith("/bob")
            assert held.serial_url.startswith("rfc2217://127.0.0.1:")
    finally:
        letting_go.join()
    assert lab.wait_free(place)


@pytest.mark.parametrize("ending", ["ctrl-c", "sigterm", "sigkill", "crash"])
def test_the_place_is_released_however_the_process_ends(lab: Lab, ending: str) -> None:
    place = lab.create_place(f"lab-{ending}", board=1)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, place,
                             "crash" if ending == "crash" else "hold"],
                            cwd=REPO, env=lab.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("rfc2217://")
        if ending == "ctrl-c":  # a terminal's Ctrl-C: SIGINT to the foreground group
            assert lab.holder(place) is not None
            os.killpg(proc.pid, signal.SIGINT)
        elif ending != "crash":  # a crash may have released it already
            assert lab.holder(place) is not None
            proc.send_signal(signal.SIGTERM if ending == "sigterm" else signal.SIGKILL)
        # the release may wait up to its own timeout for a starved coordinator
        proc.wait(RELEASE_TIMEOUT_S + 120)
        assert lab.wait_free(place), f"{place} still held after {ending}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_releases_its_place(lab: Lab, tmp_path: Path) -> None:
    place = lab.create_place("lab-stop", board=1)
    argv = [sys.executable, "-m", "harness", "run", "--results-dir",
            str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"),
            "--suite", "operators", "--target", f"serial-board,place={place}"]
    proc = subprocess.Popen(argv, cwd=REPO, env=lab.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while lab.holder(place) is None and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lab.holder(place) is not None, "the run never held its place"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(120)
        assert lab.wait_free(place)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unknown_place_and_an_absent_coordinator_are_named(lab: Lab) -> None:
    with pytest.raises(LabError, match="has no place 'no-such-place'"):
        acquire_place("no-such-place", lab.address)
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(LabUnavailable, match=f"cannot reach the labgrid coordinator at {nobody}"):
        acquire_place("lab-run", nobody)


def test_a_place_without_a_serial_port_is_refused_and_released(lab: Lab) -> None:
    from harness.driver.registry import discover

    place = lab.create_place("lab-no-port", match=f"{lab.exporter}/board1/NetworkPowerPort")
    target = discover().build(f"serial-board,place={place},coordinator={lab.address},"
                              "power_cycle=false")
    reason = target.availability().reason
    assert not target.availability().available
    assert f"labgrid place {place!r}" in reason and "exactly one serial port" in reason
    assert lab.holder(place) is None  # not kept for the rest of the run


def test_place_options_are_checked() -> None:
    from harness.driver.registry import discover

    registry = discover()
    with pytest.raises(TypeError, match="need place=NAME"):
        registry.build("serial-board,url=socket://127.0.0.1:9,wait=5")
    with pytest.raises(TypeError, match="not both"):
        registry.build("serial-board,url=socket://127.0.0.1:9,place=p")
    saved = os.environ.pop("LG_COORDINATOR", None)
    try:
        target = registry.build("serial-board,place=p")
        assert not target.availability().available
        assert "LG_COORDINATOR" in target.availability().reason
    finally:
        if saved is not None:
            os.environ["LG_COORDINATOR"] = saved


@pytest.fixture(scope="module")
def troubled_lab() -> Iterator[Lab]:
    """Board 0 hangs after 12 requests; the exporter is stopped by the last test."""
    with running_lab(boards=2, sim_args={0: ["--mute-after", "12"]}) as started:
        yield started


FAST_GIVE_UP = "timeout=0.5,retries=1,infer_timeout=2,load_timeout=5"


@pytest.mark.slow
def test_a_board_lost_on_a_place_is_power_cycled_once_and_blamed_on_the_lab(
        troubled_lab: Lab, tmp_path: Path) -> None:
    lab = troubled_lab
    place = lab.create_place("lab-lost", board=0)
    done = _run(lab, tmp_path, f"serial-board,place={place},{FAST_GIVE_UP}",
                "-k", "test_abs or test_relu")
    records = _records(tmp_path)
    statuses = [r["status"] for r in records]
    assert "infra_error" in statuses, done.stdout[-2000:]
    first_lost = statuses.index("infra_error")
    assert set(statuses[first_lost:]) == {"infra_error"}  # never the chip's failure
    assert not {"fail", "error", "crash"} & set(statuses)
    cycled = [r for r in records if "power-cycled after the device was declared lost"
              in json.dumps(r)]
    assert len(cycled) == 1
    assert lab.power.switched(0) == ["off", "on", "off", "on"]  # before the run, after loss
    assert lab.wait_free(place)


@pytest.mark.slow
def test_an_exporter_gone_mid_run_is_infra_error(troubled_lab: Lab, tmp_path: Path) -> None:
    lab = troubled_lab
    place = lab.create_place("lab-gone", board=1)
    argv = [sys.executable, "-m", "harness", "run", "--results-dir",
            str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"),
            "--suite", "operators", "-k", "test_abs or test_relu or test_add",
            "--target", f"serial-board,place={place},{FAST_GIVE_UP}"]
    proc = subprocess.Popen(argv, cwd=REPO, env=lab.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            results = tmp_path / "results"
            runs = [p for p in results.iterdir() if p.is_dir()] if results.exists() else []
            if runs and (runs[0] / "records.jsonl").exists() and \
                    len((runs[0] / "records.jsonl").read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        lab.stop_exporter()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    statuses = [r["status"] for r in _records(tmp_path)]
    assert "infra_error" in statuses, output[-2000:]
    first_gone = statuses.index("infra_error")
    assert first_gone >= 3 and set(statuses[:first_gone]) <= {"pass", "xfail"}, output[-2000:]
    assert set(statuses[first_gone:]) == {"infra_error"}, output[-2000:]
    assert lab.wait_free(place)


@pytest.mark.slow
def test_a_framework_worker_runs_on_a_place_s_ssh_host(tmp_path: Path) -> None:
    import getpass

    import numpy as np
    from onnx import TensorProto, helper

    from harness.driver.registry import discover
    from harness.isolation.host import ProcessHost
    from harness.lab.hosts import ssh_host
    from tests.lab_support import running_sshd

    with running_sshd() as sshd:
        service = (f"host0:\n  NetworkService:\n    address: 127.0.0.1\n"
                   f"    username: {getpass.getuser()}\n    port: {sshd.port}\n")
        with running_lab(boards=0, extra_groups=service) as host_lab:
            place = host_lab.create_place("lab-host", group="host0", tags={"arch": "x86_64"})
            with acquire_place(place, host_lab.address) as held:
                host = ssh_host(held)
                assert host.identity == {
                    "place": place, "resource": f"{host_lab.exporter}/host0/NetworkService/"
                    "NetworkService", "address": "127.0.0.1",
                    "username": getpass.getuser(), "port": sshd.port}
                launcher = host.launcher(python=sys.executable, pythonpath=str(REPO),
                                         ssh=sshd.client)
                worker = ProcessHost(discover().spec("onnxruntime-cpu"), launcher=launcher)
                try:
                    node = helper.make_node("Abs", ["x"], ["y"])
                    graph = helper.make_graph(
                        [node], "abs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [3])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
                    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
                    worker.compile("abs", model.SerializeToString(), 60)
                    outputs, _ = worker.run("abs", {"x": np.array([-1, 2, -3], np.float32)},
                                            60)
                    assert np.array_equal(next(iter(outputs.values())), [1, 2, 3])
                    # the worker is the ssh server's child, not this process's
                    assert "sshd" in _ancestry(worker.worker_info["pid"])
                finally:
                    worker.close()


def _ancestry(pid: int) -> str:
    """The command lines of ``pid``'s ancestors, joined."""
    lines = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("PPid:")))
        with_args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        lines.append(with_args.decode(errors="replace"))
    return " | ".join(lines)


# -- one way to ask a labgrid child (harness.lab.coordinator.child_answer) -------------
def test_a_child_s_last_json_line_is_its_answer(tmp_path: Path) -> None:
    from harness.lab.coordinator import child_answer

    answer = tmp_path / "answer.json"
    answer.write_text('{"places": []}', encoding="utf-8")
    assert child_answer(["json.tool", "--compact", str(answer)], "reading") == {"places": []}


@pytest.mark.parametrize(("said", "kind"), [
    ('{"error": "no such place", "unreachable": false}', LabError),
    ('{"error": "cannot reach it", "unreachable": true}', LabUnavailable),
])
def test_a_child_s_error_answer_is_raised(tmp_path: Path, said: str, kind: type) -> None:
    from harness.lab.coordinator import child_answer

    answer = tmp_path / "answer.json"
    answer.write_text(said, encoding="utf-8")
    with pytest.raises(kind, match=json.loads(said)["error"]) as caught:
        child_answer(["json.tool", "--compact", str(answer)], "reading")
    assert kind is LabUnavailable or not isinstance(caught.value, LabUnavailable)


def test_a_child_that_says_nothing_readable_or_hangs_is_named() -> None:
    from harness.lab.coordinator import child_answer

    with pytest.raises(LabUnavailable, match="reading the lab at x:1 failed: .*No module"):
        child_answer(["harness.lab.no_such_child"], "reading the lab at x:1")
    with pytest.raises(LabUnavailable, match=r"reserving places at x:1: no answer within 0.5 s"):
        child_answer(["timeit", "-n", "1", "import time; time.sleep(30)"],
                     "reserving places at x:1", timeout=0.5)
