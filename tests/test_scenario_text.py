"""The text-embedding task: ground truth and metrics are computed, the tokenizer is pinned,
a correct target passes and a target that perturbs embeddings or drops tokens fails with
the figure that shows it."""

from __future__ import annotations

import numpy as np
import pytest

from harness.isolation.host import InlineHost
from harness.modelzoo.tasks import text, text_check
from harness.modelzoo.tasks.text_check import check_text_embedding
from harness.modelzoo.zoo import Zoo
from tests.degrading_target import DegradingTarget

pytest.importorskip("sklearn")


def test_the_retrieval_set_is_bilingual_and_one_to_one():
    documents, queries, languages = text.sentences()
    assert len(documents) == len(queries) == len(set(documents)) == len(set(queries))
    assert set(languages) == {"en", "zh"}


def test_retrieval_figures_follow_the_embeddings():
    languages = ["en", "en", "zh", "zh"]
    documents = np.eye(4)
    exact = text.retrieval(np.vstack([documents, documents]), languages)
    assert exact["retrieval_top1"] == 1.0 and exact["pair_auc"] == 1.0
    swapped = text.retrieval(np.vstack([documents, documents[[1, 0, 2, 3]]]), languages)
    assert swapped["retrieval_top1"] == 0.5 and swapped["retrieval_top1_en"] == 0.0
    assert swapped["retrieval_top1_zh"] == 1.0 and swapped["retrieved"] == [1, 0, 2, 3]


def test_compare_names_the_figure():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(8, 16))
    languages = ["en"] * 4
    passed, message, metrics = text.compare(reference, reference, languages, "fp32")
    assert passed and metrics["cosine_min"] == 1.0 and "accuracy_drop" not in metrics
    passed, _, metrics = text.compare(reference, reference, languages, "int8")
    assert passed and metrics["accuracy_drop"] == 0.0 and metrics["precision_class"] == "int8"
    passed, message, metrics = text.compare(reference + rng.normal(size=(8, 16)), reference,
                                            languages, "fp32")
    assert not passed and message.startswith("cosine_min") and metrics["cosine_min"] < 0.999
    passed, message, _ = text.compare(reference[:4], reference, languages, "fp32")
    assert not passed and "shape" in message


def test_a_changed_tokenizer_is_refused(monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.setattr(text_check, "TOKENIZER_SHA256", "0" * 64)
    outcome = check_text_embedding(Zoo(), InlineHost(DegradingTarget()), "fp32", 60.0)
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    assert outcome.status == "infra_error" and "refusing to use it" in outcome.message


def test_a_missing_tokenizer_is_a_skip_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(text_check, "TOKENIZER_PACKAGE", "shipei_no_such_package")
    outcome = check_text_embedding(Zoo(), InlineHost(DegradingTarget()), "fp32", 60.0)
    assert outcome.status == "skip"
    assert "pip install" in outcome.message


def _check(mode: str, **options):
    pytest.importorskip("tokenizers")
    target = DegradingTarget(mode=mode, **options)
    outcome = check_text_embedding(Zoo(), InlineHost(target), target.capabilities().precision,
                                   120.0)
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    return outcome


def test_a_correct_target_passes_with_measured_figures():
    outcome = _check("none")
    assert outcome.status == "pass", outcome.message
    metrics = outcome.metrics
    assert metrics["cosine_min"] >= 0.999 and metrics["details"]["retrieval_drop"] == 0.0
    assert metrics["retrieval_top1"] == metrics["details"]["reference_retrieval_top1"] > 0.5
    assert metrics["retrieval_top1_en"] >= metrics["retrieval_top1_zh"]
    assert metrics["latency_p99_ms"] >= metrics["latency_p50_ms"] > 0
    assert metrics["details"]["sentences"] == 2 * len(text.RETRIEVAL)


def test_perturbed_embeddings_fail_with_the_cosine():
    outcome = _check("noise", std=0.5)
    assert outcome.status == "fail"
    assert outcome.message.startswith("cosine_min") and outcome.metrics["cosine_min"] < 0.99


def test_dropped_tokens_fail_with_the_figure():
    outcome = _check("truncate", keep=0.4)
    assert outcome.status == "fail"
    assert outcome.metrics["cosine_min"] < 0.9
    assert "cosine_min" in outcome.message


def test_weight_only_int8_is_deterministic_and_close():
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from harness.modelzoo.tasks.text_int8 import weight_only_int8
    from models.generators.transformer import build

    fp32 = build().SerializeToString()
    int8 = weight_only_int8(fp32)
    assert int8 == weight_only_int8(fp32) and len(int8) < len(fp32)
    ops = [node.op_type for node in onnx.load_from_string(int8).graph.node]
    assert ops.count("DequantizeLinear") == 6  # q, k, v, o and the two MLP weights
    x = np.random.default_rng(1).standard_normal((2, 5, 64)).astype(np.float32)
    outputs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for m in (fp32, int8)]
    cosine = float((outputs[0] * outputs[1]).sum() / np.linalg.norm(outputs[0]) /
                   np.linalg.norm(outputs[1]))
    assert 0.999 < cosine < 1.0


@pytest.mark.slow
def test_the_int8_configuration_is_held_to_its_stated_drop():
    pytest.importorskip("tokenizers")
    target = DegradingTarget()
    outcome = check_text_embedding(Zoo(), InlineHost(target), "fp32", 300.0,
                                   "text_embedding_l3_int8")
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    assert outcome.status == "pass", outcome.message
    metrics = outcome.metrics
    assert metrics["precision_class"] == "int8" and "accuracy_drop" in metrics
    assert metrics["accuracy_drop"] <= metrics["limit"]["max_accuracy_drop"]
    assert 0.98 <= metrics["cosine_min"] < 1.0
