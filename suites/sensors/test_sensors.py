"""Sensor conformance: protocol, frame integrity, dropped frames, sample rate,
jitter, stalls, timestamps, accuracy against ground truth, link behaviour.

Run it on a sensor target (a simulator, or a real sensor on a serial port)::

    shipei run --suite sensors --target serial-imu,url=/dev/ttyUSB0
    shipei run --suite sensors --target serial-ultrasonic,url=socket://127.0.0.1:5555

One capture of ``capture_s`` seconds per target feeds the stream checks; the
protocol and reconnect checks open sessions of their own. Every check records
one case through ``target.conclude``. A dropped link is ``infra_error`` (the
bench's failure), a device that breaks the protocol or its declared limits
``fail``, one that does not answer ``error``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.cases import Outcome
from suites.sensors import checks, exchanges
from suites.sensors.checks import SUITE

pytestmark = pytest.mark.case_timeout(120)

_CAPTURES: dict[str, Any] = {}


def _sensor(target: Any, case: str) -> Any | None:
    """The sensor behind the fixture, or None (the case is then skipped)."""
    sensor = target.target
    if sensor.identity.kind != "sensor" or not hasattr(sensor, "capture"):
        target.conclude(SUITE, case, Outcome("skip", f"{target.label} is not a streaming "
                                                     "sensor target"))
        return None
    return sensor


def _capture(target: Any, sensor: Any) -> Any:
    """The target's capture, made once per run; an Outcome if it failed."""
    if target.label not in _CAPTURES:
        try:
            _CAPTURES[target.label] = sensor.capture()
        except Exception as exc:
            _CAPTURES[target.label] = checks.failure_outcome(exc, "capture")
    return _CAPTURES[target.label]


def _stream_check(target: Any, case: str,
                  check: Callable[[Any, Any], Outcome]) -> None:
    sensor = _sensor(target, case)
    if sensor is None:
        return
    capture = _capture(target, sensor)
    if isinstance(capture, Outcome):
        outcome = Outcome(capture.status, capture.message)
    else:
        try:
            outcome = check(capture, sensor.info())
        except Exception as exc:
            outcome = checks.failure_outcome(exc, case)
    target.conclude(SUITE, case, outcome)


def test_protocol_conformance(target: Any) -> None:
    sensor = _sensor(target, "test_protocol_conformance")
    if sensor is not None:
        target.conclude(SUITE, "test_protocol_conformance", exchanges.conformance(sensor))


def test_frame_integrity(target: Any) -> None:
    _stream_check(target, "test_frame_integrity", checks.frame_integrity)


def test_dropped_frames(target: Any) -> None:
    _stream_check(target, "test_dropped_frames", checks.dropped_frames)


def test_sample_rate(target: Any) -> None:
    _stream_check(target, "test_sample_rate", checks.sample_rate)


def test_timing_jitter(target: Any) -> None:
    _stream_check(target, "test_timing_jitter", checks.timing_jitter)


def test_stalls(target: Any) -> None:
    _stream_check(target, "test_stalls", checks.stalls)


def test_timestamps_monotonic(target: Any) -> None:
    _stream_check(target, "test_timestamps_monotonic", checks.timestamps_monotonic)


def test_accuracy(target: Any) -> None:
    sensor = _sensor(target, "test_accuracy")
    if sensor is None:
        return
    try:
        truth = sensor.ground_truth()
    except Exception as exc:
        target.conclude(SUITE, "test_accuracy", checks.failure_outcome(exc, "ground truth"))
        return
    _stream_check(target, "test_accuracy",
                  lambda capture, info: checks.accuracy(capture, info, truth))


def test_link_stability(target: Any) -> None:
    _stream_check(target, "test_link_stability", checks.link_stability)


def test_reconnect(target: Any) -> None:
    sensor = _sensor(target, "test_reconnect")
    if sensor is not None:
        target.conclude(SUITE, "test_reconnect", exchanges.reconnect(sensor))
