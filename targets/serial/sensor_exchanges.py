"""The protocol-level exchanges of a serial sensor: conformance and reconnect.

What they check is the serial protocol's own business (docs/protocol.md): the
IDENTITY fields, PING's echo, the refusal of unknown and board-only messages,
STREAM_START/STREAM_STOP and their sequence numbers. The sensor suite receives
the findings (:class:`~harness.driver.sensor.ConformanceReport`, a
:class:`~harness.driver.sensor.ReconnectTrial`) and judges them without knowing the wire.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from harness.driver.sensor import ConformanceReport, ReconnectTrial, SampleEvent
from targets.serial.protocol import DeviceClass, MsgType, PayloadType

if TYPE_CHECKING:
    from targets.serial.sensors import SensorLinkSession, SerialSensorTarget

#: no message has this type in the protocol
UNKNOWN_TYPE = 0x7E
MIN_SAMPLES = 5
PAYLOAD_OF = {"imu": PayloadType.IMU6, "ultrasonic": PayloadType.RANGE}


def wait_samples(session: SensorLinkSession, count: int, within: float) -> list[SampleEvent]:
    """Receive until ``count`` samples are in the session's sink or ``within`` passed."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        session.receive(min(0.05, deadline - time.perf_counter()))
        samples = [e for e in session.sink if isinstance(e, SampleEvent)]
        if len(samples) >= count:
            return samples
    return [e for e in session.sink if isinstance(e, SampleEvent)]


def _identity_problems(session: SensorLinkSession, sensor: str) -> list[str]:
    problems = []
    ident = session.identify()
    if ident.device_class != DeviceClass.SENSOR:
        problems.append(f"IDENTITY device class {ident.device_class}, a sensor is "
                        f"{int(DeviceClass.SENSOR)}")
    for name in ("vendor", "model", "firmware"):
        if not getattr(ident, name).strip():
            problems.append(f"IDENTITY has an empty {name}")
    if ident.capabilities.get("sensor") != sensor:
        problems.append(f"IDENTITY declares sensor {ident.capabilities.get('sensor')!r}")
    return problems


def _request_problems(session: SensorLinkSession) -> list[str]:
    problems = []
    probe = os.urandom(32)
    if session.ping(probe) != probe:
        problems.append("PONG did not echo the PING payload")
    refusal = session.refusal(UNKNOWN_TYPE)
    if refusal != "UNKNOWN_TYPE":
        problems.append(f"message type 0x{UNKNOWN_TYPE:02X}: expected ERROR UNKNOWN_TYPE, "
                        f"got {refusal}")
    refusal = session.refusal(MsgType.LOAD_BEGIN, bytes(38))
    if refusal != "NOT_SUPPORTED":
        problems.append(f"LOAD_BEGIN to a sensor: expected ERROR NOT_SUPPORTED, got {refusal}")
    return problems


def conformance(target: SerialSensorTarget) -> ConformanceReport:
    """IDENTIFY, PING, refusals, STREAM_START/STOP as docs/protocol.md specifies."""
    info = target.info()
    period = 1.0 / info.rate_hz
    with target.session() as session:
        problems = _identity_problems(session, info.sensor) + _request_problems(session)
        started = session.start()
        if abs(started.rate_hz - info.rate_hz) > 1e-3:
            problems.append(f"STREAM_STARTED reports {started.rate_hz:g} Hz, IDENTITY "
                            f"declares {info.rate_hz:g} Hz")
        within = 2.0 + 10 * period
        samples = wait_samples(session, MIN_SAMPLES, within)
        if len(samples) < MIN_SAMPLES:
            problems.append(f"{len(samples)} samples within {within:.2f} s of STREAM_STARTED")
        if samples and samples[0].seq < started.next_seq:
            problems.append(f"first sample seq {samples[0].seq} before the announced "
                            f"{started.next_seq}")
        wrong = {s.payload_type for s in samples} - {int(PAYLOAD_OF[info.sensor])}
        if wrong:
            problems.append(f"samples of payload type(s) {sorted(wrong)} from a {info.sensor}")
        problems += [e.problem for e in session.sink if e.kind == "protocol"]
        stopped = session.stop()
        received = [e for e in session.sink if isinstance(e, SampleEvent)]
        if received and (stopped.last_seq is None or stopped.last_seq < received[-1].seq):
            problems.append(f"STREAM_STOPPED reports last seq {stopped.last_seq}, but "
                            f"{received[-1].seq} arrived")
        session.drain()
        session.receive(max(5 * period, 0.1))
        late = [e for e in session.sink if isinstance(e, SampleEvent)]
        if late:
            problems.append(f"{len(late)} samples after STREAM_STOPPED")
    metrics: dict[str, Any] = {"samples": len(received)}
    return ConformanceReport(problems, metrics)


def reconnect_trial(target: SerialSensorTarget) -> ReconnectTrial:
    """Stream, let go of the line without STREAM_STOP (as if unplugged), reconnect,
    IDENTIFY, STREAM_START and stream again."""
    info = target.info()
    wait = 2.0 + 10 / info.rate_hz
    with target.session() as session:
        session.start()
        before = wait_samples(session, MIN_SAMPLES, wait)
        session.drain()
        session.close()
        pulled = time.perf_counter()
        session.reconnect(target.reconnect_timeout)
        session.identify()
        restarted = session.start()
        after = wait_samples(session, MIN_SAMPLES, wait)
        resumed_s = time.perf_counter() - pulled
        session.stop()
    return ReconnectTrial(before, after, restarted, resumed_s)
