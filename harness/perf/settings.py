"""Scenario rules: warm-up, minimum duration, minimum query count.

Modelled on MLPerf Inference's rules (see docs/performance.md for ours next to
theirs). A :class:`ScenarioSettings` travels to the worker as a plain dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

SINGLE_STREAM = "single_stream"
OFFLINE = "offline"
SCENARIOS = (SINGLE_STREAM, OFFLINE)
#: LoadGen calls a single-stream run with fewer queries INVALID (early stopping)
EARLY_STOPPING_MIN_QUERIES = 64


@dataclass(frozen=True)
class ScenarioSettings:
    """How long and how much to measure. Durations in seconds."""

    scenario: str = SINGLE_STREAM
    warmup_s: float = 2.0
    warmup_queries: int = 20
    min_duration_s: float = 10.0
    #: single-stream: queries; offline: samples
    min_queries: int = 1024
    #: offline only: samples per inference
    batch_size: int = 1
    #: prepared inputs cycled through (distinct queries, or distinct batches offline)
    distinct_inputs: int = 16

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, not {self.scenario!r}")
        if self.min_duration_s < 0 or self.warmup_s < 0:
            raise ValueError("durations must not be negative")
        if self.min_queries < 1 or self.batch_size < 1 or self.distinct_inputs < 1:
            raise ValueError("min_queries, batch_size and distinct_inputs must be at least 1")
        if self.scenario == SINGLE_STREAM and self.min_queries < EARLY_STOPPING_MIN_QUERIES:
            raise ValueError(f"single-stream needs at least {EARLY_STOPPING_MIN_QUERIES} "
                             "queries (LoadGen's early-stopping estimate), not "
                             f"{self.min_queries}")
        if self.warmup_queries < 1:
            raise ValueError("warmup_queries must be at least 1 (the calibration needs it)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioSettings:
        return cls(**data)

    def with_(self, **changes: Any) -> ScenarioSettings:
        return replace(self, **changes)


#: the defaults a published figure uses (``--perf-*`` options change them per run)
DEFAULTS = {
    SINGLE_STREAM: ScenarioSettings(SINGLE_STREAM, batch_size=1),
    OFFLINE: ScenarioSettings(OFFLINE, min_queries=1024, batch_size=8),
}
