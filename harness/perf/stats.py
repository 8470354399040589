"""Summary statistics of latency samples, with MLPerf LoadGen's percentile rule.

LoadGen sorts the latencies and takes element ``floor(n * p)`` (``results.cc``);
:func:`percentile` does the same so our p50/p90/p99 mean what MLPerf's mean. It is
the project's one percentile: the harness records it, the center's audits recompute
it (:func:`percentile_of` for unsorted samples or many rows at once), ``shipei
compare`` reports it. ``np.median`` (the mean of the two middle elements for an even
count) is another statistic and would disagree with a recorded p50.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

PERCENTILES = (50.0, 90.0, 99.0)


def rank(count: int, pct: float) -> int:
    """LoadGen's index into ``count`` sorted samples: ``floor(count * pct / 100)``."""
    if count < 1:
        raise ValueError("no samples")
    return min(int(math.floor(count * pct / 100.0)), count - 1)


def percentile(sorted_ns: np.ndarray, pct: float) -> int:
    """LoadGen's percentile: element ``floor(n * pct / 100)`` of the sorted samples."""
    return int(sorted_ns[rank(sorted_ns.size, pct)])


def percentile_of(values: ArrayLike, pct: float, axis: int = -1) -> Any:
    """LoadGen's percentile of unsorted ``values`` along ``axis`` (a scalar for one row,
    an array for several); the values keep their type (ns stay integers)."""
    ordered = np.sort(np.asarray(values), axis=axis)
    return np.take(ordered, rank(ordered.shape[axis], pct), axis=axis)


def latency_percentiles_ms(milliseconds: ArrayLike) -> dict[str, float]:
    """A task's single-stream latency figures over its runs (ms), by the one percentile rule:
    ``latency_p50_ms`` and ``latency_p99_ms``; none when nothing was timed."""
    values = np.asarray(milliseconds, dtype=np.float64).ravel()
    if not values.size:
        return {}
    return {"latency_p50_ms": round(float(percentile_of(values, 50)), 4),
            "latency_p99_ms": round(float(percentile_of(values, 99)), 4)}


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
