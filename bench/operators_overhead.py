"""Harness overhead on the whole operator suite: Shipei vs a bare onnxruntime loop.

In one process, alternately: (a) ``shipei run --suite operators --target
onnxruntime-cpu`` through pytest (worker subprocess, records, JUnit, the lot) and
(b) a bare loop that loads the same cases, creates an ``InferenceSession`` with the
same settings, runs every data set and compares with ``numpy.allclose``. Prints
both wall times and the ratio (goal: at most 1.15).

    python bench/operators_overhead.py [--repeats 3] [--isolation process|inline]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from suites.operators.onnx_cases import all_cases  # noqa: E402


def bare_loop() -> tuple[float, int]:
    """Every case straight on onnxruntime; returns (seconds, cases that ran)."""
    started = time.perf_counter()
    ran = 0
    for case in all_cases():
        loaded = case.load()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(loaded.model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            for data in loaded.data_sets:
                feeds = {k: v for k, v in data.inputs.items() if v is not None}
                outputs = session.run(names, feeds)
                for got, want in zip(outputs, data.outputs, strict=False):
                    if isinstance(want, np.ndarray) and want.dtype.kind in "fc":
                        np.allclose(got, want, rtol=case.rtol, atol=case.atol)
        except Exception:  # the harness records these as errors; the loop skips on
            pass
        ran += 1
    return time.perf_counter() - started, ran


def harness_run(isolation: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        status = pytest.main([str(REPO / "suites" / "operators"), "--target", "onnxruntime-cpu",
                              "--isolation", isolation, "-q", "-p", "no:cacheprovider",
                              "--results-dir", f"{tmp}/results", "--reports-dir",
                              f"{tmp}/reports", "--no-header", "-o", "console_output_style=count"])
        elapsed = time.perf_counter() - started
    if status not in (0, 1):
        raise SystemExit(f"harness run failed with pytest status {status}")
    return elapsed


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isolation", choices=("process", "inline"), default="process")
    args = parser.parse_args()
    bare_loop()  # warm the case cache and the OS page cache before timing anything
    bare_times, harness_times = [], []
    for _ in range(args.repeats):
        seconds, ran = bare_loop()
        bare_times.append(seconds)
        harness_times.append(harness_run(args.isolation))
    bare, harness = statistics.median(bare_times), statistics.median(harness_times)
    print(f"\ncases: {ran}   repeats: {args.repeats}   isolation: {args.isolation}")
    print(f"bare onnxruntime loop: {bare:7.2f} s   (runs: {_seconds(bare_times)})")
    print(f"shipei harness:        {harness:7.2f} s   (runs: {_seconds(harness_times)})")
    print(f"ratio harness/bare:    {harness / bare:7.3f}   (goal <= 1.15)")


if __name__ == "__main__":
    main()
