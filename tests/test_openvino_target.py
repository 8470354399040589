"""The OpenVINO driver against the real OpenVINO runtime (CPU device)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.driver.registry import discover
from harness.driver.target import InputMismatchError, TargetError, UnsupportedModelError
from harness.verdicts.judge import PRECISION_FLOORS, effective_tolerance

pytest.importorskip("openvino")

from targets.openvino_target import OpenVinoTarget, summarize_error  # noqa: E402


def _model(nodes, inputs, outputs, opset: int = 21, extra_opsets=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _vi(name: str, elem: int, shape) -> object:
    return helper.make_tensor_value_info(name, elem, shape)


F = TensorProto.FLOAT
X = np.array([[-1.5, 0.25, 2.0], [3.0, -4.0, 0.5]], dtype=np.float32)


@pytest.fixture(scope="module")
def cpu() -> OpenVinoTarget:
    return OpenVinoTarget("cpu")


@pytest.fixture(scope="module")
def add_sub(cpu):
    """Two outputs declared in the opposite order of the nodes that make them."""
    model = _model([helper.make_node("Add", ["a", "b"], ["sum"]),
                    helper.make_node("Sub", ["a", "b"], ["diff"])],
                   [_vi("a", F, [2, 3]), _vi("b", F, [2, 3])],
                   [_vi("diff", F, [2, 3]), _vi("sum", F, [2, 3])])
    return cpu.compile(model)


def test_registered_with_configurations_and_other_devices():
    registry = discover()
    assert registry.spec("openvino-cpu").configurations == ("default", "bf16", "f16")
    for name in ("openvino-gpu", "openvino-npu"):
        target = registry.build(name)
        import openvino as ov

        present = any(d.startswith(target.device) for d in ov.Core().available_devices)
        availability = target.availability()
        assert availability.available == present
        if not present:
            assert f"no {target.device} device" in availability.reason


def test_cpu_identity_and_explicit_f32_hint(cpu):
    assert cpu.availability().available
    assert cpu.identity.name == "openvino-cpu" and cpu.identity.runtime == "openvino"
    assert cpu.capabilities().precision == "fp32"
    assert cpu.compile_config()["INFERENCE_PRECISION_HINT"] == "f32"


def test_outputs_mapped_by_onnx_name(add_sub):
    b = np.full((2, 3), 0.5, np.float32)
    out = add_sub.run({"a": X, "b": b})
    np.testing.assert_array_equal(out["sum"], X + b)
    np.testing.assert_array_equal(out["diff"], X - b)
    assert list(out) == ["diff", "sum"]
    assert add_sub.placement()["inference_precision"] == "f32"
    assert add_sub.placement()["execution_devices"] == ["CPU"]


@pytest.mark.parametrize(("feeds", "message"), [
    ({"a": X, "b": X, "c": X}, "unknown input name(s) ['c']"),
    ({"a": X.astype(np.float64), "b": X}, "input 'a': dtype float64, model expects float32"),
    ({"a": X.reshape(3, 2), "b": X}, "input 'a': shape [3, 2]"),
    ({"a": X}, "missing input(s) ['b']"),
    ({"a": X.tolist(), "b": X}, "input 'a': list given"),
])
def test_input_mismatch_is_a_clear_error(add_sub, feeds, message):
    with pytest.raises(InputMismatchError) as info:
        add_sub.run(feeds)
    assert message in str(info.value)


def test_unsupported_op_is_unsupported_model_error(cpu):
    model = _model([helper.make_node("NoSuchOp", ["x"], ["y"], domain="vendor.example")],
                   [_vi("x", F, [2, 3])], [_vi("y", F, [2, 3])],
                   extra_opsets=[helper.make_opsetid("vendor.example", 1)])
    with pytest.raises(UnsupportedModelError) as info:
        cpu.compile(model)
    text = str(info.value)
    assert "No conversion rule found" in text and "NoSuchOp" in text
    assert "\n" not in text and "src/" not in text


def test_corrupt_model_is_target_error(cpu):
    with pytest.raises(TargetError):
        cpu.compile(b"\x08\x07garbage that is not a model")


def test_summarize_error_keeps_the_reason_only():
    raw = RuntimeError("Exception from src/inference/src/cpp/core.cpp:105:\n"
                       "Check 'false' failed at src/frontends/common/x.cpp:151:\n"
                       "FrontEnd API failed with OpConversionFailure:\n"
                       "Model wasn't fully converted.\nSummary:\n"
                       "-- No conversion rule found for operations: Foo-17\n")
    assert summarize_error(raw) == "No conversion rule found for operations: Foo-17"


def test_input_renamed_by_the_frontend_is_fed_by_position(cpu):
    """OpenVINO names the parameter of an Identity-only graph after its output."""
    model = _model([helper.make_node("Dropout", ["x"], ["y"])],
                   [_vi("x", F, [2, 3])], [_vi("y", F, [2, 3])])
    executable = cpu.compile(model)
    np.testing.assert_array_equal(executable.run({"x": X})["y"], X)
    assert executable.placement()["renamed_inputs"] == {"x": "y"}


def test_bfloat16_tensors_are_exchanged_bit_exactly(cpu):
    """The binding shows bf16 as float16; the driver moves the raw bits instead."""
    to_bf16 = cpu.compile(_model([helper.make_node("Cast", ["x"], ["y"],
                                                   to=TensorProto.BFLOAT16)],
                                 [_vi("x", F, [2, 3])], [_vi("y", TensorProto.BFLOAT16, [2, 3])]))
    out = to_bf16.run({"x": X})["y"]
    assert out.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out, X.astype(ml_dtypes.bfloat16))
    assert to_bf16.placement()["bit_exchanged"] == ["y"]

    from_bf16 = cpu.compile(_model([helper.make_node("Cast", ["x"], ["y"], to=F)],
                                   [_vi("x", TensorProto.BFLOAT16, [2, 3])],
                                   [_vi("y", F, [2, 3])]))
    x = np.array([[1.5, 2.0078125, -3.25], [0.0, 1e-3, 7.0]], ml_dtypes.bfloat16)
    np.testing.assert_array_equal(from_bf16.run({"x": x})["y"], x.astype(np.float32))


def test_scalar_input(cpu):
    executable = cpu.compile(_model([helper.make_node("Neg", ["x"], ["y"])],
                                    [_vi("x", F, [])], [_vi("y", F, [])]))
    assert executable.run({"x": np.array(2.5, np.float32)})["y"] == np.float32(-2.5)


def test_bf16_configuration_computes_in_bf16_and_is_judged_as_such():
    target = OpenVinoTarget("cpu", configuration="bf16")
    if not target.availability().available:
        pytest.skip(target.availability().reason)
    assert target.capabilities().precision == "bf16"
    assert effective_tolerance(1e-3, 1e-7, "bf16") == PRECISION_FLOORS["bf16"]
    model = _model([helper.make_node("MatMul", ["a", "b"], ["c"])],
                   [_vi("a", F, [4, 64]), _vi("b", F, [64, 4])], [_vi("c", F, [4, 4])])
    executable = target.compile(model)
    assert executable.placement()["inference_precision"] == "bf16"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 64), np.float32), rng.standard_normal((64, 4), np.float32)
    got = executable.run({"a": a, "b": b})["c"]
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert not np.array_equal(got, (a @ b)), "bf16 inference gave the fp32 result bit for bit"
    rtol, atol = PRECISION_FLOORS["bf16"]
    assert np.allclose(got, exact, rtol=rtol * 5, atol=atol * 20)


def test_f16_configuration_refuses_a_cpu_without_fp16():
    target = OpenVinoTarget("cpu", configuration="f16")
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    availability = target.availability()
    assert availability.available == ("FP16" in caps)
    if not availability.available:
        assert "lacks FP16" in availability.reason
    assert target.capabilities().precision == "fp16"


def test_unknown_configuration_is_refused():
    with pytest.raises(TargetError):
        OpenVinoTarget("cpu", configuration="int3")


def test_configuration_finds_its_own_expectations_file():
    """bf16 is judged by openvino-cpu.bf16.toml, the default by openvino-cpu.toml: the file
    the harness resolves (Target.expectations_path), and what it says about a case the two
    files judge differently."""
    from harness.verdicts.expectations import Expectations

    default, bf16 = OpenVinoTarget("cpu"), OpenVinoTarget("cpu", configuration="bf16")
    assert default.expectations_path().name == "openvino-cpu.toml"
    assert bf16.expectations_path().name == "openvino-cpu.bf16.toml"
    own, base = (Expectations.load([t.expectations_path()]) for t in (bf16, default))
    differing = [(suite, case) for suite, cases in own.entries.items()
                 for case, entry in cases.items()
                 if getattr(base.lookup(suite, case), "status", None) != entry.status]
    assert differing, "the bf16 file says nothing the default file does not"
