"""Measuring one performance case on a target, from the controlling process.

Order: load (inputs prepared here, before any timing) -> compile -> one checked
run, judged against the reference outside the timed region -> in the worker
(:mod:`harness.perf.loops`): the driver's ``prepare`` of every feed, one
``run_prepared`` checked against ``run`` with the case's tolerances, warm-up and
LoadGen timing of ``run_prepared`` -> statistics.
Every way this can end is an :class:`~harness.cases.case.Outcome`, as for conformance
cases: a wrong output is ``fail`` and is not timed; a target that raises, hangs
or dies is ``error``/``timeout``/``crash``; a harness fault is ``infra_error``.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.cases.case import Outcome, outcome_from_exception, unsupported_reason
from harness.driver.target import Capabilities
from harness.isolation.host import CaseTimeout, Host, InfraError, RemoteError, WorkerCrash
from harness.perf import samples as samples_io
from harness.perf.cases import PerfCase
from harness.perf.loadgen_log import unmet
from harness.perf.settings import OFFLINE
from harness.perf.stats import summarize
from harness.verdicts.judge import compare_outputs, effective_tolerance, judged_precision

PERF_SCHEMA_VERSION = "1.0"
LOOP_FUNCTION = "harness.perf.loops:measure"
#: capability ``extra`` keys that describe thread settings, recorded with every figure
THREAD_KEYS = ("thread", "stream", "core", "affinity", "pin", "num_")
#: how long a started worker may take to answer its first request (start-up has its own limit)
READY_TIMEOUT_S = 60.0


@dataclass
class PerfResult:
    outcome: Outcome
    samples: samples_io.Samples | None = None
    logs: dict[str, str] = field(default_factory=dict)


def loadgen_missing() -> str | None:
    if importlib.util.find_spec("mlperf_loadgen") is None:
        return "MLPerf LoadGen is not installed: pip install 'shipei[perf]' (mlcommons-loadgen)"
    return None


def declared_threads(caps: Capabilities) -> dict[str, Any]:
    return {k: v for k, v in caps.extra.items() if any(word in k.lower() for word in THREAD_KEYS)}


def measure_case(case: PerfCase, host: Host, caps: Capabilities, timeout: float,
                 key: str | None = None) -> PerfResult:
    """Check and time ``case`` on ``host`` within ``timeout`` seconds in all, counted
    from when the target's worker is ready: its start-up is the target's set-up (a
    worker that does not start is ``infra_error``), never time charged to the case."""
    started = time.perf_counter()
    missing = loadgen_missing()
    if missing:
        return PerfResult(Outcome("skip", missing))
    try:
        workload = case.load(case.settings)
    except Exception as exc:
        return PerfResult(Outcome("infra_error",
                                  f"could not prepare the workload: {type(exc).__name__}: {exc}"))
    reason = unsupported_reason(workload.model, caps)
    if reason:
        return PerfResult(Outcome("skip", reason))
    if workload.batch_size and case.settings.scenario == OFFLINE:
        case = replace(case, settings=case.settings.with_(batch_size=workload.batch_size))
    key = key or f"{case.suite}::{case.name}"
    timings: dict[str, float] = {}
    try:
        timings["worker_start_s"] = wait_until_ready(host)
    except (CaseTimeout, WorkerCrash, InfraError, RemoteError) as exc:
        outcome = outcome_from_exception(_start_up_failure(exc), started)
        outcome.timings.update(timings)
        return PerfResult(outcome)
    deadline = time.perf_counter() + timeout
    try:
        timings["compile_s"] = host.compile(key, workload.model.SerializeToString(),
                                            _left(deadline))
        outputs, timings["check_s"] = host.run(key, workload.check.inputs, _left(deadline))
        # the configuration's precision, unless the placement says it did not run in it
        precision = judged_precision(caps.precision, host.placement(key, _left(deadline)))
        rtol, atol = effective_tolerance(case.rtol, case.atol, precision)
        verdict = compare_outputs(workload.check.outputs, outputs, workload.output_names(),
                                  case.rtol, case.atol, precision)
        check = verdict.metrics() | {"rtol": rtol, "atol": atol, "precision": precision}
        if precision != caps.precision:  # the configuration's floors did not apply: say so
            check["configured_precision"] = caps.precision
        if not verdict.passed:
            return PerfResult(Outcome(
                "fail", f"outputs differ from the reference, so not timed: {verdict.message}",
                check, timings | {"total_s": time.perf_counter() - started}))
        begin = time.perf_counter()
        raw = host.call(LOOP_FUNCTION, key,
                        {"settings": case.settings.to_dict(), "feeds": workload.feeds,
                         "tolerance": (rtol, atol)},
                        _left(deadline))
        timings["measure_s"] = time.perf_counter() - begin
        placement = host.placement(key, max(deadline - time.perf_counter(), 1.0))
    except (CaseTimeout, WorkerCrash, InfraError, RemoteError) as exc:
        outcome = outcome_from_exception(exc, started)
        if isinstance(exc, CaseTimeout):  # the case's budget, not what was left of it
            outcome.message = f"{exc.phase} exceeded the case's {timeout:g} s timeout; " \
                              "worker killed"
            outcome.metrics["timeout_s"] = timeout
        outcome.timings.update(timings)
        return PerfResult(outcome)
    finally:
        host.release(key)
    timings["total_s"] = time.perf_counter() - started
    return _result(case, caps, raw, check, timings, placement)


def wait_until_ready(host: Host) -> float:
    """Start the target's worker when none is running and wait for it to answer; the
    seconds that took. The worker's own start-up limit applies (``InfraError`` past it)."""
    begin = time.perf_counter()
    host.identity(READY_TIMEOUT_S)
    return time.perf_counter() - begin


def _start_up_failure(exc: Exception) -> Exception:
    """A worker that fails while starting is the infrastructure's, whatever the way."""
    if isinstance(exc, (InfraError, RemoteError)):
        return exc
    return InfraError(f"worker start-up: {exc}")


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; never negative."""
    return max(deadline - time.perf_counter(), 0.0)


def _result(case: PerfCase, caps: Capabilities, raw: dict[str, Any],
            check: dict[str, Any], timings: dict[str, float], placement: dict[str, Any]
            ) -> PerfResult:
    latency = np.asarray(raw["latency_ns"], dtype=np.int64)
    start = np.asarray(raw["start_ns"], dtype=np.int64)
    per_query = int(raw["samples_per_query"])
    loadgen = raw["loadgen"]
    metrics: dict[str, Any] = {
        "perf_schema_version": PERF_SCHEMA_VERSION,
        "scenario": case.settings.scenario,
        "model": case.model,
        "batch_size": per_query,
        "engine": raw["engine"],
        "timed_call": raw["timed_call"],
        "settings": case.settings.to_dict(),
        "loadgen": {k: v for k, v in loadgen.items() if k != "version"},
        "warmup": raw["warmup"],
        "attempts": raw["attempts"],
        "threads": {"declared": declared_threads(caps)} | raw["threads"],
        "machine": raw["machine"],
        "output_check": check,
    }
    if latency.size == 0:
        return PerfResult(Outcome("error", "no inference completed under LoadGen", metrics,
                                  timings, placement), logs=raw["loadgen_logs"])
    span_s = (start[-1] + latency[-1]) / 1e9
    metrics["summary"] = summarize(latency, per_query, span_s, raw.get("samples"))
    status, message = "pass", ""
    if not loadgen.get("valid"):
        status = "error"
        message = (f"LoadGen result {loadgen.get('validity', 'missing')}: "
                   f"{'; '.join(unmet(loadgen))} (after {raw['attempts']} attempt(s))")
    elif raw["machine"].get("alone") is False:
        message = (f"not alone on the machine: other processes used "
                   f"{raw['machine']['foreign_cpu_share']:.0%} of the CPU time")
    outcome = Outcome(status, message, metrics, timings, placement)
    return PerfResult(outcome, samples_io.Samples(latency, start, per_query),
                      raw["loadgen_logs"])
