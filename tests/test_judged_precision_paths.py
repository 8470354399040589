"""The precision a result is judged at is the one it ran in, on every path that judges
outputs: a reduced-precision configuration whose placement says the model stayed on the
CPU in float (``cpu_only``) is judged as fp32 by the model zoo and by the performance
check too, as the operator cases are (tests/test_profile_precision_floors.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from harness.driver.target import Availability, Capabilities, Executable, Target, TargetIdentity
from harness.isolation.host import InlineHost
from harness.modelzoo.execute import execute_model
from harness.modelzoo.zoo import Zoo

#: what the "device" gets wrong: 0.5 %, inside fp16's floors (1e-2) and the fp16 model
#: policy, outside the fp32 ones (a case's 1e-4, the zoo's fp32 rtol 1e-3)
SCALE = np.float32(1.005)


class _ScaledExecutable(Executable):
    def __init__(self, model: bytes, placement: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self._placement = placement

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        outputs = self.session.run(None, dict(inputs))
        return {name: value * SCALE for name, value in zip(self.names, outputs, strict=True)}

    def placement(self) -> dict[str, Any]:
        return dict(self._placement)


class HalfTarget(Target):
    """An fp16 configuration whose compiler places the model on its NPU or leaves it all
    on the CPU in float (``on_cpu``), reported as nncase reports it."""

    def __init__(self, on_cpu: bool) -> None:
        self.on_cpu = on_cpu

    @property
    def identity(self) -> TargetIdentity:
        return TargetIdentity(name="half", kind="chip", vendor="Tests", driver_version="1",
                              runtime="onnxruntime", runtime_version="1", device="npu",
                              configuration="fp16")

    def availability(self) -> Availability:
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        return Capabilities(devices=("npu",), precision="fp16")

    def compile(self, model: bytes) -> Executable:
        return _ScaledExecutable(model, {"cpu_only": self.on_cpu})


@pytest.mark.parametrize("on_cpu, status, judged", [(False, "pass", "fp16"),
                                                   (True, "fail", "fp32")])
def test_the_model_zoo_judges_a_cpu_only_result_as_fp32(on_cpu, status, judged, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    zoo = Zoo()
    target = HalfTarget(on_cpu)
    outcome = execute_model(zoo.entry("small_cnn"), InlineHost(target), target.capabilities(),
                            60.0, zoo.golden_dir)
    assert outcome.status == status, outcome.message
    assert outcome.metrics["precision_class"] == judged
    if on_cpu:
        assert outcome.metrics["configured_precision"] == "fp16"
    else:
        assert "configured_precision" not in outcome.metrics


@pytest.mark.parametrize("on_cpu, status, judged", [(False, "pass", "fp16"),
                                                   (True, "fail", "fp32")])
def test_the_performance_check_judges_a_cpu_only_result_as_fp32(on_cpu, status, judged):
    pytest.importorskip("mlperf_loadgen")
    from harness.perf.cases import PerfCase
    from harness.perf.measure import measure_case
    from harness.perf.settings import SINGLE_STREAM, ScenarioSettings
    from suites.performance.cases import workload

    settings = ScenarioSettings(SINGLE_STREAM, min_queries=64, warmup_s=0.05, warmup_queries=5,
                                min_duration_s=0.3, distinct_inputs=4)
    case = PerfCase("performance", "test_x", "tiny", settings, lambda s: workload("tiny", s))
    target = HalfTarget(on_cpu)
    outcome = measure_case(case, InlineHost(target), target.capabilities(), timeout=60).outcome
    assert outcome.status == status, outcome.message
    check = outcome.metrics["output_check"] if status == "pass" else outcome.metrics
    assert check["precision"] == judged
    if on_cpu:
        assert "outputs differ from the reference, so not timed" in outcome.message
        assert check["configured_precision"] == "fp16"
        assert (check["rtol"], check["atol"]) == (case.rtol, case.atol)
    else:
        assert "configured_precision" not in check
        assert (check["rtol"], check["atol"]) == (1e-2, 1e-3)
