"""Accuracy metrics, tolerance policies and the task helpers, checked against figures
computed independently here (plain Python loops, not the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.modelzoo.execute import judge_outputs
from harness.modelzoo.manifest import Manifest, OutputSpec, Source
from harness.modelzoo.metrics import (
    DEFAULT_POLICIES,
    OutputMetrics,
    cosine_similarity,
    policy_for,
)
from harness.modelzoo.tasks import ocr, vad


def _manifest(precision: str = "fp32", kind: str = "tensor", tolerance=None) -> Manifest:
    return Manifest(name="m", title="m", task="generic", precision=precision, sha256="0" * 64,
                    source=Source(generator="x:y"), inputs=(),
                    outputs=(OutputSpec("y", kind, -1),), data_sets=({},),
                    tolerance=tolerance or {})


def test_error_figures_match_an_independent_computation():
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((3, 7)).astype(np.float32)
    actual = expected + rng.normal(0, 1e-3, expected.shape).astype(np.float32)
    figures = OutputMetrics(OutputSpec("y"))
    figures.add(expected, actual, DEFAULT_POLICIES["fp32"])
    summary = figures.summary()

    e = [float(v) for v in expected.ravel()]
    a = [float(v) for v in actual.ravel()]
    peak = max(abs(v) for v in e)
    diffs = [abs(x - y) for x, y in zip(a, e, strict=True)]
    dot = sum(x * y for x, y in zip(a, e, strict=True))
    cos = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in e)))
    rel = max(d / max(abs(y), 1e-3 * peak) for d, y in zip(diffs, e, strict=True))
    l2 = math.sqrt(sum(d * d for d in diffs)) / math.sqrt(sum(y * y for y in e))

    assert summary["max_abs_error"] == pytest.approx(max(diffs), rel=1e-12)
    assert summary["max_rel_error"] == pytest.approx(rel, rel=1e-9)
    assert summary["rel_l2_error"] == pytest.approx(l2, rel=1e-9)
    assert summary["cosine_similarity"] == pytest.approx(cos, rel=1e-12)
    assert summary["elements"] == 21


def test_top1_and_top5_count_only_untied_rows():
    spec = OutputSpec("p", "probabilities", 1)
    expected = np.array([
        [0.50, 0.20, 0.10, 0.08, 0.06, 0.04, 0.02],   # clear ranking
        [0.10, 0.40, 0.20, 0.12, 0.09, 0.05, 0.04],   # clear ranking
        [0.30, 0.30, 0.10, 0.10, 0.10, 0.05, 0.05],   # top-1 tie: no right answer
    ], dtype=np.float32)
    actual = expected.copy()
    actual[1] = [0.45, 0.10, 0.20, 0.12, 0.04, 0.05, 0.04]  # top-1 moved; top-5 {0,2,3,5,1/6}
    actual[2] = [0.29, 0.31, 0.10, 0.10, 0.10, 0.05, 0.05]
    figures = OutputMetrics(spec)
    figures.add(expected, actual, DEFAULT_POLICIES["fp32"])
    summary = figures.summary()
    assert summary["tied_rows"] == 1
    assert summary["top1_rows"] == 2
    assert summary["top1_agreement"] == 0.5
    # row 0 keeps its top 5; row 1: reference top-5 {1,2,3,4,0}, actual {0,2,3,5,1 or 6}
    ref_top = set(np.argsort(-expected[1], kind="stable")[:5].tolist())
    act_top = set(np.argsort(-actual[1], kind="stable")[:5].tolist())
    assert summary["top5_overlap"] == pytest.approx((1.0 + len(ref_top & act_top) / 5) / 2)


def test_uniform_scores_give_no_top_k_verdict():
    spec = OutputSpec("p", "probabilities", 1)
    uniform = np.full((1, 1000, 1, 1), 0.001, dtype=np.float32)
    figures = OutputMetrics(spec)
    figures.add(uniform, uniform, DEFAULT_POLICIES["fp32"])
    summary = figures.summary()
    assert summary["top1_agreement"] is None and summary["tied_rows"] == 1


def test_cosine_similarity_edge_cases():
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    assert math.isnan(cosine_similarity(np.ones(3), np.array([1.0, np.nan, 1.0])))
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0


def test_int8_results_are_not_judged_with_fp32_tolerances():
    rng = np.random.default_rng(1)
    golden = rng.standard_normal((4, 16)).astype(np.float32)
    quantized = golden + rng.choice([-1, 0, 1], golden.shape).astype(np.float32) * (4 / 255)
    fp32_ok, fp32_message, _ = judge_outputs(_manifest("fp32"), [{"y": golden}],
                                             [{"y": quantized}], "fp32")
    int8_ok, _, metrics = judge_outputs(_manifest("int8"), [{"y": golden}],
                                        [{"y": quantized}], "fp32")
    assert not fp32_ok and "outside rtol" in fp32_message
    assert int8_ok and metrics["precision_class"] == "int8"
    assert metrics["policy"]["rtol"] is None


def test_a_coarser_target_precision_loosens_but_never_tightens():
    bf16 = policy_for("fp32", {}, "bf16")
    assert bf16.precision == "bf16" and bf16.rtol == DEFAULT_POLICIES["bf16"].rtol
    strict = policy_for("int8", {"min_cosine": 0.999}, "fp32")
    assert strict.precision == "int8" and strict.min_cosine == 0.999
    loose = policy_for("fp32", {"rtol": 0.5}, "fp16")
    assert loose.rtol == 0.5 and loose.min_cosine == DEFAULT_POLICIES["fp16"].min_cosine


@pytest.mark.parametrize(("actual", "words"), [
    (np.full((2, 3), np.nan, dtype=np.float32), "outside rtol"),
    (np.zeros((3, 2), dtype=np.float32), "shape"),
    (np.zeros((2, 3), dtype=np.float64), "dtype"),
])
def test_broken_outputs_fail_with_a_reason(actual, words):
    golden = np.ones((2, 3), dtype=np.float32)
    passed, message, metrics = judge_outputs(_manifest(), [{"y": golden}], [{"y": actual}],
                                             "fp32")
    assert not passed and words in message
    assert metrics["max_abs_error"] == float("inf")


def test_a_missing_output_fails():
    passed, message, _ = judge_outputs(_manifest(), [{"y": np.ones(2, np.float32)}],
                                       [{"z": np.ones(2, np.float32)}], "fp32")
    assert not passed and "missing output" in message


def test_cosine_below_the_policy_fails_even_within_elementwise_tolerance():
    golden = np.array([1e-5, -1e-5, 1e-5, -1e-5], dtype=np.float32)
    flipped = -golden  # every element within atol=1e-4, but pointing the other way
    passed, message, _ = judge_outputs(_manifest(), [{"y": golden}], [{"y": flipped}], "fp32")
    assert not passed and "cosine similarity" in message


# -- OCR and VAD helpers -------------------------------------------------------------
def test_ctc_decoding_merges_repeats_and_drops_blanks():
    characters = ["blank", "适", "配", "a", " "]
    steps = [1, 1, 0, 2, 2, 0, 2, 3, 4, 0]
    probabilities = np.full((1, len(steps), len(characters)), 0.01, dtype=np.float32)
    for t, index in enumerate(steps):
        probabilities[0, t, index] = 0.96
    ((text, score),) = ocr.ctc_decode(probabilities, characters)
    assert text == "适配配a "
    assert score == pytest.approx(0.96)
    with pytest.raises(ValueError, match="dictionary"):
        ocr.ctc_decode(probabilities[:, :, :3], characters)


def test_text_boxes_come_from_thresholded_regions():
    probability = np.zeros((64, 128), dtype=np.float32)
    probability[10:20, 8:60] = 0.9    # a text line
    probability[40:50, 30:100] = 0.9  # another
    probability[30:32, 5:7] = 0.9     # a speck: too small after unclip? kept only if > 3 px
    probability[55:60, 110:120] = 0.35  # above the pixel threshold, below the box threshold
    boxes = [box for box, _ in ocr.boxes_from_probability(probability)]
    assert boxes[0][0] < 8 and boxes[0][2] > 60 and boxes[0][1] < 10 and boxes[0][3] > 20
    assert boxes[-1][1] < 40 and boxes[-1][3] > 50
    assert all(not (b[0] >= 100 and b[1] >= 50) for b in boxes)


def test_box_comparison_pairs_by_overlap_and_reads_text():
    reference = ocr.OcrResult([[0, 0, 100, 20], [0, 40, 80, 60]], ["一", "two"], [1, 1],
                              ["0", "0"])
    same = ocr.OcrResult([[0, 40, 80, 61], [1, 0, 100, 20]], ["two", "一"], [1, 1], ["0", "0"])
    assert ocr.compare(same, reference)[0]
    misread = ocr.OcrResult(reference.boxes, ["一", "tw0"], [1, 1], ["0", "0"])
    ok, message, metrics = ocr.compare(misread, reference)
    assert not ok and "tw0" in message and metrics["lines_differing"] == 1
    shifted = ocr.OcrResult([[50, 0, 150, 20], [0, 40, 80, 60]], ["一", "two"], [1, 1],
                            ["0", "0"])
    assert "IoU" in ocr.compare(shifted, reference)[1]
    assert ocr.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert ocr.edit_distance("适配中心", "适配心") == 1
    assert ocr.char_accuracy(["ab"], ["ab"]) == 1.0


def test_vad_segments_follow_the_silero_rules():
    chunk, rate = 512, 16000
    probabilities = [0.0] * 20 + [0.9] * 30 + [0.0] * 20 + [0.9] * 3 + [0.0] * 20
    total = len(probabilities) * chunk
    found = vad.segments(probabilities, chunk, rate, total)
    assert len(found) == 1  # the 3-chunk (96 ms) burst is shorter than 250 ms
    start, end = found[0]
    assert start == pytest.approx((20 * chunk - 0.03 * rate) / rate, abs=1e-3)
    assert end == pytest.approx((50 * chunk + 0.03 * rate) / rate, abs=1e-3)
    ok, message, _ = vad.compare([[0.5, 1.5]], [[0.5, 1.6]])
    assert not ok and "moved" in message
    assert vad.compare([[0.5, 1.5]], [[0.52, 1.5]])[0]
    assert not vad.compare([], [[0.5, 1.5]])[0]
    assert vad.overlap_with_truth([(0.0, 1.0)], [(0.5, 1.5)]) == 0.5


def test_speech_like_signal_is_deterministic_and_placed():
    signal = vad.speech_like((0.1, 0.2, 0.1), 16000, seed=4)
    assert signal.dtype == np.float32 and signal.size == 6400
    assert np.array_equal(signal, vad.speech_like((0.1, 0.2, 0.1), 16000, seed=4))
    silent, voiced = np.abs(signal[:1600]).max(), np.abs(signal[1600:4800]).max()
    assert voiced > 20 * silent
    assert vad.true_segments((0.1, 0.2, 0.1)) == [(0.1, 0.3)]
