"""Timed loops that run *inside the target's worker process*.

The controller calls ``Host.call("harness.perf.loops:measure", key, payload)``;
the worker runs :func:`measure` on the compiled executable, so every driver is
timed the same way and no pipe round trip lands inside a timed region.

MLPerf LoadGen is the timing engine: it schedules the queries (single-stream: the
next as soon as the previous completes; offline: all samples in one query),
enforces the minimum duration and query count and judges validity. Each feed is
turned into the driver's own form once (``Executable.prepare``) before any
timing, and one ``run_prepared`` is checked against ``run``; our SUT callback
times each ``Executable.run_prepared`` call with ``perf_counter_ns``; those
service times are the stored samples (LoadGen only exposes per-query latencies
through its trace, which costs ~700 bytes and an I/O thread per query).
LoadGen's own figures and logs travel back beside them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.target import Executable, TargetError
from harness.perf import loadgen_log, machine
from harness.perf.settings import OFFLINE, ScenarioSettings
from harness.perf.stats import percentile_of
from harness.verdicts.judge import compare_outputs

#: environment variables that set thread pools in common runtimes
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "TVM_NUM_THREADS", "OMP_PROC_BIND", "OMP_WAIT_POLICY", "KMP_AFFINITY")
#: runs (first + re-runs) when LoadGen calls a run too short for the minimum duration
MAX_ATTEMPTS = 3

Feeds = Mapping[str, Any]


def timed_call(executable: Executable, feeds: Sequence[Feeds]
               ) -> tuple[Callable[[Any], Any], list[Any], str]:
    """(call, its prepared arguments, its name), prepared outside any timed region.

    The name is ``run`` when the driver keeps the default ``run_prepared``
    (which calls ``run``, input checks and output conversion included).
    """
    prepared = [executable.prepare(feed) for feed in feeds]
    overridden = type(executable).run_prepared is not Executable.run_prepared
    return executable.run_prepared, prepared, "run_prepared" if overridden else "run"


def check_prepared(executable: Executable, feed: Feeds, prepared: Any,
                   tolerance: tuple[float, float]) -> None:
    """Raise :class:`TargetError` unless ``run_prepared`` gives what ``run`` gives."""
    expected = executable.run(feed)
    verdict = compare_outputs(list(expected.values()), executable.run_prepared(prepared),
                              list(expected), *tolerance)
    if not verdict.passed:
        raise TargetError(f"the driver's run_prepared disagrees with its run: {verdict.message}")


def warm_up(call: Callable[[Any], Any], feeds: Sequence[Any], settings: ScenarioSettings
            ) -> np.ndarray:
    """Untimed runs: at least ``warmup_queries`` and at least ``warmup_s`` seconds."""
    times: list[int] = []
    started = time.perf_counter()
    while len(times) < settings.warmup_queries or time.perf_counter() - started < settings.warmup_s:
        begin = time.perf_counter_ns()
        call(feeds[len(times) % len(feeds)])
        times.append(time.perf_counter_ns() - begin)
    return np.asarray(times, dtype=np.int64)


class _SystemUnderTest:
    """The LoadGen SUT: runs prepared feeds, times each run, never lets an error
    escape into LoadGen's thread (that would abort the worker)."""

    def __init__(self, lg: Any, call: Callable[[Any], Any], feeds: Sequence[Any],
                 batch_size: int) -> None:
        self.lg = lg
        self.call = call
        self.feeds = feeds
        self.batch_size = batch_size
        self.begin_ns: list[int] = []
        self.latency_ns: list[int] = []
        self.samples = 0  # samples LoadGen asked for and got (the last batch may be short)
        self.error: BaseException | None = None

    def issue(self, query_samples: Sequence[Any]) -> None:
        step = self.batch_size
        for first in range(0, len(query_samples), step):
            chunk = query_samples[first:first + step]
            if self.error is None:
                # single-stream: the sample LoadGen picked; offline: the prepared batches
                # in turn (a short last batch still runs a full prepared batch)
                feed = self.feeds[(chunk[0].index if step == 1 else len(self.latency_ns))
                                  % len(self.feeds)]
                begin = time.perf_counter_ns()
                try:
                    self.call(feed)
                except BaseException as exc:  # carried out after the test
                    self.error = exc
                else:
                    self.latency_ns.append(time.perf_counter_ns() - begin)
                    self.begin_ns.append(begin)
                    self.samples += len(chunk)
            self.lg.QuerySamplesComplete(
                [self.lg.QuerySampleResponse(q.id, 0, 0) for q in chunk])

    def flush(self) -> None:
        pass


def _test_settings(lg: Any, settings: ScenarioSettings, calibration_ns: float) -> Any:
    """LoadGen settings; ``calibration_ns`` is the expected time of one inference."""
    test = lg.TestSettings()
    test.mode = lg.TestMode.PerformanceOnly
    test.min_duration_ms = int(round(settings.min_duration_s * 1000))
    if settings.scenario == OFFLINE:
        test.scenario = lg.TestScenario.Offline
        # LoadGen issues 1.1 x min_duration x expected_qps samples in one query:
        # ask for at least min_queries samples, and enough to fill the duration
        measured_qps = settings.batch_size / (calibration_ns / 1e9)
        floor_qps = settings.min_queries / max(1.1 * settings.min_duration_s, 1e-3)
        test.offline_expected_qps = max(measured_qps, floor_qps)
    else:
        test.scenario = lg.TestScenario.SingleStream
        test.min_query_count = settings.min_queries
        # LoadGen pre-generates queries from this; under-estimating leaves a margin
        test.single_stream_expected_latency_ns = max(int(calibration_ns), 1)
    return test


def _run_loadgen(lg: Any, sut: _SystemUnderTest, qsl_size: int, test: Any
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    out_dir = tempfile.mkdtemp(prefix="shipei-loadgen-")
    try:
        log = lg.LogSettings()
        log.log_output.outdir = out_dir
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        handle = lg.ConstructSUT(sut.issue, sut.flush)
        qsl = lg.ConstructQSL(qsl_size, qsl_size, lambda _: None, lambda _: None)
        try:
            lg.StartTestWithLogSettings(handle, qsl, test, log)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(handle)
        texts = {name: (Path(out_dir) / name).read_text(errors="replace")
                 for name in loadgen_log.LOG_FILES if (Path(out_dir) / name).exists()}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    detail = loadgen_log.parse_detail(texts.get("mlperf_log_detail.txt", ""))
    return loadgen_log.results(detail), texts


def process_threads() -> dict[str, Any]:
    """Thread facts of this (worker) process: live threads, CPUs allowed, pool variables."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = None
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"process_threads": threads, "cpu_affinity": affinity,
            "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}


def measure(executable: Executable, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Prepare and check, warm up, then time ``payload["feeds"]`` under LoadGen.

    ``payload``: ``settings`` (:class:`ScenarioSettings` as a dict), ``feeds``
    (named inputs) and optionally ``tolerance`` ``(rtol, atol)`` for the check
    that ``run_prepared`` agrees with ``run`` (default: exact).
    """
    import mlperf_loadgen as lg

    settings = ScenarioSettings.from_dict(dict(payload["settings"]))
    if not payload["feeds"]:
        raise ValueError("no prepared inputs to time")
    call, feeds, call_name = timed_call(executable, payload["feeds"])
    if call_name != "run":
        check_prepared(executable, payload["feeds"][0], feeds[0],
                       tuple(payload.get("tolerance", (0.0, 0.0))))
    warm = warm_up(call, feeds, settings)
    warm_median_ns = float(percentile_of(warm, 50))
    # single-stream: LoadGen stops once both minimums are met, so a low guess only
    # adds headroom; offline: the sample count follows the throughput, i.e. the mean
    calibration_ns = warm_median_ns if settings.scenario != OFFLINE else float(warm.mean())
    step = settings.batch_size if settings.scenario == OFFLINE else 1
    attempts = 0
    while True:
        attempts += 1
        sut = _SystemUnderTest(lg, call, feeds, step)
        test = _test_settings(lg, settings, calibration_ns * (0.5 if step == 1 else 1.0))
        before, cpu_before = machine.snapshot(), os.times()
        result, texts = _run_loadgen(lg, sut, len(feeds), test)
        cpu_after, after = os.times(), machine.snapshot()
        if sut.error is not None:
            raise sut.error
        if (result.get("valid") or attempts >= MAX_ATTEMPTS or not sut.latency_ns
                or result.get("min_duration_met") is not False):
            break  # only a short run is the calibration's fault and worth repeating
        # the run went faster than the warm-up said (a busy machine calmed down):
        # ask for twice the rate it reached; overshooting only lengthens the run
        calibration_ns = float(np.mean(sut.latency_ns)) / 2
    own_cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    begin = np.asarray(sut.begin_ns, dtype=np.int64)
    return {
        "latency_ns": np.asarray(sut.latency_ns, dtype=np.int64),
        "start_ns": begin - begin[0] if begin.size else begin,
        "samples_per_query": step,
        "samples": sut.samples,
        "loadgen_wall_s": after.wall - before.wall,
        "machine": machine.conditions(before, after, own_cpu_s) | machine.cpu_frequency(),
        "warmup": {"queries": int(warm.size), "seconds": float(warm.sum()) / 1e9,
                   "median_ms": warm_median_ns / 1e6},
        "attempts": attempts,
        "loadgen": result,
        "loadgen_logs": texts,
        "threads": process_threads(),
        "engine": f"mlperf_loadgen {result.get('version', '')}".strip(),
        "timed_call": call_name,
    }
