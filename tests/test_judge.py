"""Output judging: figures computed independently, edge cases of the ONNX data types."""

from __future__ import annotations

import time

import ml_dtypes
import numpy as np

from harness.verdicts.judge import compare_outputs, effective_tolerance


def test_figures_match_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((4, 5)).astype(np.float32)
    actual = expected.copy()
    actual[1, 2] += 0.3
    actual[3, 4] -= 0.01
    verdict = compare_outputs([expected], {"y": actual}, ["y"], rtol=1e-3, atol=1e-5)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    assert not verdict.passed
    assert verdict.max_abs_error == np.float64(diff.max())
    assert verdict.max_rel_error == (diff / np.abs(expected.astype(np.float64))).max()
    assert verdict.mismatched == 2 and verdict.compared == 20
    assert "2/20 elements" in verdict.message


def test_within_tolerance_passes_and_nan_equals_nan() -> None:
    expected = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    actual = np.array([1.0 + 1e-6, np.nan, np.inf, -np.inf], dtype=np.float32)
    verdict = compare_outputs([expected], {"y": actual}, ["y"], rtol=1e-3, atol=1e-7)
    assert verdict.passed and verdict.max_abs_error < 1e-5


def test_shape_and_dtype_mismatches_fail_with_reason() -> None:
    expected = np.zeros((2, 3), dtype=np.float32)
    shape = compare_outputs([expected], {"y": np.zeros((3, 2), np.float32)}, ["y"], 1e-3, 0)
    assert not shape.passed and "shape [3, 2], expected [2, 3]" in shape.message
    dtype = compare_outputs([expected], {"y": np.zeros((2, 3), np.float64)}, ["y"], 1e-3, 0)
    assert not dtype.passed and "dtype float64, expected float32" in dtype.message
    missing = compare_outputs([expected], {"z": expected}, ["y"], 1e-3, 0)
    assert not missing.passed and "missing output" in missing.message


def test_sequences_strings_optionals_and_bfloat16() -> None:
    seq = [np.ones(2, np.float32), np.zeros(3, np.float32)]
    assert compare_outputs([seq], {"s": [a.copy() for a in seq]}, ["s"], 1e-3, 0).passed
    short = compare_outputs([seq], {"s": seq[:1]}, ["s"], 1e-3, 0)
    assert not short.passed and "sequence of 1, expected 2" in short.message
    words = np.array(["a", "b"], dtype=object)
    assert compare_outputs([words], {"w": words.copy()}, ["w"], 0, 0).passed
    assert not compare_outputs([words], {"w": np.array(["a", "c"], dtype=object)},
                               ["w"], 0, 0).passed
    assert compare_outputs([None], {"o": None}, ["o"], 0, 0).passed
    bf = np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)
    assert compare_outputs([bf], {"b": bf.copy()}, ["b"], 1e-3, 0).passed


def test_reduced_precision_tolerances_are_looser_never_tighter() -> None:
    assert effective_tolerance(1e-3, 1e-7, "fp32") == (1e-3, 1e-7)
    rtol16, atol16 = effective_tolerance(1e-3, 1e-7, "fp16")
    rtol_bf, atol_bf = effective_tolerance(1e-3, 1e-7, "bf16")
    assert rtol_bf >= rtol16 > 1e-3 and atol_bf >= atol16 > 1e-7
    assert effective_tolerance(0.5, 0.5, "bf16") == (0.5, 0.5)


def test_precision_floors_loosen_floats_only() -> None:
    floats = np.array([1.0, 2.0], dtype=np.float32)
    assert compare_outputs([floats], {"y": floats * np.float32(1.01)}, ["y"], 1e-3, 0,
                           precision="bf16").passed
    assert not compare_outputs([floats], {"y": floats * np.float32(1.01)}, ["y"], 1e-3, 0).passed
    ints = np.array([100, 200], dtype=np.int32)
    off_by_one = compare_outputs([ints], {"y": ints + 1}, ["y"], 0, 0, precision="bf16")
    assert not off_by_one.passed and off_by_one.mismatched == 2


def test_bit_identical_outputs_pass_as_the_numeric_judgement_does() -> None:
    """The bytes fast path agrees with the numeric path it skips: NaNs, infinities and the
    types numpy lacks equal themselves; a single changed bit still goes to the figures."""
    expected = np.array([[1.5, np.nan], [np.inf, -0.0]], dtype=np.float32)
    verdict = compare_outputs([expected], {"y": expected.copy()}, ["y"], rtol=0, atol=0)
    assert verdict.passed and verdict.compared == 4 and verdict.max_abs_error == 0.0
    bf16 = np.array([0.1, 3.0], dtype=ml_dtypes.bfloat16)
    assert compare_outputs([bf16], {"y": bf16.copy()}, ["y"], rtol=0, atol=0).passed
    flipped = expected.copy()
    flipped.view(np.uint32)[0, 0] ^= 1  # one ulp away from 1.5
    verdict = compare_outputs([expected], {"y": flipped}, ["y"], rtol=0, atol=0)
    assert not verdict.passed and verdict.mismatched == 1 and verdict.max_abs_error > 0
    zero = compare_outputs([np.float32([0.0])], {"y": np.float32([-0.0])}, ["y"], rtol=0, atol=0)
    assert zero.passed  # different bits, equal values: judged by value


# -- elements the ONNX spec leaves undefined (issue 27 item 9) ----------------------------
def _cast_model(to: int, source: int = 1):
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=to)], "cast",
        [helper.make_tensor_value_info("x", source, [8])],
        [helper.make_tensor_value_info("y", to, [8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _wrap(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """What a runtime that keeps the low bits (two's complement) produces."""
    low = np.trunc(values).astype(np.int64) & ((1 << bits) - 1)
    return low - (1 << bits) * (low >= (1 << (bits - 1))) if signed else low


def test_out_of_range_casts_to_sub_byte_integers_are_not_judged() -> None:
    """int4/uint4/int2/uint2: whatever a reference says for out-of-range inputs (ml_dtypes
    0.6 wraps, 0.7 maps to 0, another library saturates), a runtime that wraps is judged
    on the in-range elements alone, and the record says how many were left out."""
    from onnx import TensorProto

    from harness.cases.case import Case, DataSet, LoadedCase, PreparedCase, conclude_case
    from harness.driver.target import Capabilities
    from harness.verdicts.undefined import undefined_elements

    x = np.array([-9.0, -8.0, -1.5, 0.0, 3.9, 7.0, 8.0, np.nan], dtype=np.float32)
    for to, dtype, bits, signed in ((TensorProto.INT4, ml_dtypes.int4, 4, True),
                                    (TensorProto.UINT4, ml_dtypes.uint4, 4, False),
                                    (TensorProto.INT2, ml_dtypes.int2, 2, True),
                                    (TensorProto.UINT2, ml_dtypes.uint2, 2, False)):
        model = _cast_model(to)
        info = ml_dtypes.iinfo(dtype)
        finite = np.nan_to_num(x)
        outside = np.isnan(x) | (np.trunc(finite) < info.min) | (np.trunc(finite) > info.max)
        runtime = _wrap(finite, bits, signed).astype(dtype)
        references = {"wrap": runtime,
                      "zero": np.where(outside, 0, _wrap(finite, bits, signed)).astype(dtype),
                      "saturate": np.clip(np.trunc(finite), info.min, info.max).astype(dtype)}
        masks = undefined_elements(model, {"x": x})
        assert masks["y"].tolist() == outside.tolist()
        for how, reference in references.items():
            loaded = LoadedCase(model, [DataSet({"x": x}, [reference])])
            case = Case("operators", f"cast_{dtype.__name__}", lambda loaded=loaded: loaded)
            prepared = PreparedCase(case, loaded, case.name, b"", time.perf_counter(), 0.0)
            outcome = conclude_case(prepared, {"outputs": [{"y": runtime}], "compile_s": 0.0,
                                               "run_s": [0.0], "placement": {}},
                                    Capabilities())
            undefined = int(outside.sum())
            assert outcome.status == "pass", (dtype, how, outcome.message)
            assert outcome.metrics["undefined_elements"] == undefined
            assert outcome.metrics["compared_elements"] == x.size - undefined
            assert (f"judged {x.size - undefined} of {x.size} elements; {undefined} are "
                    "undefined by the ONNX spec") in outcome.message
        wrong = runtime.copy()
        wrong[3] = dtype(1)  # 0.0 is in range: its cast is defined
        verdict = compare_outputs([references["zero"]], {"y": wrong}, ["y"], 0, 0,
                                  undefined=masks)
        assert not verdict.passed and verdict.mismatched == 1


def test_in_range_and_integer_source_casts_are_judged_whole() -> None:
    from onnx import TensorProto

    from harness.verdicts.undefined import undefined_elements

    model = _cast_model(TensorProto.INT4)
    assert undefined_elements(model, {"x": np.arange(-8, 8, 2, dtype=np.float32)}) == {}
    from_int = _cast_model(TensorProto.INT4, TensorProto.INT32)
    assert undefined_elements(from_int, {"x": np.arange(0, 80, 10, dtype=np.int32)}) == {}
    to_float = _cast_model(TensorProto.FLOAT16)
    assert undefined_elements(to_float, {"x": np.full(8, 1e9, dtype=np.float32)}) == {}

