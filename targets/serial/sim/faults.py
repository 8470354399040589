"""Fault injection for the simulators: deterministic with a seed, and counted.

A fault is ``KIND=VALUE``. Rate-like faults (``bit_errors``, ``dropped_bytes``,
``truncate``, ``garbage``, ``drop``, ``stall``, ``disconnect``, ``clock_glitch``, ``busy``)
take a rate per frame ``p``: the frames are cut into blocks of ``1/p`` frames and
the fault hits one frame in each block, at a position drawn from the seed. So a
window of ``n`` frames holds ``n*p`` events, give or take one, and the same seed
hits the same frames. Magnitude faults (``noise``, ``drift``, ``jitter``) apply
to every frame.

Every injection is appended to an event log (JSON lines, one object per event,
flushed at once) so a test can compare what a receiver detected with what was
injected, frame by frame.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

RATE_FAULTS = ("bit_errors", "dropped_bytes", "truncate", "garbage", "drop", "stall",
               "disconnect", "clock_glitch", "busy")
MAGNITUDE_FAULTS = ("noise", "drift", "jitter")
#: the faults each simulator implements
BOARD_FAULTS = ("bit_errors", "dropped_bytes", "truncate", "garbage", "drop", "stall",
                "disconnect", "busy", "noise", "jitter")
SENSOR_FAULTS = RATE_FAULTS + MAGNITUDE_FAULTS

FAULT_HELP = {
    "bit_errors": "rate: one bit flipped in the frame",
    "dropped_bytes": "rate: one byte removed from the frame",
    "truncate": "rate: the frame cut short (its tail never sent)",
    "garbage": "rate: a burst of 1..16 noise bytes on the line before the frame",
    "drop": "rate: the frame not sent at all",
    "stall": "rate: output paused for --stall-ms before the frame (sensors buffer samples)",
    "disconnect": "rate: the link dropped for --down-ms instead of sending the frame",
    "clock_glitch": "rate (sensors): the sample's timestamp stepped back three periods",
    "busy": "rate per request: answered ERROR BUSY instead of executed (never cached)",
    "noise": "sensors: extra Gaussian noise of VALUE x the declared accuracy; "
             "board: relative Gaussian noise VALUE on floating-point outputs",
    "drift": "sensors: the device clock runs (1+VALUE) x nominal",
    "jitter": "sensors: sample instants jitter with sigma VALUE x period; "
              "board: each response delayed by up to VALUE seconds",
}


class FaultSpecError(ValueError):
    pass


def parse_faults(specs: Iterable[str], allowed: tuple[str, ...]) -> dict[str, float]:
    """``["bit_errors=0.01", "drift=0.05"]`` -> ``{"bit_errors": 0.01, "drift": 0.05}``."""
    faults: dict[str, float] = {}
    for spec in specs:
        kind, sep, value = spec.partition("=")
        kind = kind.strip()
        if kind not in allowed:
            raise FaultSpecError(f"unknown fault {kind!r}; this simulator knows: "
                                 f"{', '.join(allowed)}")
        if not sep:
            raise FaultSpecError(f"fault {spec!r} needs a value: {kind}=VALUE")
        try:
            number = float(value)
        except ValueError:
            raise FaultSpecError(f"fault {spec!r}: {value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise FaultSpecError(f"fault {spec!r}: the value must be a finite number >= 0")
        if kind in RATE_FAULTS and number > 1:
            raise FaultSpecError(f"fault {spec!r}: a rate per frame is at most 1")
        faults[kind] = number
    return faults


@dataclass
class FaultPlan:
    faults: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    log_path: Path | None = None
    counts: Counter[str] = field(default_factory=Counter)
    _log: IO[str] | None = None

    def value(self, kind: str) -> float:
        return self.faults.get(kind, 0.0)

    def rng(self, kind: str, index: int) -> random.Random:
        """A generator that depends only on (seed, kind, index)."""
        return random.Random(f"{self.seed}:{kind}:{index}")

    def hits(self, kind: str, index: int) -> bool:
        """Whether the rate fault ``kind`` hits frame number ``index``."""
        rate = self.faults.get(kind, 0.0)
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        block_len = 1.0 / rate
        block = int(index // block_len)
        start = math.floor(block * block_len)
        length = math.floor((block + 1) * block_len) - start
        offset = int(self.rng(kind, block).random() * length)
        return index == start + offset

    def record(self, kind: str, **detail: Any) -> None:
        self.counts[kind] += 1
        if self.log_path is None:
            return
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        self._log.write(json.dumps({"kind": kind, **detail}, sort_keys=True) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- byte-level damage ---------------------------------------------------------
    def damage(self, frame: bytes, index: int, **detail: Any) -> bytes | None:
        """Apply the byte-level faults to one encoded frame; None means not sent."""
        if self.hits("drop", index):
            self.record("drop", index=index, **detail)
            return None
        data = bytearray(frame)
        if self.hits("bit_errors", index):
            rng = self.rng("bit_errors.where", index)
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
            self.record("bit_errors", index=index, bit=bit, **detail)
        if self.hits("dropped_bytes", index):
            rng = self.rng("dropped_bytes.where", index)
            where = rng.randrange(len(data))
            del data[where]
            self.record("dropped_bytes", index=index, offset=where, **detail)
        if self.hits("truncate", index):
            rng = self.rng("truncate.where", index)
            keep = rng.randrange(1, len(data))
            del data[keep:]
            self.record("truncate", index=index, kept=keep, **detail)
        if self.hits("garbage", index):
            rng = self.rng("garbage.bytes", index)
            burst = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            data[:0] = burst.replace(b"\xa5", b"\x5a")  # never a sync byte
            self.record("garbage", index=index, nbytes=len(burst), **detail)
        return bytes(data)


def summary(counts: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
