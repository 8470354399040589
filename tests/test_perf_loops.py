"""The timed loops under MLPerf LoadGen, in this process, on real onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from harness.driver.target import Executable
from harness.perf import loops
from harness.perf.settings import OFFLINE, SINGLE_STREAM, ScenarioSettings
from suites.performance.models import MODELS, model_bytes
from targets.onnxruntime_target import OnnxRuntimeTarget

pytest.importorskip("mlperf_loadgen")

QUICK = dict(warmup_s=0.05, warmup_queries=5, min_duration_s=0.3, distinct_inputs=4)


@pytest.fixture(scope="module")
def tiny() -> Executable:
    return OnnxRuntimeTarget("cpu", intra_op_threads=1).compile(model_bytes("tiny"))


def test_single_stream_samples_agree_with_loadgen(tiny: Executable):
    settings = ScenarioSettings(SINGLE_STREAM, min_queries=300, **QUICK)
    feeds = MODELS["tiny"].inputs(4)
    raw = loops.measure(tiny, {"settings": settings.to_dict(), "feeds": feeds})
    latency, lg = raw["latency_ns"], raw["loadgen"]
    assert lg["valid"], lg
    assert latency.size == lg["query_count"] >= 300
    assert raw["start_ns"][0] == 0 and np.all(np.diff(raw["start_ns"]) > 0)
    # LoadGen times issue -> completion around our timed run, so each of its order
    # statistics is at least ours, and only its dispatch overhead apart
    ours = np.sort(latency)
    n = ours.size
    for key, index in (("min_latency_ns", 0), ("50.00_percentile_latency_ns", int(n * 0.5)),
                       ("90.00_percentile_latency_ns", int(n * 0.9)),
                       ("max_latency_ns", n - 1)):
        assert lg[key] >= ours[index], key
    assert lg["50.00_percentile_latency_ns"] - ours[n // 2] < 1_000_000
    # our span runs from the first inference to the end of the last; LoadGen's (which
    # met the minimum) adds its dispatch before the first and completion after the last
    span = (raw["start_ns"][-1] + latency[-1]) / 1e9
    assert 0.9 * settings.min_duration_s <= span <= raw["loadgen_wall_s"]
    assert raw["warmup"]["queries"] >= settings.warmup_queries
    assert raw["threads"]["process_threads"] >= 1
    assert "mlperf_log_summary.txt" in raw["loadgen_logs"]
    assert raw["engine"].startswith("mlperf_loadgen ")


def test_offline_batches_and_counts_samples(tiny: Executable):
    settings = ScenarioSettings(OFFLINE, min_queries=400, batch_size=8, **QUICK)
    feeds = MODELS["tiny"].inputs(4, batch=8)
    raw = loops.measure(tiny, {"settings": settings.to_dict(), "feeds": feeds})
    lg = raw["loadgen"]
    assert lg["valid"], lg
    assert raw["samples_per_query"] == 8
    # every issued sample ran inside one of our batches (the last one padded)
    assert raw["latency_ns"].size == -(-lg["effective_samples_per_query"] // 8)
    assert raw["samples"] == lg["effective_samples_per_query"]
    assert lg["effective_samples_per_query"] >= 400


class _BreaksAfter(Executable):
    """Raises on its fourth run: once the warm-up is over, inside LoadGen's thread."""

    def __init__(self, inner: Executable) -> None:
        self.inner, self.calls = inner, 0

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("device lost")
        return self.inner.run(inputs)


def test_a_failure_inside_loadgen_is_raised_not_fatal(tiny: Executable):
    settings = ScenarioSettings(SINGLE_STREAM, min_queries=64,
                                **(QUICK | {"warmup_queries": 3, "warmup_s": 0.0}))
    with pytest.raises(RuntimeError, match="device lost"):
        loops.measure(_BreaksAfter(tiny), {"settings": settings.to_dict(),
                                           "feeds": MODELS["tiny"].inputs(2)})


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="scenario"):
        ScenarioSettings("server")
    with pytest.raises(ValueError):
        ScenarioSettings(SINGLE_STREAM, min_queries=0)


# -- measure_case: the controller's side ---------------------------------------------------

def _case(load: Any, scenario: str = SINGLE_STREAM) -> Any:
    from harness.perf.cases import PerfCase

    return PerfCase("performance", "test_x", "tiny",
                    ScenarioSettings(scenario, min_queries=64, **QUICK), load)


def _host():
    from harness.isolation.host import InlineHost

    target = OnnxRuntimeTarget("cpu", intra_op_threads=1)
    return InlineHost(target), target.capabilities()


def test_measure_case_times_a_checked_model():
    from harness.perf.measure import measure_case
    from suites.performance.cases import workload

    host, caps = _host()
    result = measure_case(_case(lambda s: workload("tiny", s)), host, caps, timeout=60)
    assert result.outcome.status == "pass", result.outcome.message
    metrics = result.outcome.metrics
    assert metrics["summary"]["count"] == result.samples.latency_ns.size
    assert metrics["output_check"]["compared_elements"] == 16
    assert metrics["threads"]["declared"] == {"intra_op_threads": 1, "inter_op_threads": 0}
    assert {"compile_s", "check_s", "measure_s", "total_s"} <= set(result.outcome.timings)


def test_measure_case_blames_the_harness_for_a_broken_workload():
    from harness.perf.measure import measure_case

    def broken(settings: ScenarioSettings) -> Any:
        raise OSError("model file vanished")

    host, caps = _host()
    outcome = measure_case(_case(broken), host, caps, timeout=60).outcome
    assert outcome.status == "infra_error"
    assert "model file vanished" in outcome.message


def test_measure_case_skips_without_loadgen(monkeypatch: pytest.MonkeyPatch):
    from harness.perf import measure

    monkeypatch.setattr(measure.importlib.util, "find_spec", lambda name: None)
    host, caps = _host()
    outcome = measure.measure_case(_case(lambda s: None), host, caps, timeout=60).outcome
    assert outcome.status == "skip" and "pip install 'shipei[perf]'" in outcome.message


class _PreparedSession(Executable):
    """A driver offering the prepared fast path: validation happens in prepare only."""

    def __init__(self) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(model_bytes("tiny"),
                                            providers=["CPUExecutionProvider"])
        self.prepared = self.full_runs = 0

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.full_runs += 1
        return dict(zip(["y"], self.session.run(None, dict(inputs)), strict=True))

    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.prepared += 1
        return {k: np.ascontiguousarray(v) for k, v in inputs.items()}

    def run_prepared(self, prepared: dict[str, Any]) -> dict[str, Any]:
        return dict(zip(["y"], self.session.run(None, prepared), strict=True))


def test_the_prepared_fast_path_is_timed_when_offered():
    executable = _PreparedSession()
    settings = ScenarioSettings(SINGLE_STREAM, min_queries=64, **QUICK)
    raw = loops.measure(executable, {"settings": settings.to_dict(),
                                     "feeds": MODELS["tiny"].inputs(4)})
    assert raw["timed_call"] == "run_prepared"
    # every feed prepared once; run only once, to check the fast path against it
    assert executable.prepared == 4 and executable.full_runs == 1
    assert raw["latency_ns"].size >= 64


# -- the case's deadline starts when the worker is ready -----------------------------------

def _worker_host(start_delay_s: float = 0.0, startup_timeout: float = 60.0,
                 spec: Any = None) -> Any:
    """A real worker (onnxruntime, unless ``spec`` names another target) whose process
    sleeps ``start_delay_s`` before Python starts (as a worker on a loaded machine, or
    one importing a heavy runtime, does)."""
    import sys

    from harness.driver.registry import TargetSpec
    from harness.isolation.host import ProcessHost

    spec = spec or TargetSpec(name="onnxruntime-cpu",
                              factory="targets.onnxruntime_target:OnnxRuntimeTarget",
                              kwargs={"provider_key": "cpu", "intra_op_threads": 1})
    launcher = ["sh", "-c", f'sleep {start_delay_s}; exec "$0" "$@"', sys.executable]
    return ProcessHost(spec, startup_timeout=startup_timeout, launcher=launcher)


def _measure_tiny(host: Any, timeout: float) -> Any:
    """The tiny model's single-stream case on ``host`` (closed after), its outcome."""
    from harness.perf.measure import measure_case
    from suites.performance.cases import workload

    try:
        return measure_case(_case(lambda s: workload("tiny", s)), host,
                            OnnxRuntimeTarget("cpu", intra_op_threads=1).capabilities(),
                            timeout=timeout).outcome
    finally:
        host.close()


def test_worker_start_up_is_not_charged_to_the_case_budget():
    """A worker that takes longer to start than the case's whole budget: the case is
    still measured, its budget counted from the moment the worker is ready."""
    outcome = _measure_tiny(_worker_host(2.5), timeout=2.0)
    assert outcome.status == "pass", outcome.message
    assert outcome.timings["worker_start_s"] >= 2.5
    assert outcome.timings["total_s"] >= outcome.timings["worker_start_s"]


def test_a_worker_that_does_not_start_is_infra_error_not_the_targets_timeout():
    outcome = _measure_tiny(_worker_host(30, startup_timeout=0.5), timeout=60.0)
    assert outcome.status == "infra_error", outcome.message
    assert outcome.blame == "infrastructure"
    assert "did not start within 0.5 s" in outcome.message


def test_a_timed_out_request_reports_the_cases_budget_not_the_time_left():
    """A target whose check run outlasts the case: the case's ``timeout``, with the
    case's own budget in the message and metrics, not what was left of it."""
    from harness.driver.registry import TargetSpec

    spec = TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget",
                      kwargs={"fault": "slow", "delay_ms": 5000})
    outcome = _measure_tiny(_worker_host(spec=spec), timeout=1.5)
    assert outcome.status == "timeout", outcome.message
    assert outcome.message == "run exceeded the case's 1.5 s timeout; worker killed"
    assert outcome.metrics["timeout_s"] == 1.5
