"""A 0-d input reaches the SDK as 0-d (issue 27, item 1).

136 of the ONNX node cases have a scalar input (Trilu's ``k``, Clip's bounds, Pow's
exponent ...). The shared SDK driver code once fed every input through
``np.ascontiguousarray`` (always ndim >= 1) and re-declared the model with that shape,
so each SDK was asked about a different model. Here the feeding path runs in process
against a real onnxruntime CPU session, and each 信创 SDK whose environment is built runs
a scalar-input model in a real worker in that environment (skipped, naming the missing
environment, where it is not built).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from harness.driver.registry import TargetSpec
from harness.environments import target_envs as envs
from harness.isolation.host import ProcessHost, RemoteError
from targets.mnn_target import MnnTarget
from targets.ncnn_target import NcnnTarget
from targets.nncase_target import NncaseTarget
from targets.paddle_target import PaddleTarget
from targets.rknn_target import RknnTarget
from targets.sdk_target import DeferredExecutable, as_fed, with_static_shapes


def trilu_with_k() -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
    """Trilu (upper) with a scalar ``k``: the shape of onnx's ``test_triu_*`` cases."""
    graph = helper.make_graph(
        [helper.make_node("Trilu", ["x", "k"], ["y"])], "triu_k",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    return model.SerializeToString(), {"x": x, "k": np.array(1, np.int64)}, np.triu(x, 1)


def clip_with_bounds() -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
    """Clip with scalar ``min`` and ``max`` inputs (opset 13)."""
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], "clip_bounds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("lo", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("hi", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    feeds = {"x": x, "lo": np.array(2.0, np.float32), "hi": np.array(7.0, np.float32)}
    return model.SerializeToString(), feeds, np.clip(x, 2.0, 7.0)


def test_a_scalar_feed_keeps_rank_zero():
    assert np.ascontiguousarray(np.array(1.5)).shape == (1,)  # why as_fed exists
    fed = as_fed(np.array(1.5, np.float32))
    assert fed.shape == () and fed.dtype == np.float32
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert as_fed(strided).flags.c_contiguous and np.array_equal(as_fed(strided), strided)


def test_static_shapes_declare_a_scalar_input_as_rank_zero():
    model, feeds, _ = trilu_with_k()
    declared = {value.name: value.type.tensor_type
                for value in onnx.load_from_string(with_static_shapes(model, feeds)).graph.input}
    assert declared["k"].HasField("shape") and len(declared["k"].shape.dim) == 0
    assert [d.dim_value for d in declared["x"].shape.dim] == [3, 4]


def test_an_input_with_no_declared_shape_becomes_rank_zero_not_unknown():
    graph = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["y"])], "no_shape",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    static = with_static_shapes(model.SerializeToString(), {"a": np.array(2.0, np.float32)})
    tensor = onnx.load_from_string(static).graph.input[0].type.tensor_type
    assert tensor.HasField("shape") and len(tensor.shape.dim) == 0


class _OnnxRuntimeRunner:
    """A real onnxruntime CPU session built, as the NPU drivers build, from the model
    with its shapes fixed to the first run's feeds; it keeps what it was fed."""

    def __init__(self, model: bytes, feeds: Mapping[str, np.ndarray]) -> None:
        self.static = with_static_shapes(model, feeds)
        self.session = ort.InferenceSession(self.static, providers=["CPUExecutionProvider"])
        self.fed: list[dict[str, Any]] = []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.fed.append(dict(feeds))
        return self.session.run(None, dict(feeds))


@pytest.mark.parametrize("case", [trilu_with_k, clip_with_bounds],
                         ids=lambda c: c.__name__)
def test_the_shared_feeding_path_hands_the_runtime_a_scalar(case):
    model, feeds, expected = case()
    runners: list[_OnnxRuntimeRunner] = []

    def compile_for(fed: Mapping[str, np.ndarray]) -> _OnnxRuntimeRunner:
        runners.append(_OnnxRuntimeRunner(model, fed))
        return runners[-1]

    executable = DeferredExecutable(model, compile_for)
    outputs = executable.run(feeds)
    np.testing.assert_array_equal(outputs["y"], expected)
    (runner,) = runners
    for name, value in feeds.items():
        assert runner.fed[0][name].shape == value.shape, name
    scalars = [value for value in onnx.load_from_string(runner.static).graph.input
               if value.name in ("k", "lo", "hi")]
    assert scalars and all(len(v.type.tensor_type.shape.dim) == 0 for v in scalars)
    static_shapes = executable.placement()["static_shapes"]
    assert all(static_shapes[name] == list(value.shape) for name, value in feeds.items())


# --- the SDKs themselves, in their environments -----------------------------------------

def _host(driver: type) -> ProcessHost:
    ready, reason = envs.status(driver.environment, envs.known_specs().get(driver.environment))
    if not ready:
        pytest.skip(f"{driver.name}: {reason}")
    spec = TargetSpec(name=driver.name, factory=f"{driver.__module__}:{driver.__name__}")
    launcher, env = envs.worker_launch(driver())
    return ProcessHost(spec, "default", {}, launcher=launcher, env=env)


#: (driver, case, what the SDK does with it as given: "pass", or the refusal's words)
SDK_SCALARS = [
    (NncaseTarget, trilu_with_k, "pass"),  # as fed [1] it aborted the process
    (MnnTarget, trilu_with_k, "pass"),
    (PaddleTarget, clip_with_bounds, "pass"),
    (NcnnTarget, clip_with_bounds, "Clip"),  # pnnx converts it; ncnn has no Clip with inputs
]


@pytest.mark.slow
@pytest.mark.parametrize("driver, case, verdict", SDK_SCALARS,
                         ids=[f"{d.name}:{c.__name__}" for d, c, _ in SDK_SCALARS])
def test_the_sdk_is_asked_about_the_scalar_model(driver, case, verdict):
    model, feeds, expected = case()
    host = _host(driver)
    try:
        if verdict == "pass":
            result = host.run_case("scalar", model, [feeds], timeout=300)
            actual = result["outputs"][0]["y"]
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual, expected, rtol=1e-5)
        else:
            with pytest.raises(RemoteError, match=verdict):
                host.run_case("scalar", model, [feeds], timeout=300)
    finally:
        host.close()


@pytest.mark.slow
def test_ncnn_takes_a_scalar_as_a_one_element_mat_and_says_so():
    """pnnx reads the rank-0 declaration from the model; ncnn's Mats have no rank 0, so
    the driver feeds one element and records that adaptation."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])], "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    host = _host(NcnnTarget)
    try:
        result = host.run_case("scale", model.SerializeToString(),
                               [{"x": x, "s": np.array(2.5, np.float32)}], timeout=300)
    finally:
        host.close()
    np.testing.assert_allclose(result["outputs"][0]["y"], x * 2.5)
    (adaptation,) = result["placement"]["adaptations"]
    assert adaptation.startswith("0-d input 's' fed as a 1-element ncnn Mat")


@pytest.mark.slow
def test_rknn_is_asked_about_the_scalar_model_as_given():
    """rknn-toolkit2 gets ``k`` declared rank 0: what it does with that is its own
    verdict (recorded), not one about a model re-declared with ``[1]``."""
    model, feeds, expected = trilu_with_k()
    host = _host(RknnTarget)
    try:
        try:
            result = host.run_case("scalar", model, [feeds], timeout=600)
        except RemoteError as exc:
            assert "rknn-toolkit2" in exc.message  # the toolkit's own refusal, quoted
            return
    finally:
        host.close()
    assert result["placement"]["static_shapes"]["k"] == []
    np.testing.assert_allclose(result["outputs"][0]["y"], expected, rtol=1e-2)


def test_an_ncnn_scalar_output_gets_back_rank_zero_and_an_unknown_shape_is_left_alone():
    from targets.ncnn_target import restore_onnx_shape

    one = np.array([5.5], np.float32)  # ncnn's 1-element Mat for a rank-0 ONNX output
    assert restore_onnx_shape(one, []).shape == ()
    assert restore_onnx_shape(one, None).shape == (1,)  # shape inference gave no shape


def test_a_converter_process_dies_with_the_worker_that_started_it(tmp_path):
    """pnnx runs as a child of the ncnn worker; when the harness kills that worker for a
    case timeout, pnnx must not go on converting as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    worker = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys; from targets.ncnn_target import die_with_parent; "
        "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); p.wait()")])
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    for _ in range(100):  # the kernel delivers the parent-death signal at once
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as stat:
            if stat.read().split()[2] == "Z":  # killed, waiting for init to reap it
                return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the converter outlived the worker that started it")


def test_onnxruntime_raw_io_keeps_a_scalar_rank_zero():
    """The onnxruntime targets' OrtValue path (models with a type numpy lacks) hands a 0-d
    input over as 0-d, as the case gives it."""
    from targets.ort_values import to_ort_value

    for value in (np.array(3.0, dtype=np.float32), np.array(True), np.array(7, np.int64)):
        assert to_ort_value(value).shape() == []
    assert to_ort_value(np.zeros((2, 3), np.float32).T).shape() == [3, 2]
