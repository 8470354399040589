"""``serial-imu`` and ``serial-ultrasonic``: sensors streaming over a serial line.

A :class:`harness.driver.sensor.SensorTarget`: it runs no models; suites reach its
streaming API through the worker (``compile(SESSION_MODEL)`` opens a session,
``Host.call("harness.driver.sensor:...")`` runs an exchange; see :mod:`harness.driver.sensor`):

- :meth:`SerialSensorTarget.info` what the sensor declares (rate, limits);
- :meth:`SerialSensorTarget.session` a :class:`SensorLinkSession` for protocol
  exchanges (identify, ping, start, stop, raw requests, reconnect), used by
  :meth:`~SerialSensorTarget.conformance` and
  :meth:`~SerialSensorTarget.reconnect_trial` (``targets/serial/sensor_exchanges.py``);
- :meth:`SerialSensorTarget.capture` streams for ``capture_s`` seconds and
  returns a :class:`~harness.driver.sensor.Capture`: every sample with its host arrival
  time, and every damaged frame, stray byte run, link drop and stream start/stop,
  in order. A link that drops is reopened (for up to ``reconnect_timeout`` s) and
  the stream restarted, so a capture spans disconnects;
- :meth:`SerialSensorTarget.ground_truth` the truth to judge accuracy by: the
  file given as ``truth=FILE`` (a reference recording), else the model the
  device declares (simulators do), else None.

Options: ``url`` (required), ``baud``, ``timeout``, ``retries``,
``inter_byte_timeout``, ``capture_s``, ``reconnect_timeout``, ``truth``, and
overrides of the declared limits: ``rate_tolerance``, ``jitter_max``,
``max_gap_ms``, ``accel_rms``, ``gyro_rms``, ``distance_rms_mm``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness.driver.sensor import (
    Capture,
    CaptureEvent,
    ConformanceReport,
    DamageEvent,
    LinkDropEvent,
    ProtocolEvent,
    ReconnectTrial,
    SampleEvent,
    SensorInfo,
    SensorTarget,
    StartEvent,
    StopEvent,
    StrayEvent,
)
from harness.driver.target import Availability, Capabilities, TargetError, TargetIdentity
from targets.common import EXPECTATIONS_DIR, driver_version
from targets.serial import sensor_exchanges
from targets.serial.groundtruth import GroundTruth, TruthError, from_declaration, read_csv
from targets.serial.protocol import (
    NO_SEQ,
    DeviceClass,
    Frame,
    Identity,
    MsgType,
    PayloadType,
    ProtocolError,
    decode_sample,
    decode_stream_started,
    decode_u32s,
    encode_stream_start,
    error_name,
    sample_frame_size,
)
from targets.serial.receiver import Damage, Event, Stray
from targets.serial.transport import (
    DeviceError,
    DeviceProtocolError,
    LinkDropped,
    LinkError,
    LinkSettings,
    SerialLink,
)

SENSOR_PAYLOADS = {"imu": PayloadType.IMU6, "ultrasonic": PayloadType.RANGE}
#: declared-accuracy capability -> (channels it covers, factor to the channels' units)
ACCURACY_LIMITS = {
    "imu": {"accel_rms": (("ax", "ay", "az"), 1.0), "gyro_rms": (("gx", "gy", "gz"), 1.0)},
    "ultrasonic": {"distance_rms_mm": (("distance_m",), 1e-3)},
}
MAX_LINK_DROPS = 20


# -- a session ----------------------------------------------------------------------

class SensorLinkSession:
    """Protocol exchanges with a sensor over one link."""

    def __init__(self, settings: LinkSettings, sensor: str) -> None:
        self.link = SerialLink(settings)
        self.sensor = sensor
        self.sink: list[CaptureEvent] = []

    def open(self) -> None:
        self.link.open()

    def close(self) -> None:
        self.link.close()

    def reconnect(self, within: float) -> None:
        self.link.reconnect(within)

    def _on_frame(self, frame: Frame) -> None:
        self.sink.append(_sample_event(frame, time.perf_counter()))

    def _on_event(self, event: Event) -> None:
        converted = _link_event(event, time.perf_counter())
        if converted is not None:
            self.sink.append(converted)

    def request(self, msg_type: int, payload: bytes = b"") -> Frame:
        """A request whose meanwhile-arriving samples land in :attr:`sink`."""
        return self.link.request(msg_type, payload, on_frame=self._on_frame,
                                 on_event=self._on_event)

    def identify(self) -> Identity:
        frame = self.request(MsgType.IDENTIFY)
        try:
            return Identity.decode(frame.payload)
        except ProtocolError as exc:
            raise DeviceProtocolError(f"malformed IDENTITY: {exc}") from None

    def refusal(self, msg_type: int, payload: bytes = b"") -> str:
        """Send a request the device must refuse; the name of its ERROR code, or
        a description of what it did instead."""
        try:
            frame = self.request(msg_type, payload)
        except DeviceError as exc:
            return error_name(exc.code)
        return f"answered {frame.type_name} instead of ERROR"

    def ping(self, payload: bytes) -> bytes:
        return self.request(MsgType.PING, payload).payload

    def start(self, rate_hz: float = 0.0) -> StartEvent:
        frame = self.request(MsgType.STREAM_START, encode_stream_start(int(round(rate_hz * 1000))))
        try:
            rate_mhz, next_seq = decode_stream_started(frame.payload)
        except ProtocolError as exc:
            raise DeviceProtocolError(f"malformed STREAM_STARTED: {exc}") from None
        event = StartEvent(time.perf_counter(), next_seq, rate_mhz / 1000.0)
        self.sink.append(event)
        return event

    def stop(self) -> StopEvent:
        frame = self.request(MsgType.STREAM_STOP)
        try:
            (last_seq,) = decode_u32s(frame.payload, 1)
        except ProtocolError as exc:
            raise DeviceProtocolError(f"malformed STREAM_STOPPED: {exc}") from None
        event = StopEvent(time.perf_counter(), None if last_seq == NO_SEQ else last_seq)
        self.sink.append(event)
        return event

    def receive(self, seconds: float) -> None:
        """Collect stream events into :attr:`sink` for ``seconds``."""
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            for event in self.link.events(min(left, 0.1)):
                now = time.perf_counter()
                if isinstance(event, Frame):
                    if event.type == MsgType.SAMPLE:
                        self.sink.append(_sample_event(event, now))
                    else:
                        self.link.stats.stale_frames += 1
                else:
                    converted = _link_event(event, now)
                    if converted is not None:
                        self.sink.append(converted)

    def drain(self) -> list[CaptureEvent]:
        events, self.sink = self.sink, []
        return events


def _sample_event(frame: Frame, now: float) -> SampleEvent | ProtocolEvent:
    try:
        sample = decode_sample(frame)
    except ProtocolError as exc:
        return ProtocolEvent(now, f"SAMPLE seq {frame.seq}: {exc}")
    valid = getattr(sample.body, "valid", True)
    return SampleEvent(now, sample.seq, sample.timestamp_us, int(sample.payload_type),
                       sample.body.values(), valid)


def _link_event(event: Event, now: float) -> DamageEvent | StrayEvent | None:
    if isinstance(event, Damage):
        return DamageEvent(now, event.kind, event.nbytes, event.header.type, event.header.seq,
                           event.header.type == MsgType.SAMPLE)
    if isinstance(event, Stray):
        return StrayEvent(now, event.nbytes)
    return None


# -- the target -----------------------------------------------------------------------

class SerialSensorTarget(SensorTarget):
    def __init__(self, configuration: str = "default", sensor: str = "imu", url: str = "",
                 baud: int = 921600, timeout: float = 2.0, retries: int = 3,
                 inter_byte_timeout: float = 0.2, capture_s: float = 3.0,
                 reconnect_timeout: float = 5.0, truth: str = "",
                 rate_tolerance: float | None = None, jitter_max: float | None = None,
                 max_gap_ms: float | None = None, accel_rms: float | None = None,
                 gyro_rms: float | None = None, distance_rms_mm: float | None = None) -> None:
        if sensor not in SENSOR_PAYLOADS:
            raise ValueError(f"unknown sensor {sensor!r}")
        if capture_s <= 0 or reconnect_timeout <= 0:
            raise ValueError("capture_s and reconnect_timeout must be > 0")
        self.configuration = configuration
        self.sensor = sensor
        self.url = str(url)
        self.settings = LinkSettings(url=self.url or "unset", baudrate=int(baud),
                                     timeout=float(timeout), retries=int(retries),
                                     inter_byte_timeout=float(inter_byte_timeout))
        self.capture_s = float(capture_s)
        self.reconnect_timeout = float(reconnect_timeout)
        self.truth_file = str(truth)
        self.overrides = {k: v for k, v in {
            "rate_tolerance": rate_tolerance, "jitter_max": jitter_max,
            "max_gap_ms": max_gap_ms, "accel_rms": accel_rms, "gyro_rms": gyro_rms,
            "distance_rms_mm": distance_rms_mm}.items() if v is not None}
        self.expectations_file = EXPECTATIONS_DIR / f"serial-{sensor}.toml"
        self._identity: Identity | None = None
        self._availability: Availability | None = None

    # -- Target --------------------------------------------------------------------
    @property
    def identity(self) -> TargetIdentity:
        ident = self._identity
        return TargetIdentity(
            name=f"serial-{self.sensor}", kind="sensor",
            vendor=ident.vendor if ident else "unknown (device not queried)",
            driver_version=driver_version(), runtime="shipei-serial-protocol",
            runtime_version=ident.firmware if ident else "unknown",
            device=ident.model if ident else self.sensor,
            configuration=self.configuration, driver_distribution="shipei")

    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> Availability:
        if not self.url:
            return Availability.no(f"no device given: use --target serial-{self.sensor},"
                                   f"url=PORT_OR_URL")
        try:
            self.info()
        except LinkDropped:  # it opened: its cases record the drops as infra_error
            return Availability.yes()
        except LinkError as exc:
            return Availability.no(str(exc))
        except TargetError as exc:
            return Availability.no(f"the device at {self.url} did not identify as "
                                   f"serial-{self.sensor}: {exc}")
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        caps = dict(self._identity.capabilities) if self._identity else {}
        return Capabilities(dtypes=(), devices=(self.sensor,), thread_safe=False,
                            extra={"url": self.url, "device_capabilities": caps,
                                   "overrides": dict(self.overrides)})

    # -- streaming API ---------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[SensorLinkSession]:
        session = SensorLinkSession(self.settings, self.sensor)
        session.open()
        try:
            yield session
        finally:
            session.close()

    def info(self) -> SensorInfo:
        if self._identity is None:
            with self.session() as session:
                self._identity = self._checked(session.identify())
        return self._info(self._identity)

    def _checked(self, identity: Identity) -> Identity:
        if identity.device_class != DeviceClass.SENSOR:
            raise TargetError(f"device class {identity.device_class} is not a sensor")
        declared = identity.capabilities.get("sensor", "")
        if declared != self.sensor:
            raise TargetError(f"the device declares sensor {declared!r}, not {self.sensor!r}")
        return identity

    def _limit(self, identity: Identity, key: str, default: float | None) -> float | None:
        if key in self.overrides:
            return float(self.overrides[key])
        if key in identity.capabilities:
            try:
                return float(identity.capabilities[key])
            except ValueError:
                raise DeviceProtocolError(f"capability {key} is not a number") from None
        return default

    def _info(self, identity: Identity) -> SensorInfo:
        rate = self._limit(identity, "rate_hz", None)
        if not rate or rate <= 0:
            raise DeviceProtocolError("the sensor declares no rate_hz")
        accuracy = {}
        for key, (channels, unit) in ACCURACY_LIMITS[self.sensor].items():
            limit = self._limit(identity, key, None)
            if limit is not None:
                accuracy[key] = (channels, limit * unit)
        gap_ms = self._limit(identity, "max_gap_ms", max(250.0, 10_000.0 / rate))
        return SensorInfo(
            sensor=self.sensor, declared=dict(identity.capabilities), rate_hz=rate,
            frame_bytes=sample_frame_size(SENSOR_PAYLOADS[self.sensor]),
            rate_tolerance=self._limit(identity, "rate_tolerance", 0.02) or 0.0,
            jitter_max=self._limit(identity, "jitter_max", 0.05) or 0.0,
            max_gap_s=(gap_ms or 0.0) / 1000.0, accuracy=accuracy)

    def ground_truth(self) -> GroundTruth | None:
        try:
            if self.truth_file:
                return read_csv(self.truth_file)
            return from_declaration(self.info().declared)
        except TruthError as exc:
            raise TargetError(str(exc)) from None

    def capture(self, seconds: float | None = None) -> Capture:
        """Stream for ``seconds`` (default ``capture_s``), riding out link drops."""
        info = self.info()
        seconds = self.capture_s if seconds is None else seconds
        capture = Capture(self.sensor, info.rate_hz, info.frame_bytes, seconds)
        session = SensorLinkSession(self.settings, self.sensor)
        end = time.perf_counter() + seconds
        started = False
        lost_before = 0
        try:
            while True:
                try:
                    session.open()
                    if not started:
                        session.start()
                        started = True
                    session.receive(end - time.perf_counter())
                    session.stop()
                    break
                except LinkError as exc:
                    capture.events += session.drain()
                    lost = session.link.stats.lost_on_drop_bytes - lost_before
                    lost_before += lost
                    capture.events.append(LinkDropEvent(time.perf_counter(), str(exc), lost))
                    started = False
                    if capture.count(LinkDropEvent) > MAX_LINK_DROPS:
                        capture.aborted = f"the link dropped more than {MAX_LINK_DROPS} times"
                        break
                    try:
                        session.reconnect(self.reconnect_timeout)
                        self._checked(session.identify())
                    except (LinkError, TargetError) as again:
                        capture.aborted = f"after a link drop: {again}"
                        break
        finally:
            capture.events += session.drain()
            capture.link_stats = session.link.stats.as_dict()
            session.close()
        return capture

    # -- live exchanges (docs/protocol.md sections 4, 5.7-5.9, 8) --------------------
    def conformance(self) -> ConformanceReport:
        return sensor_exchanges.conformance(self)

    def reconnect_trial(self) -> ReconnectTrial:
        return sensor_exchanges.reconnect_trial(self)
