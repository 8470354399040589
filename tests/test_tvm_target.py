"""The TVM driver against the real apache-tvm (Relax, llvm target) and its on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.driver.registry import discover
from harness.driver.target import InputMismatchError, TargetError, UnsupportedModelError

pytest.importorskip("tvm")

from targets.tvm_target import TvmTarget  # noqa: E402

F = TensorProto.FLOAT
X = np.array([[-1.5, 0.25, 2.0], [3.0, -4.0, 0.5]], dtype=np.float32)


def _model(nodes, inputs, outputs, opset: int = 21, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             ).SerializeToString()


def _vi(name: str, elem: int, shape) -> object:
    return helper.make_tensor_value_info(name, elem, shape)


ABS = _model([helper.make_node("Abs", ["x"], ["y"])], [_vi("x", F, [2, 3])], [_vi("y", F, [2, 3])])
ADD_SUB = _model([helper.make_node("Add", ["a", "b"], ["sum"]),
                  helper.make_node("Sub", ["a", "b"], ["diff"])],
                 [_vi("a", F, [2, 3]), _vi("b", F, [2, 3])],
                 [_vi("diff", F, [2, 3]), _vi("sum", F, [2, 3])])


@pytest.fixture
def target(tmp_path) -> TvmTarget:
    return TvmTarget("llvm", cache_dir=str(tmp_path / "tvm-cache"))


def test_registered_and_cuda_listed_with_reason():
    registry = discover()
    llvm, cuda = registry.build("tvm-llvm"), registry.build("tvm-cuda")
    assert llvm.availability().available
    import tvm

    has_cuda = tvm.runtime.enabled("cuda") and tvm.cuda(0).exist
    assert cuda.availability().available == has_cuda
    if not has_cuda:
        assert "CUDA" in cuda.availability().reason


def test_threads_default_to_half_the_cpus_and_can_be_set(target):
    import os

    cpus = len(os.sched_getaffinity(0))
    assert target.threads == max(1, cpus // 2)
    assert target.capabilities().extra["tvm_num_threads"] == target.threads
    assert TvmTarget("llvm", threads=3).threads == 3


def test_compile_and_run_outputs_by_onnx_name(target):
    executable = target.compile(ADD_SUB)
    b = np.full((2, 3), 0.5, np.float32)
    out = executable.run({"a": X, "b": b})
    assert list(out) == ["diff", "sum"]
    np.testing.assert_array_equal(out["sum"], X + b)
    np.testing.assert_array_equal(out["diff"], X - b)


def test_second_compile_is_a_cache_hit(target, tmp_path):
    first = target.compile(ABS)
    assert first.placement()["cache_hit"] is False
    assert first.placement()["build_s"] >= 0
    key = first.placement()["cache_key"]
    assert sorted(p.name for p in (tmp_path / "tvm-cache").iterdir()) == [
        f"{key}.json", f"{key}.so"]

    again = TvmTarget("llvm", cache_dir=str(tmp_path / "tvm-cache")).compile(ABS)
    assert again.placement()["cache_hit"] is True
    assert again.placement()["cache_key"] == key
    np.testing.assert_array_equal(again.run({"x": X})["y"], np.abs(X))


def test_cache_key_depends_on_model_target_and_tvm_version(target):
    other = TvmTarget("cuda", cache_dir=str(target.cache_dir))
    assert target.cache_key(ABS) != target.cache_key(ADD_SUB)
    assert target.cache_key(ABS) != other.cache_key(ABS)
    assert target.cache_key(ABS) == TvmTarget("llvm").cache_key(ABS)


def test_corrupt_cache_entry_is_rebuilt_not_trusted(target):
    key = target.compile(ABS).placement()["cache_key"]
    (target.cache_dir / f"{key}.so").write_bytes(b"not a shared library")
    rebuilt = target.compile(ABS)
    placement = rebuilt.placement()
    assert placement["cache_hit"] is False and "cache_discarded" in placement
    np.testing.assert_array_equal(rebuilt.run({"x": X})["y"], np.abs(X))
    assert target.compile(ABS).placement()["cache_hit"] is True


def test_cache_can_be_disabled(tmp_path):
    target = TvmTarget("llvm", cache=False, cache_dir=str(tmp_path / "c"))
    executable = target.compile(ABS)
    assert executable.placement()["cache_hit"] is False
    assert not (tmp_path / "c").exists()


def test_unsupported_op_is_unsupported_model_error(target):
    model = _model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=2)],
                   [_vi("x", F, [1, 1, 2]), _vi("w", F, [1, 8, 2]), _vi("r", F, [1, 8, 2])],
                   [_vi("y", F, [1, 1, 1, 2])])
    with pytest.raises(UnsupportedModelError, match="LSTM"):
        target.compile(model)


def test_frontend_failure_is_target_error(target):
    with pytest.raises(TargetError):
        target.compile(b"\x08\x07garbage that is not a model")


@pytest.mark.parametrize(("feeds", "message"), [
    ({"a": X, "b": X, "c": X}, "unknown input name(s) ['c']"),
    ({"a": X.astype(np.float64), "b": X}, "input 'a': dtype float64, model expects float32"),
    ({"a": X.reshape(3, 2), "b": X}, "input 'a': shape [3, 2]"),
    ({"a": X}, "missing input 'b'"),
])
def test_input_mismatch_is_a_clear_error(target, feeds, message):
    executable = target.compile(ADD_SUB)
    with pytest.raises(InputMismatchError) as info:
        executable.run(feeds)
    assert message in str(info.value)


def test_scalar_input(target):
    executable = target.compile(_model([helper.make_node("Neg", ["x"], ["y"])],
                                       [_vi("x", F, [])], [_vi("y", F, [])]))
    out = executable.run({"x": np.array(2.5, np.float32)})["y"]
    assert out.shape == () and out == np.float32(-2.5)


def test_shape_output_becomes_the_declared_int64_exactly(target):
    executable = target.compile(_model([helper.make_node("Shape", ["x"], ["s"])],
                                       [_vi("x", F, [2, 3])], [_vi("s", TensorProto.INT64, [2])]))
    out = executable.run({"x": X})["s"]
    assert out.dtype == np.int64 and out.tolist() == [2, 3]
    assert executable.placement()["shape_outputs"] == ["s"]
