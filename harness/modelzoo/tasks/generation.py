"""Autoregressive generation with a KV cache: greedy continuation, perplexity, LLM latency.

The task a large-model (大模型) scenario asks of a chip: a prompt is prefilled in one run
(no cache yet: every ``past_key_values.*`` input has length 0), then one token per run is
decoded with the cache the previous run returned (``present.*``). :func:`run_in_worker`
does the whole loop inside the target's worker, so the latencies are the target's:
time to first token (the prefill), time per output token (each decode step) and tokens
per second, as MLPerf's LLM benchmarks define them. Perplexity is measured teacher-forced
(one prefill over a known passage). Tokens are UTF-8 bytes (the zoo's decoder is
byte-level), so Chinese and English prompts need no tokenizer file.

Judged against the reference target's answer (fp32 ONNX Runtime): token agreement of the
greedy continuations, the perplexity ratio, and the accuracy drop held to a stated limit
per precision class (:data:`GENERATION_LIMITS`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.modelzoo.metrics import precision_class
from harness.perf.stats import latency_percentiles_ms, percentile_of

WORKER_FUNCTION = "harness.modelzoo.tasks.generation:run_in_worker"
PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."

#: prompts (Chinese and English) and how many tokens each continues with
PROMPTS = ("A language model reads a prompt and", "The harness runs the model on",
           "A smart factory inspects", "语言模型读入提示，", "适配中心认证芯片",
           "智能工厂用相机")
NEW_TOKENS = 24
#: teacher-forced passages for perplexity (from the decoder's own corpus: in-distribution)
PASSAGES = ("The time to the first token measures the prefill.",
            "The text encoder finds the nearest sentence.",
            "首词元时延衡量预填充。", "文本编码器找到最相近的句子。")


@dataclass(frozen=True)
class GenerationLimit:
    """What a precision class may lose against the fp32 reference."""

    min_token_agreement: float
    max_perplexity_ratio: float

    @property
    def max_accuracy_drop(self) -> float:
        return round(1.0 - self.min_token_agreement, 6)


#: by precision class (the model's, or the target configuration's when coarser); the
#: accuracy drop is the share of the reference's greedy tokens the target does not
#: reproduce (MLPerf holds LLMs to 99% of the fp32 reference's score)
GENERATION_LIMITS: dict[str, GenerationLimit] = {
    "fp32": GenerationLimit(0.99, 1.01),
    "fp16": GenerationLimit(0.90, 1.02),
    "bf16": GenerationLimit(0.80, 1.05),
    "int8": GenerationLimit(0.80, 1.10),
}


def limit_for(model_precision: str, target_precision: str) -> tuple[str, GenerationLimit]:
    """The coarser of the model's and the target's precision classes, and its limit."""
    coarse = precision_class(model_precision, target_precision)
    return coarse, GENERATION_LIMITS[coarse]


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(tokens: Sequence[int]) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


# -- the KV cache, as the model declares it ---------------------------------------------
def cache_spec(model: Any) -> dict[str, Any]:
    """``{"pairs": [[past, present], ...], "heads", "head_dim", "dtype"}`` of an ONNX
    decoder (an ``onnx.ModelProto``); ValueError when it has no KV-cache interface."""
    from onnx import helper

    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    pasts = sorted(name for name in inputs if name.startswith(PAST_PREFIX))
    if "input_ids" not in inputs or "logits" not in outputs or not pasts:
        raise ValueError("not a decoder with a KV cache: needs input_ids, logits and "
                         f"{PAST_PREFIX}* inputs")
    pairs = []
    for past in pasts:
        present = PRESENT_PREFIX + past[len(PAST_PREFIX):]
        if present not in outputs:
            raise ValueError(f"input {past!r} has no matching output {present!r}")
        pairs.append([past, present])
    tensor = inputs[pasts[0]].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4 or dims[1] is None or dims[3] is None:
        raise ValueError(f"{pasts[0]!r} must be [batch, heads, past_seq, head_dim] with "
                         f"fixed heads and head_dim, not {dims}")
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    extra = [name for name in ("attention_mask", "position_ids") if name in inputs]
    return {"pairs": pairs, "heads": dims[1], "head_dim": dims[3], "dtype": dtype,
            "inputs": extra}


# -- inside the target's worker (numpy only) ----------------------------------------------
def _empty_cache(spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    shape = (1, int(spec["heads"]), 0, int(spec["head_dim"]))
    return {past: np.zeros(shape, dtype=spec["dtype"]) for past, _ in spec["pairs"]}


def _feeds(tokens: Sequence[int], past: int, cache: Mapping[str, Any],
           spec: Mapping[str, Any]) -> dict[str, Any]:
    """One run's inputs: the new tokens after ``past`` cached ones (batch 1, no padding)."""
    feeds: dict[str, Any] = {"input_ids": np.asarray([tokens], dtype=np.int64), **cache}
    if "attention_mask" in spec.get("inputs", ()):
        feeds["attention_mask"] = np.ones((1, past + len(tokens)), dtype=np.int64)
    if "position_ids" in spec.get("inputs", ()):
        feeds["position_ids"] = np.arange(past, past + len(tokens), dtype=np.int64)[None]
    return feeds


def greedy(run: Any, prompt: Sequence[int], new_tokens: int, spec: Mapping[str, Any]
           ) -> dict[str, Any]:
    """Prefill ``prompt``, then decode ``new_tokens`` greedily with the KV cache."""
    if new_tokens < 1 or not prompt:
        raise ValueError(f"a prompt of {len(prompt)} tokens and {new_tokens} new tokens: "
                         "both must be at least 1")
    feeds = _feeds(prompt, 0, _empty_cache(spec), spec)
    tokens: list[int] = []
    steps: list[float] = []
    started = time.perf_counter()
    for step in range(new_tokens):
        begun = time.perf_counter()
        outputs = run(feeds)
        logits = np.asarray(outputs["logits"])
        token = int(np.argmax(logits[0, -1]))
        elapsed = time.perf_counter() - begun
        if step == 0:
            ttft = elapsed
        else:
            steps.append(elapsed)
        tokens.append(token)
        cache = {past: np.asarray(outputs[present]) for past, present in spec["pairs"]}
        feeds = _feeds([token], len(prompt) + step, cache, spec)
    return {"tokens": tokens, "ttft_s": ttft, "step_s": steps,
            "total_s": time.perf_counter() - started}


def teacher_forced_logits(run: Any, tokens: Sequence[int], spec: Mapping[str, Any]
                          ) -> np.ndarray:
    """The logits of one prefill over ``tokens`` (float32, [len, vocab])."""
    outputs = run(_feeds(tokens, 0, _empty_cache(spec), spec))
    return np.asarray(outputs["logits"], dtype=np.float32)[0]


def run_in_worker(executable: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What ``Host.call`` runs in the worker: a warm-up, every prompt, every passage."""
    spec, run = payload["cache"], executable.run
    new_tokens = int(payload["new_tokens"])
    greedy(run, payload["prompts"][0], min(2, new_tokens), spec)  # warm-up, not timed
    answers = [greedy(run, prompt, new_tokens, spec) for prompt in payload["prompts"]]
    logits = [teacher_forced_logits(run, passage, spec) for passage in payload["passages"]]
    return {"answers": answers, "passage_logits": logits}


def worker_payload(spec: Mapping[str, Any], new_tokens: int = NEW_TOKENS,
                   prompts: Sequence[str] = PROMPTS, passages: Sequence[str] = PASSAGES
                   ) -> dict[str, Any]:
    return {"cache": dict(spec), "new_tokens": new_tokens,
            "prompts": [encode(p) for p in prompts], "passages": [encode(p) for p in passages]}


# -- metrics (outside the worker) -------------------------------------------------------
def perplexity(logits_list: Sequence[np.ndarray], passages: Sequence[Sequence[int]]) -> float:
    """exp of the mean negative log-likelihood of each passage's next tokens."""
    from scipy.special import log_softmax

    total, count = 0.0, 0
    for logits, tokens in zip(logits_list, passages, strict=True):
        log_probs = log_softmax(np.asarray(logits, dtype=np.float64)[:-1], axis=-1)
        targets = np.asarray(tokens[1:], dtype=np.int64)
        total -= float(log_probs[np.arange(targets.size), targets].sum())
        count += int(targets.size)
    return float(np.exp(total / count))


def token_agreement(result: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]
                    ) -> tuple[float, list[int]]:
    """Share of positions where the greedy tokens equal the reference's, and each
    prompt's first differing position (its length when none differs)."""
    same = total = 0
    first: list[int] = []
    for mine, theirs in zip(result, reference, strict=True):
        matches = [a == b for a, b in zip(mine, theirs, strict=False)]
        same += sum(matches)
        total += max(len(mine), len(theirs))
        first.append(matches.index(False) if False in matches else len(matches))
    return (same / total if total else 1.0), first


def latency_figures(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """MLPerf LLM figures over single-stream queries (one prompt at a time): time to first
    token (median prefill), time per output token (mean decode step; its p50 and p99 are
    ``latency_p50_ms`` and ``latency_p99_ms``), tokens per second."""
    ttft = [float(a["ttft_s"]) for a in answers]
    steps = [float(s) for a in answers for s in a["step_s"]]
    tokens = sum(len(a["tokens"]) for a in answers)
    seconds = sum(float(a["total_s"]) for a in answers)
    figures: dict[str, Any] = {
        "ttft_ms": round(1e3 * float(percentile_of(ttft, 50)), 4),
        "tokens_per_s": round(tokens / seconds, 3) if seconds > 0 else 0.0,
        "details": {"ttft_p99_ms": round(1e3 * float(percentile_of(ttft, 99)), 4),
                    "generated_tokens": tokens}}
    if steps:
        figures.update(tpot_ms=round(1e3 * float(np.mean(steps)), 4),
                       **latency_percentiles_ms(1e3 * np.asarray(steps)))
    return figures


def summarize(answer: Mapping[str, Any], passages: Sequence[str] = PASSAGES) -> dict[str, Any]:
    """What the record keeps of one run: tokens, texts, perplexity."""
    tokens = [list(map(int, a["tokens"])) for a in answer["answers"]]
    return {"tokens": tokens, "texts": [decode(t) for t in tokens],
            "perplexity": perplexity(answer["passage_logits"], [encode(p) for p in passages])}


def compare(result: Mapping[str, Any], reference: Mapping[str, Any], model_precision: str,
            target_precision: str) -> tuple[bool, str, dict[str, Any]]:
    """Verdict, message naming the figure, and figures of a target against the reference."""
    precision, limit = limit_for(model_precision, target_precision)
    agreement, first = token_agreement(result["tokens"], reference["tokens"])
    ratio = result["perplexity"] / reference["perplexity"]
    metrics: dict[str, Any] = {
        "token_agreement": round(agreement, 4), "first_divergence": first,
        "perplexity": round(result["perplexity"], 4), "perplexity_ratio": round(ratio, 6),
        "precision_class": precision,
        "limit": {"min_token_agreement": limit.min_token_agreement,
                  "max_perplexity_ratio": limit.max_perplexity_ratio,
                  "max_accuracy_drop": limit.max_accuracy_drop},
        # numeric figures beyond the contract's stay in here: a certificate's model table
        # shows a case's first eight top-level numbers
        "details": {"reference_perplexity": round(reference["perplexity"], 4)}}
    if precision != "fp32":  # a lower precision compared with the fp32 reference
        metrics["accuracy_drop"] = round(1.0 - agreement, 4)
    problems = []
    if agreement < limit.min_token_agreement:
        problems.append(f"token agreement {agreement:.4f} with the reference's greedy "
                        f"continuation < {limit.min_token_agreement} ({precision})")
    if not np.isfinite(ratio) or ratio > limit.max_perplexity_ratio or ratio < (
            1.0 / limit.max_perplexity_ratio):
        problems.append(f"perplexity {result['perplexity']:.4f} is {ratio:.4f}x the "
                        f"reference's {reference['perplexity']:.4f} (allowed "
                        f"{limit.max_perplexity_ratio}x, {precision})")
    return not problems, "; ".join(problems), metrics
