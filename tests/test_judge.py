"""Output judging: figures computed independently, edge cases of the ONNX data types."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from harness.judge import compare_outputs, effective_tolerance


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
