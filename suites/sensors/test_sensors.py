"""Sensor conformance: protocol, frame integrity, dropped frames, sample rate,
jitter, stalls, timestamps, accuracy against ground truth, link behaviour.

Run it on a sensor target (a simulator, or a real sensor on a serial port)::

    shipei run --suite sensors --target serial-imu,url=/dev/ttyUSB0
    shipei run --suite sensors --target serial-ultrasonic,url=socket://127.0.0.1:5555

The sensor runs in its target's worker like every target (``harness.driver.sensor``):
each exchange is one ``Host.call`` bounded by the case timeout. One capture of
``capture_s`` seconds per target feeds the stream checks; the protocol and
reconnect checks open sessions of their own. Every check records one case
through ``target.conclude``. A dropped link is ``infra_error`` (the bench's
failure), a device that breaks the protocol or its declared limits ``fail``, one
that does not answer ``error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.cases.case import Outcome, outcome_from_exception
from harness.driver.sensor import SensorClient
from harness.isolation.host import RemoteError
from suites.sensors import checks, exchanges
from suites.sensors.checks import SUITE

pytestmark = pytest.mark.case_timeout(120)

#: per target label: the capture and the declared info, or the Outcome that replaced them
_CAPTURES: dict[str, Any] = {}


def _client(target: Any, case: str) -> SensorClient | None:
    """The sensor behind the fixture, or None (the case is then concluded: skipped
    for a target that is no sensor, else with what went wrong)."""
    client = SensorClient(target.host, target.timeout())
    started = time.perf_counter()
    try:
        client.open()
        client.info()
    except RemoteError as exc:
        if exc.phase == "compile" or exc.exc_type == "NotASensorError":
            first = exc.message.strip().splitlines()[0][:200] if exc.message.strip() else ""
            target.conclude(SUITE, case, Outcome(
                "skip", f"{target.label} is not a streaming sensor target ({exc.exc_type}: "
                        f"{first})"))
        else:
            target.conclude(SUITE, case, outcome_from_exception(exc, started))
        return None
    except exchanges.HOST_FAILURES as exc:
        target.conclude(SUITE, case, outcome_from_exception(exc, started))
        return None
    return client


def _capture(target: Any, client: SensorClient) -> Any:
    """The target's (capture, info), made once per run; an Outcome if it failed."""
    if target.label not in _CAPTURES:
        started = time.perf_counter()
        try:
            _CAPTURES[target.label] = (client.capture(), client.info())
        except exchanges.HOST_FAILURES as exc:
            outcome = outcome_from_exception(exc, started)
            _CAPTURES[target.label] = Outcome(outcome.status, f"capture: {outcome.message}")
    return _CAPTURES[target.label]


def _stream_check(target: Any, case: str, check: Callable[[Any, Any], Outcome]) -> None:
    client = _client(target, case)
    if client is None:
        return
    captured = _capture(target, client)
    if isinstance(captured, Outcome):
        outcome = Outcome(captured.status, captured.message)
    else:
        capture, info = captured
        outcome = check(capture, info)
    target.conclude(SUITE, case, outcome)


def test_protocol_conformance(target: Any) -> None:
    client = _client(target, "test_protocol_conformance")
    if client is not None:
        target.conclude(SUITE, "test_protocol_conformance", exchanges.run_with_one_retry(
            client.conformance, exchanges.judge_conformance, "protocol conformance",
            time.perf_counter()))


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
    client = _client(target, "test_accuracy")
    if client is None:
        return
    captured = _capture(target, client)
    if isinstance(captured, Outcome):
        target.conclude(SUITE, "test_accuracy", Outcome(captured.status, captured.message))
        return
    capture, info = captured
    started = time.perf_counter()
    try:
        truth = client.truth_at(checks.truth_times(capture))
    except exchanges.HOST_FAILURES as exc:
        outcome = outcome_from_exception(exc, started)
        target.conclude(SUITE, "test_accuracy",
                        Outcome(outcome.status, f"ground truth: {outcome.message}"))
        return
    target.conclude(SUITE, "test_accuracy", checks.accuracy(capture, info, truth))


def test_link_stability(target: Any) -> None:
    _stream_check(target, "test_link_stability", checks.link_stability)


def test_reconnect(target: Any) -> None:
    client = _client(target, "test_reconnect")
    if client is not None:
        target.conclude(SUITE, "test_reconnect", exchanges.run_with_one_retry(
            client.reconnect_trial, exchanges.judge_reconnect, "disconnect and reconnect",
            time.perf_counter()))
