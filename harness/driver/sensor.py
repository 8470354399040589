"""The sensor target API: streaming sensors, reached through a worker like any target.

A sensor runs no models; it streams samples. A sensor driver subclasses
:class:`SensorTarget` and implements what it declares (:meth:`~SensorTarget.info`),
a stream capture (:meth:`~SensorTarget.capture`), its ground truth, and the two
live exchanges whose details belong to its protocol (:meth:`~SensorTarget.conformance`,
:meth:`~SensorTarget.reconnect_trial`).

Suites never hold the sensor in the pytest process. ``Target.compile(SESSION_MODEL)``
opens a :class:`SensorSession` (an :class:`~harness.driver.target.Executable`) in the
target's worker, and each exchange is ``Host.call("harness.driver.sensor:NAME", key,
payload, timeout)``, so a hung or crashing sensor costs one case and every
exchange is bounded by the case timeout. :class:`SensorClient` wraps that.

The capture types below are what the host saw, in order. They cross the worker
wire (plain JSON values and arrays, no pickles) as dicts: :func:`to_wire` and
the ``from_wire`` class methods convert. Ground truth stays in the worker: the
suite asks for it sampled at the capture's timestamps (:class:`SampledTruth`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from harness.driver.target import Executable, Target, TargetError, UnsupportedModelError

#: the "model" whose compilation opens a sensor session
SESSION_MODEL = b"shipei:sensor-session"
SESSION_KEY = "sensors::session"
FUNCTIONS = "harness.driver.sensor"


class NotASensorError(TargetError):
    """A sensor exchange was asked of a target that is not a sensor."""


# -- capture events -----------------------------------------------------------------

@dataclass(frozen=True)
class SampleEvent:
    kind: ClassVar[str] = "sample"
    host_t: float  # host monotonic clock (time.perf_counter) at arrival
    seq: int  # the stream's sequence number
    timestamp_us: int  # the device clock at the sampling instant
    payload_type: int
    values: dict[str, float]
    valid: bool  # False: the sensor flagged the reading (e.g. no echo)


@dataclass(frozen=True)
class DamageEvent:
    """A frame whose header was intact but whose body was not."""

    kind: ClassVar[str] = "damage"
    host_t: float
    damage: str  # crc | short | oversize
    nbytes: int
    frame_type: int
    frame_seq: int  # from the intact header
    is_sample: bool  # the header says it was a sample


@dataclass(frozen=True)
class StrayEvent:
    """Bytes that belonged to no intact frame."""

    kind: ClassVar[str] = "stray"
    host_t: float
    nbytes: int


@dataclass(frozen=True)
class StartEvent:
    kind: ClassVar[str] = "start"
    host_t: float
    next_seq: int
    rate_hz: float


@dataclass(frozen=True)
class StopEvent:
    kind: ClassVar[str] = "stop"
    host_t: float
    last_seq: int | None  # None: the device sent no sample since boot


@dataclass(frozen=True)
class LinkDropEvent:
    kind: ClassVar[str] = "link_drop"
    host_t: float
    reason: str
    lost_bytes: int


@dataclass(frozen=True)
class ProtocolEvent:
    kind: ClassVar[str] = "protocol"
    host_t: float
    problem: str


CaptureEvent = (SampleEvent | DamageEvent | StrayEvent | StartEvent | StopEvent
                | LinkDropEvent | ProtocolEvent)
EVENT_TYPES: dict[str, type] = {cls.kind: cls for cls in (
    SampleEvent, DamageEvent, StrayEvent, StartEvent, StopEvent, LinkDropEvent, ProtocolEvent)}


def to_wire(value: Any) -> Any:
    """A capture type as plain data for the worker wire (events carry their kind)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple(EVENT_TYPES.values())):
            data["kind"] = value.kind
        return data
    if isinstance(value, list):
        return [to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: to_wire(item) for key, item in value.items()}
    return value


def event_from_wire(data: Mapping[str, Any]) -> CaptureEvent:
    fields = dict(data)
    return EVENT_TYPES[fields.pop("kind")](**fields)


@dataclass
class Capture:
    """Everything the host saw while the sensor streamed, in order."""

    sensor: str
    rate_hz: float
    frame_bytes: int
    duration_s: float
    events: list[CaptureEvent] = field(default_factory=list)
    aborted: str = ""  # why the capture ended early, if it did
    link_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> list[SampleEvent]:
        return [e for e in self.events if isinstance(e, SampleEvent)]

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Capture:
        fields = dict(data)
        fields["events"] = [event_from_wire(e) for e in fields["events"]]
        return cls(**fields)


@dataclass(frozen=True)
class SensorInfo:
    """What a sensor declares, with the host's overrides applied."""

    sensor: str  # imu | ultrasonic | ...
    rate_hz: float
    frame_bytes: int
    rate_tolerance: float
    jitter_max: float
    max_gap_s: float
    accuracy: dict[str, tuple[tuple[str, ...], float]]  # limit name -> (channels, rms limit)
    declared: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SensorInfo:
        fields = dict(data)
        fields["accuracy"] = {name: (tuple(channels), float(limit))
                              for name, (channels, limit) in fields["accuracy"].items()}
        return cls(**fields)


@dataclass(frozen=True)
class ConformanceReport:
    """The driver's protocol-level checks: every deviation found, and what was seen."""

    problems: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ConformanceReport:
        return cls(list(data["problems"]), dict(data["metrics"]))


@dataclass(frozen=True)
class ReconnectTrial:
    """A stream, the host letting go without stopping it, and the stream after."""

    before: list[SampleEvent]
    after: list[SampleEvent]
    restarted: StartEvent
    resumed_s: float  # from letting go to the first samples after it

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ReconnectTrial:
        before = [event_from_wire(e) for e in data["before"]]
        after = [event_from_wire(e) for e in data["after"]]
        return cls(before, after, event_from_wire(data["restarted"]),  # type: ignore[arg-type]
                   float(data["resumed_s"]))


@dataclass(frozen=True)
class SampledTruth:
    """Ground truth sampled by the worker at given device times (seconds)."""

    description: str
    t_s: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.values)

    def at(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        """The truth at ``t_s``: exactly the sampled values for the sampled times,
        else interpolated between them (NaN outside)."""
        t = np.asarray(t_s, dtype=np.float64)
        if t.shape == self.t_s.shape and np.array_equal(t, self.t_s):
            return dict(self.values)
        order = np.argsort(self.t_s, kind="stable")
        known = self.t_s[order]
        return {name: np.interp(t, known, column[order], left=np.nan, right=np.nan)
                for name, column in self.values.items()}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SampledTruth:
        return cls(str(data["description"]), np.asarray(data["t_s"], dtype=np.float64),
                   {k: np.asarray(v, dtype=np.float64) for k, v in data["values"].items()})


class GroundTruth(Protocol):
    """What the sensor should have measured, by device time, on the named channels."""

    channels: tuple[str, ...]
    description: str

    def at(self, t_s: np.ndarray) -> dict[str, np.ndarray]: ...


# -- the driver side ----------------------------------------------------------------

class SensorSession(Executable):
    """A sensor "compiled": the handle the worker keeps for a suite's exchanges."""

    def __init__(self, target: SensorTarget) -> None:
        self.target = target

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raise UnsupportedModelError("a sensor runs no models")


class SensorTarget(Target):
    """Base of sensor drivers (``identity.kind == "sensor"``)."""

    def compile(self, model: bytes) -> Executable:
        if model == SESSION_MODEL:
            return SensorSession(self)
        raise UnsupportedModelError(f"{self.identity.name} is a sensor: it runs no models")

    @abc.abstractmethod
    def info(self) -> SensorInfo:
        """What the sensor declares (asks the device once)."""

    @abc.abstractmethod
    def capture(self, seconds: float | None = None) -> Capture:
        """Stream for ``seconds`` (default: the driver's own) and record what came."""

    def ground_truth(self) -> GroundTruth | None:
        """The truth to judge accuracy by, or None when there is none."""
        return None

    @abc.abstractmethod
    def conformance(self) -> ConformanceReport:
        """Exercise the protocol (identify, refusals, stream start/stop) in a session."""

    @abc.abstractmethod
    def reconnect_trial(self) -> ReconnectTrial:
        """Stream, let go of the link without stopping, reconnect and stream again."""


# -- worker functions: Host.call("harness.driver.sensor:NAME", key, payload, timeout) -------

def _sensor(executable: Executable) -> SensorTarget:
    if not isinstance(executable, SensorSession):
        raise NotASensorError("not a streaming sensor target")
    return executable.target


def info(executable: Executable, _: Any = None) -> dict[str, Any]:
    return to_wire(_sensor(executable).info())


def capture(executable: Executable, seconds: float | None = None) -> dict[str, Any]:
    return to_wire(_sensor(executable).capture(seconds))


def truth_at(executable: Executable, t_s: Any) -> dict[str, Any] | None:
    """The sensor's ground truth at device times ``t_s`` (seconds), or None."""
    truth = _sensor(executable).ground_truth()
    if truth is None:
        return None
    t = np.asarray(t_s, dtype=np.float64)
    return {"description": truth.description, "t_s": t,
            "values": {k: np.asarray(v, dtype=np.float64) for k, v in truth.at(t).items()}}


def conformance(executable: Executable, _: Any = None) -> dict[str, Any]:
    return to_wire(_sensor(executable).conformance())


def reconnect_trial(executable: Executable, _: Any = None) -> dict[str, Any]:
    return to_wire(_sensor(executable).reconnect_trial())


# -- the suite side -------------------------------------------------------------------

class _Host(Protocol):
    def compile(self, key: str, model: bytes, timeout: float) -> float: ...
    def call(self, function: str, key: str, payload: Any, timeout: float) -> Any: ...


class SensorClient:
    """A suite's view of a sensor behind a :class:`~harness.isolation.host.Host`: each
    exchange runs in the worker and waits at most ``timeout`` seconds. Exceptions
    are the host's (``RemoteError``, ``CaseTimeout``, ``WorkerCrash``, ``InfraError``)."""

    def __init__(self, host: _Host, timeout: float, key: str = SESSION_KEY) -> None:
        self.host = host
        self.timeout = timeout
        self.key = key

    def open(self) -> None:
        """Open the session in the worker: no I/O; a target that is no sensor refuses."""
        self.host.compile(self.key, SESSION_MODEL, self.timeout)

    def _call(self, name: str, payload: Any = None) -> Any:
        # opened again each time: cheap, and survives a worker restarted after an
        # earlier case's timeout or crash
        self.open()
        return self.host.call(f"{FUNCTIONS}:{name}", self.key, payload, self.timeout)

    def info(self) -> SensorInfo:
        return SensorInfo.from_wire(self._call("info"))

    def capture(self, seconds: float | None = None) -> Capture:
        return Capture.from_wire(self._call("capture", seconds))

    def truth_at(self, t_s: np.ndarray) -> SampledTruth | None:
        """The ground truth at device times ``t_s``, or None when there is none."""
        data = self._call("truth_at", np.asarray(t_s, dtype=np.float64))
        return None if data is None else SampledTruth.from_wire(data)

    def conformance(self) -> ConformanceReport:
        return ConformanceReport.from_wire(self._call("conformance"))

    def reconnect_trial(self) -> ReconnectTrial:
        return ReconnectTrial.from_wire(self._call("reconnect_trial"))
