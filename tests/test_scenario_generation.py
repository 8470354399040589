"""The generation task (大模型): the generated decoder's KV cache is real, the metrics are
measured, a correct target passes and a target that drops the cache fails with the
figure that shows it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from harness.isolation.host import InlineHost
from harness.modelzoo.tasks import generation
from harness.modelzoo.tasks.generation_check import check_generation
from harness.modelzoo.zoo import Zoo
from models.generators import decoder
from tests.degrading_target import DegradingTarget

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return decoder.build()


def _session(model: onnx.ModelProto):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def test_the_cache_interface_is_real(model):
    """Prefill then one-token steps with the cache give the logits of one long prefill;
    the same steps without the cache do not."""
    run, spec = _session(model), generation.cache_spec(model)
    assert spec["pairs"][0] == ["past_key_values.0.key", "present.0.key"]
    tokens = generation.encode("适配 the cache")
    whole = generation.teacher_forced_logits(run, tokens, spec)
    outputs = run(generation._feeds(tokens[:4], 0, generation._empty_cache(spec), spec))
    steps = [outputs["logits"][0]]
    for index, token in enumerate(tokens[4:]):
        cache = {past: outputs[present] for past, present in spec["pairs"]}
        outputs = run(generation._feeds([token], 4 + index, cache, spec))
        steps.append(outputs["logits"][0])
    np.testing.assert_allclose(np.concatenate(steps), whole, atol=1e-4)
    alone = generation.teacher_forced_logits(run, tokens[-1:], spec)
    assert np.abs(alone[0] - whole[-1]).max() > 0.1


def test_figures_are_computed_not_constant():
    uniform = [np.zeros((5, 256), np.float32)]
    assert generation.perplexity(uniform, [[1, 2, 3, 4, 5]]) == pytest.approx(256.0)
    agreement, first = generation.token_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5, 6]])
    assert agreement == pytest.approx(5 / 6) and first == [2, 2]
    answers = [{"tokens": [1, 2, 3], "ttft_s": 0.01, "step_s": [0.002, 0.004],
                "total_s": 0.016}]
    figures = generation.latency_figures(answers)
    assert figures["ttft_ms"] == pytest.approx(10.0) and figures["tpot_ms"] == pytest.approx(3.0)
    assert figures["tokens_per_s"] == pytest.approx(3 / 0.016, rel=1e-3)
    assert generation.limit_for("fp16", "fp32")[0] == "fp16"
    assert generation.limit_for("fp32", "bf16")[0] == "bf16"


def test_an_empty_prompt_or_no_new_token_is_refused(model):
    run, spec = _session(model), generation.cache_spec(model)
    with pytest.raises(ValueError, match="at least 1"):
        generation.greedy(run, [], 4, spec)
    with pytest.raises(ValueError, match="at least 1"):
        generation.greedy(run, [65], 0, spec)


def test_a_model_without_a_cache_is_refused(model):
    del model.graph.input[1:]
    with pytest.raises(ValueError, match="not a decoder with a KV cache"):
        generation.cache_spec(model)


def test_compare_names_the_figure():
    reference = {"tokens": [[1, 2, 3, 4]], "perplexity": 10.0}
    passed, message, metrics = generation.compare(
        {"tokens": [[1, 2, 7, 7]], "perplexity": 12.0}, reference, "fp32", "fp32")
    assert not passed and "token agreement 0.5000" in message and "1.2000x" in message
    assert metrics["perplexity_ratio"] == 1.2 and "accuracy_drop" not in metrics
    passed, message, metrics = generation.compare(
        {"tokens": [[1, 2, 3, 7]], "perplexity": 10.1}, reference, "fp16", "fp32")
    assert not passed and "< 0.9 (fp16)" in message and "perplexity" not in message
    assert metrics["accuracy_drop"] == 0.25 and metrics["precision_class"] == "fp16"


def _check(mode: str, task: str = "generation_greedy", **options):
    target = DegradingTarget(mode=mode, **options)
    return check_generation(Zoo(), InlineHost(target), target.capabilities().precision, 120.0,
                            task)


def test_a_correct_target_passes_with_measured_latencies():
    outcome = _check("none")
    assert outcome.status == "pass", outcome.message
    metrics = outcome.metrics
    assert metrics["token_agreement"] == 1.0 and metrics["perplexity_ratio"] == pytest.approx(1.0)
    assert metrics["details"]["generated_tokens"] == len(generation.PROMPTS) * \
        generation.NEW_TOKENS
    assert metrics["ttft_ms"] > 0 and metrics["tpot_ms"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["latency_p99_ms"] >= metrics["latency_p50_ms"] > 0
    assert metrics["texts"] == metrics["reference_texts"] and metrics["generated_model"]


@pytest.mark.slow
def test_the_fp16_decoder_is_held_to_its_stated_drop():
    outcome = _check("none", "generation_greedy_fp16")
    assert outcome.status == "pass", outcome.message
    assert outcome.metrics["precision_class"] == "fp16"
    assert outcome.metrics["reference_model"] == "tiny_decoder"
    assert outcome.metrics["accuracy_drop"] <= outcome.metrics["limit"]["max_accuracy_drop"]


def test_a_target_that_drops_the_cache_fails_with_the_figure():
    outcome = _check("drop_cache")
    assert outcome.status == "fail"
    assert "token agreement" in outcome.message
    assert outcome.metrics["token_agreement"] < 0.9
    # the teacher-forced passages need no cache: perplexity is the reference's
    assert outcome.metrics["perplexity_ratio"] == pytest.approx(1.0, abs=1e-3)


def test_perturbed_logits_fail_by_perplexity():
    outcome = _check("noise", std=0.5)
    assert outcome.status == "fail"
    assert "perplexity" in outcome.message and outcome.metrics["perplexity_ratio"] > 1.01


@pytest.mark.slow
def test_shipei_run_records_the_scenario_figures(shipei_cli):
    """Through ``shipei run``: the correct target passes both tasks with their figures in
    the records; the one that drops the KV cache fails generation and keeps text."""
    from tests.degrading_target import PLUGINS

    result = shipei_cli("run", "--suite", "scenarios", "--target", "onnxruntime-cpu",
                        "--target", "shipei-degrading,mode=drop_cache", "-k",
                        "test_text_embedding or test_generation_greedy", env=PLUGINS)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    records = {(r["target"], r["case"]): r for r in result.records()}
    good = records[("onnxruntime-cpu", "test_generation_greedy")]
    assert good["status"] == "pass" and good["metrics"]["tokens_per_s"] > 0
    assert good["tags"]["scenarios"] == ["llm"] and good["tags"]["task"] == "generation"
    assert records[("onnxruntime-cpu", "test_text_embedding")]["status"] == "pass"
    bad = records[("shipei-degrading,mode=drop_cache", "test_generation_greedy")]
    assert bad["status"] == "fail" and "token agreement" in bad["message"]
    assert records[("shipei-degrading,mode=drop_cache", "test_text_embedding")][
        "status"] == "pass"
