"""Sensor cases run in the target's worker like every case: through Host.compile and
Host.call, bounded by the case timeout, and their results cross the real worker wire."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.driver.sensor import (
    SESSION_MODEL,
    Capture,
    ConformanceReport,
    DamageEvent,
    LinkDropEvent,
    ReconnectTrial,
    SampledTruth,
    SampleEvent,
    SensorClient,
    SensorInfo,
    SensorSession,
    StartEvent,
    StopEvent,
    StrayEvent,
    to_wire,
)
from harness.driver.target import UnsupportedModelError
from harness.isolation import wire
from harness.isolation.host import InlineHost
from targets.serial.sensors import SerialSensorTarget
from targets.serial.sim.launch import SimProcess

pytest.importorskip("serial")


def through_the_wire(value: object) -> object:
    header, buffers = wire.encode(to_wire(value))
    return wire.decode(header, [memoryview(b) for b in buffers])


def test_capture_types_cross_the_worker_wire_intact():
    sample = SampleEvent(1.5, 7, 1000, 1, {"ax": 0.5}, True)
    capture = Capture("imu", 400.0, 47, 1.0, [
        StartEvent(1.0, 7, 400.0), sample, DamageEvent(1.6, "crc", 47, 0xC0, 8, True),
        StrayEvent(1.7, 3), LinkDropEvent(1.8, "eof", 12), StopEvent(1.9, None)],
        link_stats={"reconnects": 1, "receiver": {"frames": 3}})
    assert Capture.from_wire(through_the_wire(capture)) == capture
    info = SensorInfo("imu", 400.0, 47, 0.01, 0.05, 0.3, {"accel_rms": (("ax", "ay"), 0.06)},
                      {"sensor": "imu"})
    assert SensorInfo.from_wire(through_the_wire(info)) == info
    report = ConformanceReport(["a problem"], {"samples": 5})
    assert ConformanceReport.from_wire(through_the_wire(report)) == report
    trial = ReconnectTrial([sample], [sample], StartEvent(2.0, 9, 400.0), 0.25)
    assert ReconnectTrial.from_wire(through_the_wire(trial)) == trial


def test_sampled_truth_returns_its_samples_and_interpolates_between_them():
    truth = SampledTruth("line", np.array([0.0, 1.0, 2.0]), {"d": np.array([0.0, 10.0, 20.0])})
    np.testing.assert_array_equal(truth.at(np.array([0.0, 1.0, 2.0]))["d"], [0, 10, 20])
    got = truth.at(np.array([0.5, 3.0]))["d"]
    assert got[0] == 5.0 and np.isnan(got[1])


def test_a_sensor_compiles_only_a_session_and_runs_no_models():
    target = SerialSensorTarget(sensor="imu", url="socket://127.0.0.1:9")
    assert isinstance(target.compile(SESSION_MODEL), SensorSession)
    with pytest.raises(UnsupportedModelError, match="runs no models"):
        target.compile(b"\x08\x07")


def test_exchanges_run_through_the_host(tmp_path):
    with SimProcess("imu", "--rate", "200", log=tmp_path / "imu.log", lifetime=120) as sim:
        target = SerialSensorTarget(sensor="imu", url=sim.url, capture_s=0.5)
        client = SensorClient(InlineHost(target), timeout=30)
        info = client.info()
        assert info.sensor == "imu" and info.rate_hz == 200
        capture = client.capture()
        assert len(capture.samples) > 50
        truth = client.truth_at(np.array([s.timestamp_us / 1e6 for s in capture.samples]))
        assert truth is not None and set(truth.values) >= {"ax", "gz"}
        assert client.conformance().problems == []
        assert client.reconnect_trial().after


@pytest.mark.extended
def test_a_sensor_exchange_past_the_case_timeout_is_a_timeout_and_costs_one_capture(
        shipei_cli, tmp_path):
    """The declared case timeout is enforced: a capture longer than it is cut off by
    the worker being killed, recorded as ``timeout``, and the run goes on. The timeout is
    generous (a busy machine still answers the short exchanges within it) and the capture
    ten times longer than the whole run may take."""
    with SimProcess("imu", "--link", str(tmp_path / "imu"), log=tmp_path / "imu.log",
                    lifetime=400) as sim:
        started = time.monotonic()
        result = shipei_cli("run", "--suite", "sensors", "--case-timeout", "15",
                            "-k", "frame_integrity or dropped_frames or protocol_conformance",
                            "--target", f"serial-imu,url={sim.url},capture_s=3000",
                            timeout=300)
        elapsed = time.monotonic() - started
    records = {r["case"]: r for r in result.records()}
    assert records["test_protocol_conformance"]["status"] == "pass"
    assert records["test_frame_integrity"]["status"] == "timeout"
    assert "timeout" in records["test_frame_integrity"]["message"]
    assert records["test_dropped_frames"]["status"] == "timeout"  # the same capture
    assert result.returncode == 1 and elapsed < 300  # the capture was cut off
