"""Summary statistics of latency samples, with MLPerf LoadGen's percentile rule.

LoadGen sorts the latencies and takes element ``floor(n * p)`` (``results.cc``);
:func:`percentile` does the same so our p50/p90/p99 mean what MLPerf's mean.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_ns: np.ndarray, pct: float) -> int:
    """LoadGen's percentile: element ``floor(n * pct / 100)`` of the sorted samples."""
    if sorted_ns.size == 0:
        raise ValueError("no samples")
    index = min(int(math.floor(sorted_ns.size * pct / 100.0)), sorted_ns.size - 1)
    return int(sorted_ns[index])


def summarize(latency_ns: np.ndarray, samples_per_query: int = 1,
              wall_s: float | None = None, sample_count: int | None = None
              ) -> dict[str, Any]:
    """Latency figures in milliseconds and throughput, from per-query samples in ns.

    ``wall_s`` is the duration of the timed phase; without it throughput is
    computed from the busy time alone (the sum of the samples). ``sample_count``
    is the number of samples served when it is not ``count x samples_per_query``
    (a short last offline batch).
    """
    samples = np.sort(np.asarray(latency_ns, dtype=np.int64))
    if samples.size == 0:
        raise ValueError("no samples")
    ms = samples.astype(np.float64) / 1e6
    busy_s = float(ms.sum()) / 1e3
    seconds = wall_s if wall_s else busy_s
    figures: dict[str, Any] = {
        "count": int(samples.size),
        "min_ms": float(ms[0]),
        "max_ms": float(ms[-1]),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if samples.size > 1 else 0.0,
    }
    for pct in PERCENTILES:
        figures[f"p{pct:g}_ms"] = percentile(samples, pct) / 1e6
    served = sample_count if sample_count is not None else samples.size * samples_per_query
    figures["samples"] = int(served)
    figures["queries_per_s"] = samples.size / seconds if seconds > 0 else float("inf")
    figures["samples_per_s"] = served / seconds if seconds > 0 else float("inf")
    return figures
