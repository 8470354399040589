"""The prepared fast path (``Executable.prepare`` / ``run_prepared``) on real runtimes:
it gives what ``run`` gives, refuses what ``run`` refuses, and is what gets timed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from harness.driver.target import Executable, InputMismatchError, Target, TargetError
from harness.perf import loops
from harness.perf.settings import SINGLE_STREAM, ScenarioSettings
from suites.performance.models import MODELS, model_bytes

QUICK = dict(warmup_s=0.05, warmup_queries=5, min_duration_s=0.3, distinct_inputs=4)


def _onnxruntime() -> Target:
    from targets.onnxruntime_target import OnnxRuntimeTarget

    return OnnxRuntimeTarget("cpu", intra_op_threads=1)


def _openvino() -> Target:
    pytest.importorskip("openvino")
    from targets.openvino_target import OpenVinoTarget

    target = OpenVinoTarget("cpu", threads=1)
    if not target.availability().available:
        pytest.skip(target.availability().reason)
    return target


def _faulty() -> Target:
    from targets.testing import FaultyTarget

    return FaultyTarget(fault="none")


DRIVERS = {"onnxruntime-cpu": _onnxruntime, "openvino-cpu": _openvino, "shipei-faulty": _faulty}


@pytest.fixture(params=sorted(DRIVERS))
def compiled(request: pytest.FixtureRequest) -> Executable:
    executable = DRIVERS[request.param]().compile(model_bytes("mlp"))
    yield executable
    executable.close()


def test_run_prepared_equals_run(compiled: Executable):
    feeds = MODELS["mlp"].inputs(3, seed=7)
    prepared = [compiled.prepare(feed) for feed in feeds]
    # twice over, interleaved with run: prepared inputs are reusable and unharmed by run
    for _ in range(2):
        for feed, ready in zip(feeds, prepared, strict=True):
            expected = compiled.run(feed)
            got = compiled.run_prepared(ready)
            assert list(got) == list(expected)
            for name in expected:
                assert got[name].dtype == expected[name].dtype
                np.testing.assert_array_equal(got[name], expected[name])
    # different inputs give different outputs (the comparison above is not vacuous)
    first = compiled.run_prepared(prepared[0])
    second = compiled.run_prepared(prepared[1])
    assert not np.array_equal(next(iter(first.values())), next(iter(second.values())))


def test_outputs_survive_the_next_run_prepared(compiled: Executable):
    feeds = MODELS["mlp"].inputs(2, seed=3)
    prepared = [compiled.prepare(feed) for feed in feeds]
    first = compiled.run_prepared(prepared[0])
    kept = {name: np.array(value, copy=True) for name, value in first.items()}
    compiled.run_prepared(prepared[1])
    for name, value in kept.items():
        np.testing.assert_array_equal(first[name], value)


@pytest.mark.parametrize("driver", ["onnxruntime-cpu", "openvino-cpu"])
def test_prepare_refuses_what_run_refuses(driver: str):
    executable = DRIVERS[driver]().compile(model_bytes("mlp"))
    feed = MODELS["mlp"].inputs(1)[0]
    name = next(iter(feed))
    for bad in ({name: feed[name].astype(np.float64)}, {name: feed[name], "nope": feed[name]}):
        with pytest.raises(InputMismatchError) as from_run:
            executable.run(bad)
        with pytest.raises(InputMismatchError) as from_prepare:
            executable.prepare(bad)
        assert str(from_prepare.value) == str(from_run.value)


def test_the_default_implementation_calls_run():
    executable = _faulty().compile(model_bytes("mlp"))
    assert type(executable).run_prepared is Executable.run_prepared
    feed = MODELS["mlp"].inputs(1)[0]
    prepared = executable.prepare(feed)
    assert prepared == feed and prepared is not feed
    _, _, name = loops.timed_call(executable, [feed])
    assert name == "run"


@pytest.mark.parametrize("driver", ["onnxruntime-cpu", "openvino-cpu", "shipei-faulty"])
def test_the_loop_times_the_prepared_call(driver: str):
    pytest.importorskip("mlperf_loadgen")
    executable = DRIVERS[driver]().compile(model_bytes("tiny"))
    settings = ScenarioSettings(SINGLE_STREAM, min_queries=64, **QUICK)
    raw = loops.measure(executable, {"settings": settings.to_dict(),
                                     "feeds": MODELS["tiny"].inputs(4)})
    assert raw["timed_call"] == ("run" if driver == "shipei-faulty" else "run_prepared")
    assert raw["loadgen"]["valid"] and raw["latency_ns"].size >= 64


class _Disagrees(Executable):
    """A driver bug: its fast path returns something other than ``run``."""

    def __init__(self, inner: Executable, offset: float) -> None:
        self.inner, self.offset = inner, offset

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.run(inputs)

    def run_prepared(self, prepared: Any) -> dict[str, Any]:
        return {k: v + np.float32(self.offset) for k, v in self.inner.run(prepared).items()}


def test_a_fast_path_that_disagrees_with_run_is_not_timed():
    pytest.importorskip("mlperf_loadgen")
    inner = _onnxruntime().compile(model_bytes("tiny"))
    settings = ScenarioSettings(SINGLE_STREAM, min_queries=64, **QUICK).to_dict()
    feeds = MODELS["tiny"].inputs(2)
    with pytest.raises(TargetError, match="run_prepared disagrees with its run"):
        loops.measure(_Disagrees(inner, 0.5), {"settings": settings, "feeds": feeds})
    # within the case's tolerance it is timed
    raw = loops.measure(_Disagrees(inner, 1e-7), {"settings": settings, "feeds": feeds,
                                                  "tolerance": (0.0, 1e-5)})
    assert raw["timed_call"] == "run_prepared"


def test_openvino_fast_path_exchanges_bfloat16_bits_as_run_does():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "neg_bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    executable = _openvino().compile(model.SerializeToString())
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    expected = executable.run({"x": x})
    got = executable.run_prepared(executable.prepare({"x": x}))
    assert got["y"].dtype == expected["y"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got["y"].astype(np.float32), -x.astype(np.float32))
