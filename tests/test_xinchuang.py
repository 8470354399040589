"""The 信创 targets: drivers whose SDK lives in an environment of its own.

Without their environments (a fresh clone, CI) the drivers must say exactly why they
are unavailable and refuse to run in the wrong interpreter. With an environment built
(``shipei env create NAME``) the slow tests run one real model through a real worker
started in that environment and compare it with onnxruntime here.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.driver.registry import TargetSpec
from harness.driver.target import InfraError
from harness.environments import target_envs as envs
from harness.isolation.host import ProcessHost
from targets.aarch64_target import Aarch64Target
from targets.mnn_target import MnnTarget
from targets.ncnn_target import NcnnTarget
from targets.nncase_target import NncaseTarget
from targets.ort_values import RAW_IO_ADAPTATION
from targets.paddle_target import PaddleTarget
from targets.rknn_target import RknnTarget
from tests.test_driver_refusals import raw_io_samples

DRIVERS = [NncaseTarget, RknnTarget, MnnTarget, NcnnTarget, PaddleTarget, Aarch64Target]


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: d.name)
def test_absent_environment_is_an_exact_reason(driver, tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    target = driver()
    availability = target.availability()
    assert not availability.available
    assert f"shipei env create {driver.environment}" in availability.reason
    described = target.describe()
    assert described["environment"] == {"name": driver.environment, "created": False}
    assert described["runtime_version"] == "environment not created"
    with pytest.raises(InfraError, match="must run in environment"):
        target.compile(b"")


def test_every_driver_has_an_environment_spec_and_expectations():
    from targets.envs import provide_environments

    declared = {envs.EnvSpec.from_file(p).name for p in provide_environments()}
    for driver in DRIVERS:
        assert driver.environment in declared
        assert driver().expectations_path().exists(), driver.name


def _cnn() -> bytes:
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3)
                                      .astype(np.float32), "w")
    # kernel_shape is optional in ONNX; x2paddle 1.6 fails without it (docs/targets.md)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


#: (driver, configuration, max abs error accepted against onnxruntime on the CNN)
REAL_RUNS = [(NncaseTarget, "default", 1e-4), (NncaseTarget, "int8", 0.2),
             (RknnTarget, "default", 1e-2), (RknnTarget, "int8", 0.2),
             (MnnTarget, "default", 1e-4),
             # ncnn's default Winograd F(6,3) convolution: about 1e-3 on this CNN
             (NcnnTarget, "default", 2e-3),
             (PaddleTarget, "default", 1e-4), (Aarch64Target, "default", 1e-5)]


@pytest.mark.slow
@pytest.mark.parametrize("driver, configuration, tolerance", REAL_RUNS,
                         ids=[f"{d.name}:{c}" for d, c, _ in REAL_RUNS])
def test_real_worker_in_the_environment(driver, configuration, tolerance):
    ready, reason = envs.status(driver.environment, envs.known_specs().get(driver.environment))
    if not ready:
        pytest.skip(reason)
    module = driver.__module__
    spec = TargetSpec(name=driver.name, factory=f"{module}:{driver.__name__}",
                      configurations=("default", configuration))
    launcher, env = envs.worker_launch(driver(configuration))
    host = ProcessHost(spec, configuration, {}, launcher=launcher, env=env)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    try:
        result = host.run_case("cnn", _cnn(), [{"x": x}], timeout=300)
    finally:
        host.close()
    expected = ort.InferenceSession(_cnn()).run(None, {"x": x})[0]
    actual = result["outputs"][0]["y"]
    assert actual.shape == expected.shape
    assert float(np.abs(actual - expected).max()) <= tolerance
    assert onnx.load_from_string(_cnn()).graph.output[0].name == "y"


def test_a_graph_with_sequence_inputs_or_outputs_is_the_sdks_refusal_not_a_crash():
    """The vendor SDKs take tensors only: a sequence graph is an UnsupportedModelError that
    names each non-tensor, never a numpy error from stuffing a list into an array."""
    from harness.driver.target import UnsupportedModelError
    from targets.sdk_target import require_tensors

    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["seq"], ["n"])], "g", [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"tensors only; not tensors: 'seq' \("
                                                    r"sequence\)"):
        require_tensors("mnn-cpu", model.SerializeToString())
    require_tensors("mnn-cpu", _identity_model())  # plain tensors pass
    assert MnnTarget.tensors_only and not Aarch64Target.tensors_only  # onnxruntime takes them


def test_an_input_type_pnnx_cannot_declare_is_its_refusal():
    from harness.driver.target import UnsupportedModelError
    from targets.ncnn_target import _pnnx_shape

    assert _pnnx_shape(np.zeros((1, 3), np.float32)) == "[1,3]f32"
    with pytest.raises(UnsupportedModelError, match="pnnx cannot declare a bool input"):
        _pnnx_shape(np.zeros(2, bool))


def test_an_ncnn_output_gets_back_the_onnx_shape_or_at_least_its_batch_of_one():
    from targets.ncnn_target import restore_onnx_shape

    mat = np.zeros((10, 6625), np.float32)  # PP-OCR recognition: ONNX says [1, T, 6625]
    assert restore_onnx_shape(mat, [1, 10, 6625]).shape == (1, 10, 6625)
    assert restore_onnx_shape(mat, [0, 0, 6625]).shape == (1, 10, 6625)  # symbolic dims
    assert restore_onnx_shape(mat, [0, 6625]).shape == (10, 6625)
    assert restore_onnx_shape(mat, None).shape == (10, 6625)


def test_x2paddle_giving_up_with_exit_is_reported_with_its_cause():
    from targets.paddle_target import _why

    gave_up = SystemExit(0)  # x2paddle's program.py calls exit(0) inside an except block
    gave_up.__context__ = ValueError("dygraph2static failed")
    assert _why(gave_up) == "x2paddle gave up with exit(0) after ValueError: dygraph2static failed"


def test_x2paddle_refusing_a_model_names_the_operators_it_printed():
    from targets.paddle_target import _why

    # what x2paddle's op_checker prints before raising "Model is not supported yet."
    printed = ("\n========= 2 OPs are not supported yet ===========\n"
               "========== LayerNormalization ============\n"
               "========== Gelu ============\n")
    refused = Exception("Model is not supported yet.")
    assert _why(refused, printed) == "x2paddle has no mapping for Gelu, LayerNormalization"
    assert _why(refused) == "Exception: Model is not supported yet."


def _identity_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def test_an_operator_outside_the_onnx_domains_is_refused_by_name_before_conversion():
    """nncase aborts the process on such a node and MNN's converter only says it failed:
    the drivers refuse it first, naming it. A model-local function is not foreign."""
    from harness.driver.target import UnsupportedModelError
    from targets.sdk_target import require_onnx_domains

    def model(domain: str, functions: list[onnx.FunctionProto]) -> bytes:
        graph = helper.make_graph(
            [helper.make_node("Twice", ["x"], ["y"], domain=domain)], "foreign",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return helper.make_model(graph, functions=functions, opset_imports=[
            helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)]).SerializeToString()

    with pytest.raises(UnsupportedModelError, match="com.vendor:Twice"):
        require_onnx_domains("MNN", model("com.vendor", []))
    twice = helper.make_function("local", "Twice", ["x"], ["y"],
                                 [helper.make_node("Add", ["x", "x"], ["y"])],
                                 [helper.make_opsetid("", 17)])
    require_onnx_domains("MNN", model("local", [twice]))
    require_onnx_domains("MNN", model("ai.onnx.ml", []))


def test_what_computes_the_numbers_is_declared_for_every_sdk_target():
    """Issue 27, item 3: the RKNN "NPU simulator" is onnxruntime on the host CPU, the
    aarch64 platform is qemu's CPU model; the certificate's capabilities say so."""
    from targets.aarch64_target import hardware_capabilities
    from targets.rknn_target import simulator_engine

    for driver in DRIVERS:
        assert driver().capabilities().extra["computed_by"], driver.name
    assert "onnxruntime on the host CPU" in RknnTarget().capabilities().extra["computed_by"]
    assert "qemu" in Aarch64Target().capabilities().extra["computed_by"]
    assert f"onnxruntime {ort.__version__} on the host CPU" in simulator_engine()
    words = hardware_capabilities()
    assert set(words) == {"AT_HWCAP", "AT_HWCAP2"} and words["AT_HWCAP"].startswith("0x")


def test_the_adaptations_a_driver_may_make_reach_the_capabilities():
    """Capabilities travel into certificates: a driver that changes inputs or outputs on
    the way to its SDK declares how there (and each record says when it happened)."""
    assert any("1-element Mats" in a for a in NcnnTarget().capabilities().extra["adaptations"])
    assert any("bool" in a for a in MnnTarget().capabilities().extra["adaptations"])
    assert any("raw bits" in a for a in Aarch64Target().capabilities().extra["adaptations"])


@pytest.mark.slow
def test_a_bfloat16_run_on_aarch64_records_that_it_bypassed_the_numpy_api():
    """Issue 27: onnxruntime's numpy API refuses bfloat16 (the bare sweep's two Range
    disagreements); the driver feeds and reads raw bits, and the run's placement says so,
    while a float32 run's does not."""
    ready, reason = envs.status("aarch64", envs.known_specs().get("aarch64"))
    if not ready:
        pytest.skip(reason)
    spec = TargetSpec(name=Aarch64Target.name,
                      factory=f"{Aarch64Target.__module__}:{Aarch64Target.__name__}")
    launcher, env = envs.worker_launch(Aarch64Target())
    host = ProcessHost(spec, "default", {}, launcher=launcher, env=env)
    try:
        for model, value, adapted in raw_io_samples():
            result = host.run_case(f"same-{value.dtype}", model, [{"x": value}], timeout=300)
            assert result["outputs"][0]["y"].dtype == value.dtype
            assert np.array_equal(result["outputs"][0]["y"], value)
            adaptations = result["placement"].get("adaptations", [])
            assert (adaptations == [RAW_IO_ADAPTATION]) is adapted, adaptations
    finally:
        host.close()
