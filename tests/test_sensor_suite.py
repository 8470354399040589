"""The sensors suite against the IMU and ultrasonic simulators: clean, each
passes; with one fault injected, exactly the check for that fault reports it,
and its count equals what the simulator injected over the captured sequence
range (read from the simulator's event log).

One ``shipei run`` covers every simulator (one target each), so the suite's
startup is paid once.
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

REPO = Path(__file__).resolve().parent.parent
CASES = ("test_protocol_conformance", "test_frame_integrity", "test_dropped_frames",
         "test_sample_rate", "test_timing_jitter", "test_stalls", "test_timestamps_monotonic",
         "test_accuracy", "test_link_stability", "test_reconnect")

#: simulator name -> (sensor, faults, the case that must report it, its status)
SCENARIOS: dict[str, tuple[str, list[str], str | None, str]] = {
    "imu-clean": ("imu", [], None, "pass"),
    "imu-bit_errors": ("imu", ["bit_errors=0.01"], "test_frame_integrity", "fail"),
    "imu-dropped_bytes": ("imu", ["dropped_bytes=0.01"], "test_frame_integrity", "fail"),
    "imu-truncate": ("imu", ["truncate=0.01"], "test_frame_integrity", "fail"),
    "imu-garbage": ("imu", ["garbage=0.01"], "test_frame_integrity", "fail"),
    "imu-drop": ("imu", ["drop=0.01"], "test_dropped_frames", "fail"),
    "imu-drift": ("imu", ["drift=0.05"], "test_sample_rate", "fail"),
    "imu-jitter": ("imu", ["jitter=0.2"], "test_timing_jitter", "fail"),
    "imu-stall": ("imu", ["stall=0.002"], "test_stalls", "fail"),
    "imu-noise": ("imu", ["noise=4"], "test_accuracy", "fail"),
    "imu-disconnect": ("imu", ["disconnect=0.002"], "test_link_stability", "infra_error"),
    "imu-clock_glitch": ("imu", ["clock_glitch=0.005"], "test_timestamps_monotonic", "fail"),
    "ultrasonic-clean": ("ultrasonic", [], None, "pass"),
    "ultrasonic-noise": ("ultrasonic", ["noise=4"], "test_accuracy", "fail"),
    "ultrasonic-drop": ("ultrasonic", ["drop=0.05"], "test_dropped_frames", "fail"),
}
CAPTURE_S = {"imu": 1.5, "ultrasonic": 2.0}


class SuiteRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sims: dict[str, SimProcess] = {}
        self.labels: dict[str, str] = {}
        self.records: list[dict] = []
        self.proc: subprocess.CompletedProcess | None = None

    def events(self, name: str) -> list[dict]:
        path = self.root / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []

    def cases(self, name: str) -> dict[str, dict]:
        return {r["case"]: r for r in self.records if r["target"] == self.labels[name]}


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sensors")
    run = SuiteRun(root)
    truth_ok, truth_wrong = root / "truth.csv", root / "wrong-truth.csv"
    try:
        for name, (sensor, faults, _, _) in SCENARIOS.items():
            args = ["--link", str(root / name), "--seed", "7", "--stall-ms", "500",
                    "--events", str(root / f"{name}.jsonl")]
            for fault in faults:
                args += ["--fault", fault]
            run.sims[name] = SimProcess(sensor, *args, log=root / f"{name}.log", lifetime=400)
        export = subprocess.Popen([sys.executable, "-m", "harness", "sim", "imu",
                                   "--export-truth", str(truth_ok), "--truth-span", "0:300",
                                   "--truth-rate", "250"],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, (sensor, _, _, _) in SCENARIOS.items():  # they started side by side
            run.labels[name] = (f"serial-{sensor},url={run.sims[name].url},"
                                f"capture_s={CAPTURE_S[sensor]}")
        assert export.wait(120) == 0, export.stderr.read()
        write_csv(truth_wrong, FigureEight(radius_m=0.8), 0.0, 300.0, 250.0)
        clean = run.sims["imu-clean"].url
        run.labels["recorded-truth"] = f"serial-imu,url={clean},capture_s=1,truth={truth_ok}"
        run.labels["wrong-truth"] = f"serial-imu,url={clean},capture_s=1,truth={truth_wrong}"
        run.labels["not-a-sensor"] = "onnxruntime-cpu"
        argv = [sys.executable, "-m", "harness", "run", "--suite", "sensors",
                "--results-dir", str(root / "results"), "--reports-dir", str(root / "reports")]
        for label in run.labels.values():
            argv += ["--target", label]
        run.proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        (records_file,) = (root / "results").glob("*/records.jsonl")
        run.records = [json.loads(line) for line in records_file.read_text().splitlines()]
    finally:
        for sim in run.sims.values():
            sim.stop()
    return run


def in_range(events: list[dict], kind: str, metrics: dict) -> list[dict]:
    first, last = metrics["seq_first"], metrics["seq_last"]
    return [e for e in events if e["kind"] == kind and first <= e["seq"] <= last]


def test_the_run_records_every_case_for_every_target(suite_run):
    assert suite_run.proc.returncode == 1  # the fault scenarios fail, as they must
    for name in suite_run.labels:
        assert set(suite_run.cases(name)) == set(CASES), name


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_exactly_the_injected_fault_is_reported(suite_run, name):
    _, _, case, status = SCENARIOS[name]
    cases = suite_run.cases(name)
    reported = {c: r["status"] for c, r in cases.items() if r["status"] != "pass"}
    expected = {case: status} if case else {}
    assert reported == expected, {c: cases[c]["message"] for c in reported}


@pytest.mark.parametrize("name", ["imu-bit_errors", "imu-dropped_bytes", "imu-truncate"])
def test_every_damaged_frame_is_detected_and_counted(suite_run, name):
    metrics = suite_run.cases(name)["test_frame_integrity"]["metrics"]
    kind = name.split("-", 1)[1]
    injected = {e["seq"] for e in in_range(suite_run.events(name), kind, metrics)}
    assert injected and metrics["damaged_frames"] == len(injected)
    assert metrics["dropped_frames"] == 0 and metrics["garbage_bytes"] == 0


def test_line_noise_is_counted_byte_for_byte(suite_run):
    metrics = suite_run.cases("imu-garbage")["test_frame_integrity"]["metrics"]
    injected = in_range(suite_run.events("imu-garbage"), "garbage", metrics)
    assert injected and metrics["garbage_bytes"] == sum(e["nbytes"] for e in injected)
    assert metrics["damaged_frames"] == 0


@pytest.mark.parametrize("name", ["imu-drop", "ultrasonic-drop"])
def test_dropped_frames_are_counted_by_sequence_number(suite_run, name):
    metrics = suite_run.cases(name)["test_dropped_frames"]["metrics"]
    injected = in_range(suite_run.events(name), "drop", metrics)
    assert injected and metrics["dropped_frames"] == len(injected)
    assert metrics["damaged_frames"] == 0


def test_clock_drift_is_measured(suite_run):
    metrics = suite_run.cases("imu-drift")["test_sample_rate"]["metrics"]
    assert metrics["deviation"] == pytest.approx(0.05, abs=0.005)
    clean = suite_run.cases("imu-clean")["test_sample_rate"]["metrics"]
    assert abs(clean["deviation"]) < clean["tolerance"]


def test_jitter_is_measured(suite_run):
    metrics = suite_run.cases("imu-jitter")["test_timing_jitter"]["metrics"]
    assert 0.2 < metrics["jitter_rms"] < 0.32  # sigma 0.2 per sample, clipped: ~0.27
    clean = suite_run.cases("imu-clean")["test_timing_jitter"]["metrics"]
    assert clean["jitter_rms"] < 0.01


def test_stalls_are_counted(suite_run):
    metrics = suite_run.cases("imu-stall")["test_stalls"]["metrics"]
    injected = [e for e in suite_run.events("imu-stall") if e["kind"] == "stall"]
    first = suite_run.cases("imu-stall")["test_dropped_frames"]["metrics"]
    in_capture = in_range(injected, "stall", first)
    assert in_capture and metrics["stalls"] == len(in_capture)
    assert all(0.4 < gap < 0.9 for gap in metrics["stall_gaps_s"])


def test_timestamp_glitches_are_counted(suite_run):
    metrics = suite_run.cases("imu-clock_glitch")["test_timestamps_monotonic"]["metrics"]
    seq_range = suite_run.cases("imu-clock_glitch")["test_dropped_frames"]["metrics"]
    injected = in_range(suite_run.events("imu-clock_glitch"), "clock_glitch", seq_range)
    assert injected and metrics["timestamp_backsteps"] == len(injected)


def test_disconnects_are_counted_and_ridden_out(suite_run):
    cases = suite_run.cases("imu-disconnect")
    metrics = cases["test_link_stability"]["metrics"]
    injected = in_range(suite_run.events("imu-disconnect"), "disconnect",
                        cases["test_dropped_frames"]["metrics"])
    assert injected and metrics["link_drops"] == len(injected)
    assert not metrics["aborted"] and metrics["reconnects"] == len(injected)
    assert "bench's" in cases["test_link_stability"]["message"]


@pytest.mark.parametrize("name, limit", [("imu-noise", "accel_rms"),
                                         ("ultrasonic-noise", "distance_rms_mm")])
def test_noise_shows_in_accuracy_against_ground_truth(suite_run, name, limit):
    metrics = suite_run.cases(name)["test_accuracy"]["metrics"]
    measured, allowed = metrics[f"{limit}_measured"], metrics[f"{limit}_limit"]
    assert measured == pytest.approx(4 * allowed, rel=0.25)  # noise=4 x the declared rms
    clean = suite_run.cases(name.split("-")[0] + "-clean")["test_accuracy"]["metrics"]
    assert clean[f"{limit}_measured"] < clean[f"{limit}_limit"] / 2


def test_a_reference_recording_serves_as_ground_truth(suite_run):
    good = suite_run.cases("recorded-truth")["test_accuracy"]
    assert good["status"] == "pass" and good["metrics"]["truth"].startswith("recording ")
    wrong = suite_run.cases("wrong-truth")["test_accuracy"]
    assert wrong["status"] == "fail" and "rms error" in wrong["message"]


def test_a_target_that_is_no_sensor_is_skipped_with_its_reason(suite_run):
    cases = suite_run.cases("not-a-sensor")
    assert {r["status"] for r in cases.values()} == {"skip"}
    assert "not a streaming sensor target" in cases["test_accuracy"]["message"]


def test_reconnect_resumes_the_stream(suite_run):
    metrics = suite_run.cases("imu-clean")["test_reconnect"]["metrics"]
    assert metrics["seq_after"] > metrics["seq_before"]
    assert not metrics["device_reset_on_reconnect"] and metrics["resumed_after_s"] < 3
