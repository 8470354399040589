"""``shipei sim imu`` and ``shipei sim ultrasonic``: sensors that stream samples of a
known motion at a configured rate.

The device clock runs at ``(1 + drift)`` times the host's; sample ``n`` of the
sampling grid is taken at device time ``n/rate`` (plus jitter) and stamped with
it. Samples go out in order through one queue, replies included, so
STREAM_STOPPED follows every sample sent before it. A stall holds the queue
(samples are buffered, as in a sensor FIFO) and releases it in a burst.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np

from targets.serial.groundtruth import FigureEight, MovingReflector, declaration
from targets.serial.protocol import (
    NO_SEQ,
    REVISION,
    DeviceClass,
    ErrorCode,
    Frame,
    Identity,
    ImuSample,
    MsgType,
    PayloadType,
    RangeSample,
    decode_u32s,
    encode_error,
    encode_frame,
    encode_sample,
    encode_stream_started,
    encode_stream_stopped,
    sample_frame_size,
)
from targets.serial.sim.endpoint import PeerGone
from targets.serial.sim.server import Reply, Simulator, pong

ACCEL_SCALE = 16 * 9.80665 / 32768  # +-16 g full scale, m/s^2 per LSB
GYRO_SCALE = math.radians(2000) / 32768  # +-2000 dps full scale, rad/s per LSB

#: per sensor: default rate, intrinsic noise and the accuracy/timing it declares
SENSORS: dict[str, dict[str, Any]] = {
    "imu": {"rate_hz": 400.0, "payload": PayloadType.IMU6, "model": "sim-imu6",
            "noise": {"accel": 0.02, "gyro": 0.002},
            "declared": {"accel_rms": 0.06, "gyro_rms": 0.006}},
    "ultrasonic": {"rate_hz": 40.0, "payload": PayloadType.RANGE, "model": "sim-ranger",
                   "noise": {"distance_m": 0.002},
                   "declared": {"distance_rms_mm": 6.0}},
}
RANGE_MIN_MM, RANGE_MAX_MM = 20, 4000
DECLARED_TIMING = {"rate_tolerance": 0.01, "jitter_max": 0.05, "max_gap_ms": 300.0}


class SensorSimulator(Simulator):
    def __init__(self, *args: Any, sensor: str = "imu", rate_hz: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if sensor not in SENSORS:
            raise ValueError(f"unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
        self.sensor = sensor
        self.device_name = sensor
        spec = SENSORS[sensor]
        self.rate_hz = float(rate_hz or spec["rate_hz"])
        if not 0 < self.rate_hz <= 10_000:
            raise ValueError("rate must be in (0, 10000] Hz")
        self.period = 1.0 / self.rate_hz
        self.truth = FigureEight() if sensor == "imu" else MovingReflector()
        self.drift = self.faults.value("drift")
        self.jitter = self.faults.value("jitter")
        self.noise = self.faults.value("noise")
        self.boot = time.monotonic()
        self.next_seq = 0
        self.last_seq = NO_SEQ
        self.streaming = False
        self._grid = 0  # next index on the sampling grid
        self._queue: deque[bytes] = deque()
        self._held_until = 0.0

    # -- identity ------------------------------------------------------------------
    def identity(self) -> Identity:
        spec = SENSORS[self.sensor]
        caps = {"protocol": REVISION, "sensor": self.sensor, "rate_hz": f"{self.rate_hz:g}",
                "payload_type": str(int(spec["payload"])),
                "frame_bytes": str(sample_frame_size(spec["payload"]))}
        caps.update({k: f"{v:g}" for k, v in DECLARED_TIMING.items()})
        caps.update({k: f"{v:g}" for k, v in spec["declared"].items()})
        if self.sensor == "imu":
            caps.update(accel_scale=repr(ACCEL_SCALE), gyro_scale=repr(GYRO_SCALE))
        else:
            caps.update(range_min_mm=str(RANGE_MIN_MM), range_max_mm=str(RANGE_MAX_MM))
        caps.update(declaration(self.truth))
        return Identity(DeviceClass.SENSOR, vendor="Shipei simulators", model=spec["model"],
                        firmware="sim-sensor 1.0", serial_number=f"SIM-{self.sensor.upper()}-1",
                        capabilities=caps)

    # -- requests ------------------------------------------------------------------
    def answer(self, frame: Frame) -> list[Reply]:
        if frame.type == MsgType.IDENTIFY:
            return [Reply(MsgType.IDENTITY, self.identity().encode())]
        if frame.type == MsgType.PING:
            return pong(frame)
        if frame.type == MsgType.STREAM_START:
            (rate_mhz,) = decode_u32s(frame.payload, 1)
            declared_mhz = int(round(self.rate_hz * 1000))
            if rate_mhz not in (0, declared_mhz):
                return [Reply(MsgType.ERROR, encode_error(
                    ErrorCode.BAD_RATE, f"this sensor streams at {self.rate_hz:g} Hz only"))]
            if not self.streaming:
                self.streaming = True
                self._grid = math.ceil(self.device_time(time.monotonic()) / self.period)
            return [Reply(MsgType.STREAM_STARTED,
                          encode_stream_started(declared_mhz, self.next_seq))]
        if frame.type == MsgType.STREAM_STOP:
            self.streaming = False
            return [Reply(MsgType.STREAM_STOPPED, encode_stream_stopped(self.last_seq))]
        if frame.type in (MsgType.LOAD_BEGIN, MsgType.LOAD_CHUNK, MsgType.LOAD_END,
                          MsgType.UNLOAD, MsgType.INFER):
            return [Reply(MsgType.ERROR, encode_error(ErrorCode.NOT_SUPPORTED,
                                                      "a sensor runs no models"))]
        return [Reply(MsgType.ERROR, encode_error(ErrorCode.UNKNOWN_TYPE,
                                                  f"unknown message type 0x{frame.type:02X}"))]

    def send(self, msg_type: int, seq: int, payload: bytes) -> None:
        """Replies join the sample queue, undamaged: faults hit stream samples."""
        self._queue.append(encode_frame(msg_type, seq, payload))
        self.frames_sent += 1
        self._flush(time.monotonic())

    def on_disconnect(self) -> None:
        self.streaming = False
        self._queue.clear()
        self._held_until = 0.0

    # -- the stream ----------------------------------------------------------------
    def device_time(self, host_time: float) -> float:
        return (host_time - self.boot) * (1.0 + self.drift)

    def _instant(self, grid: int, seq: int) -> float:
        """Device time at which grid sample ``grid`` is taken (jittered)."""
        offset = 0.0
        if self.jitter > 0:
            offset = self.faults.rng("jitter", seq).gauss(0.0, self.jitter * self.period)
            offset = max(-0.45 * self.period, min(0.45 * self.period, offset))
        return grid * self.period + offset

    def _due_at(self) -> float:
        """Host time at which the next sample is due."""
        return self.boot + self._instant(self._grid, self.next_seq) / (1.0 + self.drift)

    def wake_in(self) -> float:
        now = time.monotonic()
        waits = [0.1]
        if self.streaming:
            waits.append(self._due_at() - now)
        if self._queue:
            waits.append(self._held_until - now)
        return max(min(waits), 0.0)

    def tick(self) -> None:
        now = time.monotonic()
        while self.streaming and self._due_at() <= now:
            self._produce(now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        if self._queue and now >= self._held_until:
            data = b"".join(self._queue)
            self._queue.clear()
            self.endpoint.write(data)

    def _produce(self, now: float) -> None:
        seq = self.next_seq
        instant = self._instant(self._grid, seq)
        self._grid += 1
        self.next_seq = (seq + 1) & 0xFFFFFFFF
        self.last_seq = seq
        stamp = instant
        if self.faults.hits("clock_glitch", seq):
            stamp = instant - 3 * self.period
            self.faults.record("clock_glitch", seq=seq, step_s=-3 * self.period)
        frame = encode_frame(MsgType.SAMPLE, seq,
                             encode_sample(max(int(round(stamp * 1e6)), 0), self._body(
                                 instant, seq)))
        if self.faults.hits("disconnect", seq):
            self.faults.record("disconnect", seq=seq, seconds=self.down_s)
            self.log(f"fault: disconnect at sample {seq} for {self.down_s:g} s")
            self._queue.clear()
            self.endpoint.drop(self.down_s)
            raise PeerGone("injected disconnect")
        if self.faults.hits("stall", seq):
            self.faults.record("stall", seq=seq, seconds=self.stall_s)
            self._held_until = now + self.stall_s
        data = self.faults.damage(frame, seq, seq=seq)
        if data is not None:
            self._queue.append(data)

    def _body(self, instant: float, seq: int) -> ImuSample | RangeSample:
        truth = self.truth.at(np.array([instant]))
        rng = np.random.default_rng([self.faults.seed, seq])
        spec = SENSORS[self.sensor]
        if self.sensor == "imu":
            accel_sigma = math.hypot(spec["noise"]["accel"],
                                     self.noise * spec["declared"]["accel_rms"])
            gyro_sigma = math.hypot(spec["noise"]["gyro"],
                                    self.noise * spec["declared"]["gyro_rms"])
            accel = np.array([truth[c][0] for c in ("ax", "ay", "az")])
            gyro = np.array([truth[c][0] for c in ("gx", "gy", "gz")])
            accel = accel + rng.normal(0.0, accel_sigma, 3)
            gyro = gyro + rng.normal(0.0, gyro_sigma, 3)
            raw = np.concatenate([np.round(accel / ACCEL_SCALE), np.round(gyro / GYRO_SCALE)])
            raw = np.clip(raw, -32768, 32767).astype(int)
            return ImuSample(tuple(int(v) for v in raw), ACCEL_SCALE, GYRO_SCALE)
        sigma = math.hypot(spec["noise"]["distance_m"],
                           self.noise * spec["declared"]["distance_rms_mm"] / 1000.0)
        distance = float(truth["distance_m"][0] + rng.normal(0.0, sigma))
        millimetres = int(round(distance * 1000))
        if not RANGE_MIN_MM <= millimetres <= RANGE_MAX_MM:
            return RangeSample(0, 0, 0x01)
        return RangeSample(millimetres, MovingReflector.echo_strength(distance), 0)
