"""The sensors suite against the IMU and ultrasonic simulators: clean, each
passes; with one fault injected, exactly the check for that fault reports it,
and its count equals what the simulator injected over the captured sequence
range (read from the simulator's event log).

One ``shipei run`` covers a whole matrix of simulators (one target each), so the
suite's startup is paid once. The default matrix has the IMU with every fault
and the ranger clean and with noise (its own accuracy check); the rest of the ranger's
faults run with ``--run-slow`` (the fault code is shared with the IMU's; only the
payload differs). The matrix's run takes most of a minute, so the module is in the
``extended`` tier: CI runs it after the default run (``--run-extended``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from targets.serial.groundtruth import FigureEight, write_csv
from targets.serial.sim.launch import SimProcess

pytest.importorskip("serial")
pytestmark = pytest.mark.extended

REPO = Path(__file__).resolve().parent.parent
CASES = ("test_protocol_conformance", "test_frame_integrity", "test_dropped_frames",
         "test_sample_rate", "test_timing_jitter", "test_stalls", "test_timestamps_monotonic",
         "test_accuracy", "test_link_stability", "test_reconnect")
RATE_HZ = {"imu": 400, "ultrasonic": 100}
CAPTURE_S = 1.5

#: fault -> (value: a rate in events per second, or a magnitude; the case that must
#: report it; that case's status)
FAULTS: dict[str, tuple[float, str, str]] = {
    "bit_errors": (4.0, "test_frame_integrity", "fail"),
    "dropped_bytes": (4.0, "test_frame_integrity", "fail"),
    "truncate": (4.0, "test_frame_integrity", "fail"),
    "garbage": (4.0, "test_frame_integrity", "fail"),
    "drop": (4.0, "test_dropped_frames", "fail"),
    "stall": (1.0, "test_stalls", "fail"),
    "disconnect": (1.0, "test_link_stability", "infra_error"),
    "clock_glitch": (2.0, "test_timestamps_monotonic", "fail"),
    "drift": (0.05, "test_sample_rate", "fail"),
    "jitter": (0.2, "test_timing_jitter", "fail"),
    "noise": (4.0, "test_accuracy", "fail"),
}
PER_SECOND = {"bit_errors", "dropped_bytes", "truncate", "garbage", "drop", "stall",
              "disconnect", "clock_glitch"}
DEFAULT = {"imu": [None, *FAULTS], "ultrasonic": [None, "noise"]}
SLOW = {"ultrasonic": [f for f in FAULTS if f not in DEFAULT["ultrasonic"]]}


def scenario_name(sensor: str, fault: str | None) -> str:
    return f"{sensor}-{fault or 'clean'}"


def scenarios(matrix: dict[str, list]) -> list[str]:
    return [scenario_name(s, f) for s, faults in matrix.items() for f in faults]


def params(*faults: str):
    """(name) parameters for these faults on both sensors, slow where they are."""
    found = []
    for sensor in RATE_HZ:
        for fault in faults:
            name = scenario_name(sensor, fault)
            slow = name in scenarios(SLOW)
            found.append(pytest.param(name, marks=[pytest.mark.slow] if slow else []))
    return found


class SuiteRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.labels: dict[str, str] = {}
        self.records: list[dict] = []
        self.returncode: int | None = None

    def events(self, name: str, kind: str, seq_range: dict) -> list[dict]:
        path = self.root / f"{name}.jsonl"
        every = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
        first, last = seq_range["seq_first"], seq_range["seq_last"]
        return [e for e in every if e["kind"] == kind and first <= e["seq"] <= last]

    def cases(self, name: str) -> dict[str, dict]:
        return {r["case"]: r for r in self.records if r["target"] == self.labels[name]}

    def metrics(self, name: str, case: str) -> dict:
        return self.cases(name)[case]["metrics"]

    def seq_range(self, name: str) -> dict:
        return self.metrics(name, "test_dropped_frames")


def run_matrix(root: Path, matrix: dict[str, list], extras: bool) -> SuiteRun:
    run = SuiteRun(root)
    sims: dict[str, SimProcess] = {}
    try:
        for sensor, faults in matrix.items():
            for fault in faults:
                name = scenario_name(sensor, fault)
                args = ["--link", str(root / name), "--seed", "7", "--stall-ms", "500",
                        "--rate", str(RATE_HZ[sensor]), "--events", str(root / f"{name}.jsonl")]
                if fault:
                    value = FAULTS[fault][0]
                    value = value / RATE_HZ[sensor] if fault in PER_SECOND else value
                    args += ["--fault", f"{fault}={value:g}"]
                sims[name] = SimProcess(sensor, *args, log=root / f"{name}.log", lifetime=400)
        for name, sim in sims.items():  # they started side by side; now ask where
            sensor = name.split("-")[0]
            run.labels[name] = f"serial-{sensor},url={sim.url},capture_s={CAPTURE_S}"
        if extras:
            truth_ok, truth_wrong = root / "truth.csv", root / "wrong-truth.csv"
            export = subprocess.run(
                [sys.executable, "-m", "harness", "sim", "imu", "--export-truth", str(truth_ok),
                 "--truth-span", "0:300", "--truth-rate", "250"],
                cwd=REPO, capture_output=True, text=True, timeout=120)
            assert export.returncode == 0, export.stderr
            write_csv(truth_wrong, FigureEight(radius_m=0.8), 0.0, 300.0, 250.0)
            clean = sims["imu-clean"].url
            run.labels["recorded-truth"] = f"serial-imu,url={clean},capture_s=1,truth={truth_ok}"
            run.labels["wrong-truth"] = f"serial-imu,url={clean},capture_s=1,truth={truth_wrong}"
            run.labels["not-a-sensor"] = "onnxruntime-cpu"
        argv = [sys.executable, "-m", "harness", "run", "--suite", "sensors",
                "--results-dir", str(root / "results"), "--reports-dir", str(root / "reports")]
        for label in run.labels.values():
            argv += ["--target", label]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
        run.returncode = proc.returncode
        (records_file,) = (root / "results").glob("*/records.jsonl")
        run.records = [json.loads(line) for line in records_file.read_text().splitlines()]
    finally:
        for sim in sims.values():
            sim.stop()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    done: dict[str, SuiteRun] = {}

    def get(name: str) -> SuiteRun:
        if "-" in name:  # a scenario: find its matrix
            name = "slow" if name in scenarios(SLOW) else "default"
        if name not in done:
            matrix = SLOW if name == "slow" else DEFAULT
            done[name] = run_matrix(tmp_path_factory.mktemp(f"sensors-{name}"), matrix,
                                    extras=name == "default")
        return done[name]

    return get


def test_the_run_records_every_case_for_every_target(runs):
    run = runs("default")
    assert run.returncode == 1  # the fault scenarios fail, as they must
    for name in run.labels:
        assert set(run.cases(name)) == set(CASES), name


def test_each_sensor_case_records_the_time_it_took(runs):
    """The checks conclude outcomes they timed themselves: each record still says how long
    its test took (the summary showed 0.0 s for every sensor case), and the capture the
    first case waits for is in that case's time."""
    run = runs("default")
    clean = list(run.cases("imu-clean").values())
    assert clean and all(r["duration_s"] > 0 for r in clean)
    assert max(r["duration_s"] for r in clean) >= CAPTURE_S


@pytest.mark.parametrize("name", [
    *scenarios(DEFAULT), *[pytest.param(n, marks=pytest.mark.slow) for n in scenarios(SLOW)]])
def test_exactly_the_injected_fault_is_reported(runs, name):
    fault = name.split("-", 1)[1]
    cases = runs(name).cases(name)
    reported = {c: r["status"] for c, r in cases.items() if r["status"] != "pass"}
    expected = {} if fault == "clean" else {FAULTS[fault][1]: FAULTS[fault][2]}
    assert reported == expected, {c: cases[c]["message"] for c in reported}


@pytest.mark.parametrize("name", params("bit_errors", "dropped_bytes", "truncate"))
def test_every_damaged_frame_is_detected_and_counted(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_frame_integrity")
    injected = {e["seq"] for e in run.events(name, name.split("-", 1)[1], metrics)}
    assert injected and metrics["damaged_frames"] == len(injected)
    assert metrics["dropped_frames"] == 0 and metrics["garbage_bytes"] == 0


@pytest.mark.parametrize("name", params("garbage"))
def test_line_noise_is_counted_byte_for_byte(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_frame_integrity")
    injected = run.events(name, "garbage", metrics)
    assert injected and metrics["garbage_bytes"] == sum(e["nbytes"] for e in injected)
    assert metrics["damaged_frames"] == 0


@pytest.mark.parametrize("name", params("drop"))
def test_dropped_frames_are_counted_by_sequence_number(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_dropped_frames")
    injected = run.events(name, "drop", metrics)
    assert injected and metrics["dropped_frames"] == len(injected)
    assert metrics["damaged_frames"] == 0


@pytest.mark.parametrize("name", params("drift"))
def test_clock_drift_is_measured(runs, name):
    run = runs(name)
    assert run.metrics(name, "test_sample_rate")["deviation"] == pytest.approx(0.05, abs=0.005)
    clean = runs("default").metrics(name.split("-")[0] + "-clean", "test_sample_rate")
    assert abs(clean["deviation"]) < clean["tolerance"]


@pytest.mark.parametrize("name", params("jitter"))
def test_jitter_is_measured(runs, name):
    run = runs(name)
    assert 0.2 < run.metrics(name, "test_timing_jitter")["jitter_rms"] < 0.32  # about 0.27
    clean = runs("default").metrics(name.split("-")[0] + "-clean", "test_timing_jitter")
    assert clean["jitter_rms"] < 0.01


@pytest.mark.parametrize("name", params("stall"))
def test_stalls_are_counted(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_stalls")
    injected = run.events(name, "stall", run.seq_range(name))
    assert injected and metrics["stalls"] == len(injected)
    assert all(0.4 < gap < 0.9 for gap in metrics["stall_gaps_s"])


@pytest.mark.parametrize("name", params("clock_glitch"))
def test_timestamp_glitches_are_counted(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_timestamps_monotonic")
    injected = run.events(name, "clock_glitch", run.seq_range(name))
    assert injected and metrics["timestamp_backsteps"] == len(injected)


@pytest.mark.parametrize("name", params("disconnect"))
def test_disconnects_are_counted_and_ridden_out(runs, name):
    run = runs(name)
    metrics = run.metrics(name, "test_link_stability")
    injected = run.events(name, "disconnect", run.seq_range(name))
    assert injected and metrics["link_drops"] == len(injected)
    assert not metrics["aborted"] and metrics["reconnects"] == len(injected)
    assert "bench's" in run.cases(name)["test_link_stability"]["message"]


@pytest.mark.parametrize("name", params("noise"))
def test_noise_shows_in_accuracy_against_ground_truth(runs, name):
    run = runs(name)
    limit = "accel_rms" if name.startswith("imu") else "distance_rms_mm"
    metrics = run.metrics(name, "test_accuracy")
    measured, allowed = metrics[f"{limit}_measured"], metrics[f"{limit}_limit"]
    assert measured == pytest.approx(4 * allowed, rel=0.25)  # noise=4 x the declared rms
    clean = runs("default").metrics(name.split("-")[0] + "-clean", "test_accuracy")
    assert clean[f"{limit}_measured"] < clean[f"{limit}_limit"] / 2


def test_a_reference_recording_serves_as_ground_truth(runs):
    run = runs("default")
    good = run.cases("recorded-truth")["test_accuracy"]
    assert good["status"] == "pass" and good["metrics"]["truth"].startswith("recording ")
    wrong = run.cases("wrong-truth")["test_accuracy"]
    assert wrong["status"] == "fail" and "rms error" in wrong["message"]


def test_a_target_that_is_no_sensor_is_skipped_with_its_reason(runs):
    cases = runs("default").cases("not-a-sensor")
    assert {r["status"] for r in cases.values()} == {"skip"}
    assert "not a streaming sensor target" in cases["test_accuracy"]["message"]


def test_reconnect_resumes_the_stream(runs):
    metrics = runs("default").metrics("imu-clean", "test_reconnect")
    assert metrics["seq_after"] > metrics["seq_before"]
    assert not metrics["device_reset_on_reconnect"] and metrics["resumed_after_s"] < 3
