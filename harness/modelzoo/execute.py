"""Running a zoo model on a target and judging it against its golden.

:func:`run_outputs` compiles a model on a host (see :mod:`harness.isolation.host`) and
returns its outputs per data set - plain runs, or a whole signal streamed
through a stateful model. :func:`execute_model` turns that into an
:class:`~harness.cases.case.Outcome`: the golden's checks first (a missing, stale or
corrupt golden or model is the harness's ``infra_error``, never the target's),
then the accuracy metrics and the precision-class policy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.cases.case import Outcome, outcome_from_exception, unsupported_reason
from harness.driver.target import Capabilities
from harness.isolation.host import HOST_FAILURES, Host
from harness.modelzoo import golden as golden_store
from harness.modelzoo.manifest import Manifest, ManifestError
from harness.modelzoo.metrics import OutputMetrics, headline, policy_for, violations
from harness.modelzoo.sources import SourceError
from harness.modelzoo.streaming import WORKER_FUNCTION, worker_payload
from harness.modelzoo.zoo import ZooEntry
from harness.verdicts.judge import Judgement, compare_outputs, judged_precision


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self, floor: float = 0.0) -> float:
        return max(self.end - time.perf_counter(), floor)


def run_outputs(host: Host, key: str, manifest: Manifest, model: bytes,
                data_sets: list[dict[str, np.ndarray]], deadline: Deadline,
                timings: dict[str, float]) -> list[dict[str, Any]]:
    """Compile ``model`` under ``key`` and return the judged outputs per data set.

    Fills ``timings`` (compile_s, run_s) as it goes, so a failure keeps them.
    """
    timings["compile_s"] = host.compile(key, model, deadline.left())
    judged = [spec.name for spec in manifest.outputs]
    results = []
    run_s = 0.0
    for feeds in data_sets:
        started = time.perf_counter()
        if manifest.streaming is not None:
            outputs = host.call(WORKER_FUNCTION, key,
                                worker_payload(feeds, manifest.streaming), deadline.left())
        else:
            outputs, _ = host.run(key, feeds, deadline.left())
        run_s += time.perf_counter() - started
        timings["run_s"] = run_s
        results.append({name: outputs[name] for name in judged if name in outputs})
    return results


def _prepare(entry: ZooEntry, golden_dir: Path
             ) -> tuple[bytes, list[dict[str, np.ndarray]], golden_store.Golden]:
    model = entry.model_bytes()
    data_sets = entry.data_sets()
    golden = golden_store.load(golden_dir, entry.name, entry.manifest.sha256,
                               entry.inputs_digest())
    return model, data_sets, golden


def judge_outputs(manifest: Manifest, expected: list[Mapping[str, Any]],
                  actual: list[Mapping[str, Any]], precision: str
                  ) -> tuple[bool, str, dict[str, Any]]:
    """Metrics and verdict for a model's outputs against its golden."""
    policy = policy_for(manifest.precision, manifest.tolerance, precision)
    names = [spec.name for spec in manifest.outputs]
    # without an element-wise policy, compare_outputs still checks names, shapes,
    # dtypes and non-finite values
    rtol, atol = (policy.rtol, policy.atol) if policy.elementwise else (0.0, 1e300)
    verdict = Judgement(True)
    accumulators = {spec.name: OutputMetrics(spec) for spec in manifest.outputs}
    for golden_outputs, outputs in zip(expected, actual, strict=True):
        element = compare_outputs([golden_outputs[n] for n in names], dict(outputs), names,
                                  rtol, atol)
        verdict.absorb(element)
        if not element.passed and not element.compared:
            continue  # missing output, wrong shape or dtype: no figures to compute
        for name in names:
            accumulators[name].add(golden_outputs[name], outputs[name], policy)
    summaries = {name: acc.summary() for name, acc in accumulators.items()}
    broken = violations(summaries, policy) if verdict.compared else []
    metrics: dict[str, Any] = {
        "precision_class": policy.precision,
        "policy": policy.to_dict(),
        **headline(summaries),
        "mismatched_elements": verdict.mismatched,
        "compared_elements": verdict.compared,
        "data_sets": len(expected),
        "outputs": summaries,
    }
    if not verdict.compared and not verdict.passed:
        metrics["max_abs_error"] = float("inf")
    if not verdict.passed:
        return False, verdict.message, metrics
    if broken:
        return False, "; ".join(broken), metrics
    return True, "", metrics


def execute_model(entry: ZooEntry, host: Host, caps: Capabilities, timeout: float,
                  golden_dir: Path, key: str | None = None) -> Outcome:
    """Run one zoo model on ``host`` within ``timeout`` seconds and judge it."""
    deadline = Deadline(timeout)
    started = time.perf_counter()
    available = entry.status()
    if not available.available:
        return Outcome("skip", available.reason)
    try:
        model, data_sets, golden = _prepare(entry, golden_dir)
    except (SourceError, ManifestError, golden_store.GoldenError) as exc:
        return Outcome("infra_error", str(exc))
    reason = unsupported_reason(onnx.load_from_string(model), caps)
    if reason:
        return Outcome("skip", reason)
    key = key or f"models::{entry.name}"
    timings: dict[str, float] = {}
    try:
        outputs = run_outputs(host, key, entry.manifest, model, data_sets, deadline, timings)
        placement = host.placement(key, deadline.left(1.0))
    except HOST_FAILURES as exc:
        outcome = outcome_from_exception(exc, started)
        outcome.timings.update(timings)
        return outcome
    finally:
        host.release(key)
    # the configuration's precision, unless the placement says the model did not run in it
    precision = judged_precision(caps.precision, placement)
    passed, message, metrics = judge_outputs(entry.manifest, golden.outputs, outputs,
                                             precision)
    if precision != caps.precision:  # the configuration's policy did not apply: say so
        metrics["configured_precision"] = caps.precision
    timings["total_s"] = time.perf_counter() - started
    return Outcome("pass" if passed else "fail", message, metrics, timings, placement)


def model_tags(entry: ZooEntry) -> dict[str, Any]:
    manifest = entry.manifest
    return {"model": manifest.name, "title": manifest.title, "task": manifest.task,
            "precision": manifest.precision, "source": manifest.source.describe(),
            "model_sha256": manifest.sha256, "slow": manifest.slow}
