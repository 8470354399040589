"""The sensor suite's live checks: protocol conformance and a host-side
disconnect/reconnect, each in a session of its own."""

from __future__ import annotations

import os
import time
from typing import Any

from harness.cases import Outcome
from harness.target import InfraError, TargetError
from suites.sensors.checks import failure_outcome, verdict

UNKNOWN_TYPE = 0x7E  # no message has this type in protocol version 1
LOAD_BEGIN = 0x10  # a board message: a sensor must refuse it with NOT_SUPPORTED
MIN_SAMPLES = 5


def _wait_samples(session: Any, count: int, within: float) -> list[Any]:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        session.receive(min(0.05, deadline - time.perf_counter()))
        samples = [e for e in session.sink if e.kind == "sample"]
        if len(samples) >= count:
            return samples
    return [e for e in session.sink if e.kind == "sample"]


def _conformance(sensor: Any) -> Outcome:
    info = sensor.info()
    problems: list[str] = []
    period = 1.0 / info.rate_hz
    with sensor.session() as session:
        ident = session.identify()
        if ident.device_class != 2:
            problems.append(f"IDENTITY device class {ident.device_class}, a sensor is 2")
        for name in ("vendor", "model", "firmware"):
            if not getattr(ident, name).strip():
                problems.append(f"IDENTITY has an empty {name}")
        if ident.capabilities.get("sensor") != info.sensor:
            problems.append(f"IDENTITY declares sensor {ident.capabilities.get('sensor')!r}")
        probe = os.urandom(32)
        if session.ping(probe) != probe:
            problems.append("PONG did not echo the PING payload")
        refusal = session.refusal(UNKNOWN_TYPE)
        if refusal != "UNKNOWN_TYPE":
            problems.append(f"message type 0x{UNKNOWN_TYPE:02X}: expected ERROR "
                            f"UNKNOWN_TYPE, got {refusal}")
        refusal = session.refusal(LOAD_BEGIN, bytes(38))
        if refusal != "NOT_SUPPORTED":
            problems.append(f"LOAD_BEGIN to a sensor: expected ERROR NOT_SUPPORTED, "
                            f"got {refusal}")
        started = session.start()
        if abs(started.rate_hz - info.rate_hz) > 1e-3:
            problems.append(f"STREAM_STARTED reports {started.rate_hz:g} Hz, IDENTITY "
                            f"declares {info.rate_hz:g} Hz")
        samples = _wait_samples(session, MIN_SAMPLES, 2.0 + 10 * period)
        if len(samples) < MIN_SAMPLES:
            problems.append(f"{len(samples)} samples within {2.0 + 10 * period:.2f} s of "
                            f"STREAM_STARTED")
        if samples and samples[0].seq < started.next_seq:
            problems.append(f"first sample seq {samples[0].seq} before the announced "
                            f"{started.next_seq}")
        wrong = {s.payload_type for s in samples} - {1 if info.sensor == "imu" else 2}
        if wrong:
            problems.append(f"samples of payload type(s) {sorted(wrong)} from a {info.sensor}")
        problems += [e.problem for e in session.sink if e.kind == "protocol"]
        stopped = session.stop()
        received = [e for e in session.sink if e.kind == "sample"]
        if received and (stopped.last_seq is None or stopped.last_seq < received[-1].seq):
            problems.append(f"STREAM_STOPPED reports last seq {stopped.last_seq}, but "
                            f"{received[-1].seq} arrived")
        session.drain()
        session.receive(max(5 * period, 0.1))
        late = [e for e in session.sink if e.kind == "sample"]
        if late:
            problems.append(f"{len(late)} samples after STREAM_STOPPED")
    return verdict(problems, {"samples": len(received)},
                   "IDENTIFY, PING, refusals, STREAM_START/STOP as specified")


def _reconnect(sensor: Any) -> Outcome:
    info = sensor.info()
    period = 1.0 / info.rate_hz
    wait = 2.0 + 10 * period
    problems: list[str] = []
    with sensor.session() as session:
        session.start()
        before = _wait_samples(session, MIN_SAMPLES, wait)
        if len(before) < MIN_SAMPLES:
            return Outcome("fail", f"only {len(before)} samples before the disconnect")
        session.drain()
        session.close()  # the host lets go without STREAM_STOP, as if unplugged
        pulled = time.perf_counter()
        session.reconnect(sensor.reconnect_timeout)
        session.identify()
        restarted = session.start()
        after = _wait_samples(session, MIN_SAMPLES, wait)
        resumed_s = time.perf_counter() - pulled
        session.stop()
    if len(after) < MIN_SAMPLES:
        problems.append(f"only {len(after)} samples after reconnecting")
    reset = restarted.next_seq <= before[-1].seq
    if after and not reset:
        if after[0].seq <= before[-1].seq:
            problems.append("the sequence did not continue across the reconnect")
        if after[0].timestamp_us <= before[-1].timestamp_us:
            problems.append("timestamps went backwards across the reconnect")
    metrics = {"resumed_after_s": resumed_s, "device_reset_on_reconnect": reset,
               "seq_before": before[-1].seq, "seq_after": after[0].seq if after else None}
    how = "restarted its counters" if reset else "continued its sequence and clock"
    return verdict(problems, metrics, f"stream resumed {resumed_s:.2f} s after the host "
                                      f"let go; the device {how}")


def run_with_one_retry(check: Any, sensor: Any, during: str) -> Outcome:
    """Run a live check; a link drop in the middle earns one retry, then counts."""
    for attempt in (1, 2):
        try:
            outcome = check(sensor)
            if attempt == 2:
                outcome.metrics["retried_after_link_drop"] = True
            return outcome
        except InfraError as exc:
            if attempt == 2:
                return failure_outcome(exc, during)
        except TargetError as exc:
            return Outcome("fail", f"{during}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def conformance(sensor: Any) -> Outcome:
    return run_with_one_retry(_conformance, sensor, "protocol conformance")


def reconnect(sensor: Any) -> Outcome:
    return run_with_one_retry(_reconnect, sensor, "disconnect and reconnect")
