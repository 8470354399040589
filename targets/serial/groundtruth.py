"""Ground truth for sensor accuracy: a known motion, or a reference recording.

The simulators emit readings of an analytic motion: :class:`FigureEight` (a
6-axis IMU carried along a figure-eight while it yaws and rolls) and
:class:`MovingReflector` (a target moving back and forth in front of an
ultrasonic ranger). A simulator declares its model in IDENTITY
(``truth_model``, ``truth_params``) so the host can evaluate the same truth.

A real sensor has no such declaration: its truth is a reference recording, a
CSV file keyed by the device's own timestamps::

    timestamp_us,ax,ay,az,gx,gy,gz        (IMU: m/s^2 specific force, rad/s)
    timestamp_us,distance_m               (ranging sensor)

:func:`read_csv` loads one; values between rows are interpolated linearly.
``shipei sim imu --export-truth FILE`` writes one from a simulator's motion.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.sensor import GroundTruth

GRAVITY = 9.80665
IMU_CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
RANGE_CHANNELS = ("distance_m",)


class TruthError(ValueError):
    """A ground-truth declaration or file that cannot be used."""


@dataclass(frozen=True)
class FigureEight:
    """An IMU carried along ``p(t) = (A sin wt, A/2 sin 2wt, 0)`` with yaw
    ``psi = Y sin w_y t`` and roll ``phi = R sin(2 w_y t + 0.5)``.

    Body-to-world rotation ``R = Rz(psi) Rx(phi)``. The accelerometer reads
    specific force in the body frame, ``R^T (p'' + (0, 0, g))``; the gyroscope
    reads body angular rate ``(phi', psi' sin phi, psi' cos phi)``.
    """

    radius_m: float = 0.5
    period_s: float = 4.0
    yaw_amp_rad: float = 0.8
    roll_amp_rad: float = 0.3
    rot_period_s: float = 5.0

    channels = IMU_CHANNELS
    name = "imu-figure8-v1"

    @property
    def description(self) -> str:
        return f"{self.name} {json.dumps(asdict(self), sort_keys=True)}"

    def at(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(t_s, dtype=np.float64)
        w = 2 * math.pi / self.period_s
        wr = 2 * math.pi / self.rot_period_s
        a = self.radius_m
        acc_w = np.stack([-a * w * w * np.sin(w * t),
                          -2 * a * w * w * np.sin(2 * w * t),
                          np.full_like(t, GRAVITY)])
        psi = self.yaw_amp_rad * np.sin(wr * t)
        dpsi = self.yaw_amp_rad * wr * np.cos(wr * t)
        phi = self.roll_amp_rad * np.sin(2 * wr * t + 0.5)
        dphi = self.roll_amp_rad * 2 * wr * np.cos(2 * wr * t + 0.5)
        cz, sz = np.cos(psi), np.sin(psi)
        cx, sx = np.cos(phi), np.sin(phi)
        # R^T = Rx(phi)^T Rz(psi)^T applied to the world vector
        u = cz * acc_w[0] + sz * acc_w[1]
        v = -sz * acc_w[0] + cz * acc_w[1]
        z = acc_w[2]
        return {"ax": u, "ay": cx * v + sx * z, "az": -sx * v + cx * z,
                "gx": dphi, "gy": dpsi * sx, "gz": dpsi * cx}

    def rotation(self, t: float) -> np.ndarray:
        """Body-to-world rotation matrix at time ``t`` (for checking the rates)."""
        wr = 2 * math.pi / self.rot_period_s
        psi = self.yaw_amp_rad * math.sin(wr * t)
        phi = self.roll_amp_rad * math.sin(2 * wr * t + 0.5)
        rz = np.array([[math.cos(psi), -math.sin(psi), 0], [math.sin(psi), math.cos(psi), 0],
                       [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(phi), -math.sin(phi)],
                       [0, math.sin(phi), math.cos(phi)]])
        return rz @ rx


@dataclass(frozen=True)
class MovingReflector:
    """A reflector at ``d(t) = C + A sin(2 pi t / T)`` metres from the transducer."""

    center_m: float = 1.2
    amplitude_m: float = 0.6
    period_s: float = 3.0

    channels = RANGE_CHANNELS
    name = "range-reflector-v1"

    @property
    def description(self) -> str:
        return f"{self.name} {json.dumps(asdict(self), sort_keys=True)}"

    def at(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(t_s, dtype=np.float64)
        return {"distance_m": self.center_m
                + self.amplitude_m * np.sin(2 * math.pi * t / self.period_s)}

    @staticmethod
    def echo_strength(distance_m: float) -> int:
        """Relative echo amplitude (0..255): spreading loss, about 1/d^2."""
        return int(max(1, min(255, round(255 * (0.4 / max(distance_m, 0.05)) ** 2))))


MODELS: dict[str, type] = {FigureEight.name: FigureEight, MovingReflector.name: MovingReflector}


def declaration(truth: FigureEight | MovingReflector) -> dict[str, str]:
    """The IDENTITY capabilities that declare a simulator's truth model."""
    return {"truth_model": truth.name, "truth_params": json.dumps(asdict(truth),
                                                                  sort_keys=True)}


def from_declaration(caps: Mapping[str, str]) -> GroundTruth | None:
    """The truth model a device declares, or None when it declares none."""
    name = caps.get("truth_model")
    if not name:
        return None
    if name not in MODELS:
        raise TruthError(f"the device declares an unknown truth model {name!r}")
    try:
        params: dict[str, Any] = json.loads(caps.get("truth_params", "{}"))
        return MODELS[name](**params)
    except (ValueError, TypeError) as exc:
        raise TruthError(f"bad truth_params for {name}: {exc}") from None


@dataclass(frozen=True)
class RecordedTruth:
    """A reference recording: rows of device timestamp and true values."""

    path: str
    t_s: np.ndarray
    values: Mapping[str, np.ndarray]

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def description(self) -> str:
        return f"recording {self.path} ({len(self.t_s)} rows, " \
               f"{self.t_s[0]:.3f}..{self.t_s[-1]:.3f} s)"

    def at(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(t_s, dtype=np.float64)
        inside = (t >= self.t_s[0]) & (t <= self.t_s[-1])
        return {name: np.where(inside, np.interp(t, self.t_s, column), np.nan)
                for name, column in self.values.items()}


def read_csv(path: str | Path) -> RecordedTruth:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader)]
            rows = [row for row in reader if row and not row[0].lstrip().startswith("#")]
    except (OSError, StopIteration, UnicodeDecodeError, csv.Error) as exc:
        raise TruthError(f"cannot read ground truth {path}: {exc}") from None
    if not header or header[0] != "timestamp_us":
        raise TruthError(f"{path}: the first column must be timestamp_us, not "
                         f"{header[:1]}")
    channels = header[1:]
    if tuple(channels) not in (IMU_CHANNELS, RANGE_CHANNELS):
        raise TruthError(f"{path}: columns must be {', '.join(IMU_CHANNELS)} or "
                         f"{RANGE_CHANNELS[0]}, not {', '.join(channels)}")
    try:
        table = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise TruthError(f"{path}: {exc}") from None
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] != len(header):
        raise TruthError(f"{path}: needs at least two rows of {len(header)} numbers")
    t_s = table[:, 0] / 1e6
    if np.any(np.diff(t_s) <= 0):
        raise TruthError(f"{path}: timestamp_us must increase strictly")
    return RecordedTruth(str(path), t_s, {c: table[:, i + 1] for i, c in enumerate(channels)})


def write_csv(path: str | Path, truth: GroundTruth, start_s: float, end_s: float,
              rate_hz: float) -> int:
    """Sample ``truth`` on a regular grid into a reference-recording CSV; returns rows."""
    count = int(round((end_s - start_s) * rate_hz)) + 1
    t_us = np.round(np.linspace(start_s, end_s, count) * 1e6)
    values = truth.at(t_us / 1e6)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp_us", *truth.channels])
        for i, stamp in enumerate(t_us):
            writer.writerow([int(stamp), *(f"{values[c][i]:.9g}" for c in truth.channels)])
    return count
