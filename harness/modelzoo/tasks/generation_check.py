"""The generation task on a target: glue between the zoo, a worker and :mod:`.generation`.

:func:`check_generation` runs greedy generation with the KV cache and the perplexity
passages on the target's worker, the same on the reference (fp32 ONNX Runtime running
the fp32 model: an fp16 or int8 model is compared with the fp32 reference), and judges
the target's answer (:func:`.generation.compare`). Latencies (time to first token, time
per output token, tokens per second) are measured inside the target's worker.
"""

from __future__ import annotations

from typing import Any

import onnx

from harness.cases.case import Outcome
from harness.isolation.host import Host
from harness.modelzoo.execute import Deadline
from harness.modelzoo.task_checks import (
    REFERENCE_SECONDS,
    call_task,
    need_libraries,
    reference_answer,
    run_task_check,
    task_entries,
)
from harness.modelzoo.tasks import generation
from harness.modelzoo.zoo import Zoo

#: task -> (model, the fp32 model its reference runs)
GENERATION_TASKS: dict[str, tuple[str, str]] = {
    "generation_greedy": ("tiny_decoder", "tiny_decoder"),
    "generation_greedy_fp16": ("tiny_decoder_fp16", "tiny_decoder"),
}


def check_generation(zoo: Zoo, host: Host, precision: str, timeout: float,
                     task: str = "generation_greedy") -> Outcome:
    """Greedy continuations of :data:`generation.PROMPTS` and passage perplexity, judged."""
    model, reference_model = GENERATION_TASKS[task]

    def prepare() -> dict[str, Any]:
        need_libraries("scipy")
        entries = task_entries(zoo, {"target": model, "reference": reference_model})
        payloads = {role: generation.worker_payload(generation.cache_spec(
            onnx.load_from_string(entry.model_bytes()))) for role, entry in entries.items()}
        return {"entries": entries, "payloads": payloads}

    def on(prepared: dict[str, Any], role: str, where: Host, deadline: Deadline) -> Any:
        entry = prepared["entries"][role]
        return call_task(where, f"scenarios::generation::{entry.name}", entry.model_bytes(),
                         generation.WORKER_FUNCTION, prepared["payloads"][role], deadline)

    def on_reference(prepared: dict[str, Any]) -> Any:
        entry = prepared["entries"]["reference"]
        return reference_answer(f"{entry.manifest.sha256}|{generation.WORKER_FUNCTION}",
                                lambda ref: on(prepared, "reference", ref,
                                               Deadline(REFERENCE_SECONDS)))

    def judge(prepared: dict[str, Any], answer: Any, expected: Any) -> Outcome:
        mine, theirs = generation.summarize(answer), generation.summarize(expected)
        entry = prepared["entries"]["target"]
        passed, message, metrics = generation.compare(mine, theirs, entry.manifest.precision,
                                                      precision)
        latency = generation.latency_figures(answer["answers"])
        metrics["details"].update(latency.pop("details"))
        metrics.update(latency, prompts=list(generation.PROMPTS), texts=mine["texts"],
                       reference_texts=theirs["texts"], model=model,
                       reference_model=reference_model, reference_origin="live reference",
                       generated_model=entry.manifest.source.kind == "generator")
        return Outcome("pass" if passed else "fail", message, metrics)

    return run_task_check(host, timeout, prepare,
                          lambda prepared, where, deadline: on(prepared, "target", where,
                                                               deadline),
                          on_reference, judge, "generated tokens and passage logits")
