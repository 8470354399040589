"""Task-level checks on a target: the skeleton every task check shares, and the OCR
answer and the VAD segments.

Each check runs the whole task on the target under test and compares the answer with
the reference's (:func:`run_task_check`): for OCR and VAD, the stored task golden when it
was computed from the same input and model bytes, otherwise (a different font or Pillow
renders other pixels) the reference target live, which the record then says. Figures
and the answers themselves (recognized strings, segments) go into the record, where the
models report shows them per target.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.cases.case import Outcome, outcome_from_exception
from harness.isolation.host import Host
from harness.modelzoo import golden as golden_store
from harness.modelzoo.execute import HOST_FAILURES, Deadline
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.reference import Reference, ReferenceUnavailable
from harness.modelzoo.sources import SourceError
from harness.modelzoo.streaming import WORKER_FUNCTION, worker_payload
from harness.modelzoo.tasks import ocr, vad
from harness.modelzoo.zoo import Zoo, ZooEntry

T = TypeVar("T")
P = TypeVar("P")
A = TypeVar("A")
R = TypeVar("R")

OCR_TASK = "ocr_pipeline"
OCR_MODELS = {"det": "ppocrv4_det", "cls": "ppocr_mobile_cls", "rec": "ppocrv4_rec"}
#: VAD task -> model: silero's default export (what load_silero_vad(onnx=True) loads)
#: and its opset-18 export, which more converters accept
VAD_TASKS = {"vad_segments": "silero_vad", "vad_segments_op18": "silero_vad_ifless"}
#: seconds of silence, speech, silence, speech, silence
VAD_DURATIONS = (0.8, 1.5, 1.0, 1.2, 0.7)
VAD_SEED = 1
VAD_RATE = 16000
#: what reading a target's outputs as a task's answer raises when they are not one
UNREADABLE = (ValueError, IndexError, KeyError, TypeError)
#: seconds the reference target gets for a task
REFERENCE_SECONDS = 600.0
#: the pip package of each library a task needs, where its import name differs
LIBRARIES = {"sklearn": "scikit-learn", "PIL": "pillow"}


class TaskUnavailable(Exception):
    """The check cannot run here (a package, font or library missing): a skip."""


def run_task_check(host: Host, timeout: float, prepare: Callable[[], P],
                   on_target: Callable[[P, Host, Deadline], A],
                   on_reference: Callable[[P], R],
                   judge: Callable[[P, A, R], Outcome], reads_as: str) -> Outcome:
    """The shape every task check has. ``prepare`` the inputs and models
    (:class:`TaskUnavailable`: a skip; a source, manifest or input that will not do: the
    harness's ``infra_error``); the target's answer ``on_target`` within ``timeout`` (its
    host failures are its own, by :func:`~harness.cases.case.outcome_from_exception`); the
    reference's answer ``on_reference`` (its failures are ``infra_error``); ``judge``. Outputs
    that cannot be read as ``reads_as`` (while answering or judging) are the target's
    ``fail``. The outcome's timings hold ``target_s`` and ``total_s``."""
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
    except UNREADABLE as exc:
        return _unreadable(reads_as, exc, started)
    target_s = time.perf_counter() - started
    try:
        expected = on_reference(prepared)
    except (ReferenceUnavailable, *HOST_FAILURES) as exc:
        return Outcome("infra_error", f"the reference could not run: {exc}")
    try:
        outcome = judge(prepared, answer, expected)
    except UNREADABLE as exc:
        return _unreadable(reads_as, exc, started)
    outcome.timings.update(target_s=target_s, total_s=time.perf_counter() - started)
    return outcome


def _unreadable(reads_as: str, exc: Exception, started: float) -> Outcome:
    return Outcome("fail", f"the target's outputs cannot be read as {reads_as}: "
                           f"{type(exc).__name__}: {exc}",
                   timings={"total_s": time.perf_counter() - started})


def task_entries(zoo: Zoo, names: Mapping[str, str]) -> dict[str, ZooEntry]:
    """The zoo's models by role, their bytes checked against the pinned sha256
    (:class:`TaskUnavailable` when a source is not here, SourceError when it changed)."""
    entries = {role: zoo.entry(name) for role, name in names.items()}
    for entry in entries.values():
        state = entry.status()
        if not state.available:
            raise TaskUnavailable(f"{entry.name}: {state.reason}")
    for entry in entries.values():
        entry.model_bytes()
    return entries


def need_libraries(*modules: str, why: str = "") -> None:
    """:class:`TaskUnavailable`, with the install hint (and ``why`` the task needs it),
    unless every module is importable."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise TaskUnavailable(f"{module} is not installed{f' ({why})' if why else ''}; "
                                  f"pip install {LIBRARIES.get(module, module)}")


def cjk_font() -> tuple[Path, int]:
    """A font with Chinese glyphs (and its face index) to render a task's text with, and
    Pillow to render it; :class:`TaskUnavailable` with the install hint otherwise."""
    need_libraries("PIL")
    font = ocr.find_cjk_font()
    if font is None:
        raise TaskUnavailable(f"no CJK font found; {ocr.FONT_HINT}")
    return font


def call_task(host: Host, key: str, model: bytes, function: str, payload: Any,
              deadline: Deadline) -> Any:
    """Compile ``model`` on ``host`` and run ``function`` with it in the worker."""
    try:
        host.compile(key, model, deadline.left())
        return host.call(function, key, payload, deadline.left())
    finally:
        host.release(key)


def array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# -- OCR ----------------------------------------------------------------------------
def ocr_image() -> tuple[Any, dict[str, Any]]:
    """The rendered test image and what describes it (font, lines, pixel sha256)."""
    font = cjk_font()
    image = ocr.render_text(font)
    return image, {"font": f"{font[0].name}#{font[1]}", "lines": list(ocr.LINES),
                   "input_sha256": array_digest(np.asarray(image))}


def ocr_inputs(entries: Mapping[str, ZooEntry]) -> tuple[tuple[Any, list[str]], dict[str, Any]]:
    """The rendered image with the recognizer's dictionary, and what describes the image."""
    image, described = ocr_image()
    return (image, ocr.character_list(entries["rec"].model_bytes())), described


def ocr_answer(host: Host, prepared: GoldenInputs, deadline: Deadline) -> ocr.OcrResult:
    image, characters = prepared.given
    keys = {role: f"models::{OCR_TASK}::{role}" for role in prepared.entries}
    try:
        for role, entry in prepared.entries.items():
            host.compile(keys[role], entry.model_bytes(), deadline.left())
        return ocr.run_pipeline(lambda key, feeds: host.run(key, feeds, deadline.left())[0],
                                keys, image, characters)
    finally:
        for key in keys.values():
            host.release(key)


def models_digest(zoo: Zoo, names: Mapping[str, str]) -> dict[str, str]:
    return {name: zoo.entry(name).manifest.sha256 for name in names.values()}


_REFERENCE_ANSWERS: dict[str, Any] = {}


def reference_answer(key: str, compute: Callable[[Host], Any]) -> Any:
    """The reference's answer live, computed once per ``key`` (model and inputs) per
    process."""
    if key not in _REFERENCE_ANSWERS:
        with Reference() as reference:
            _REFERENCE_ANSWERS[key] = compute(reference.host)
    return _REFERENCE_ANSWERS[key]


def reference_task_answer(zoo: Zoo, task: str, input_sha256: str, models: Mapping[str, str],
                          compute: Callable[[Host], Any]) -> tuple[Any, str]:
    """The stored golden's answer if it matches this input, else the reference live."""
    try:
        stored = golden_store.load_task(zoo.golden_dir, task)
    except golden_store.GoldenError:
        stored = None
    if stored and stored.get("input_sha256") == input_sha256 and stored.get("models") == dict(
            models):
        return stored["result"], "golden"
    with Reference() as reference:
        return compute(reference.host), "live reference (the stored golden is of another input)"


@dataclass(frozen=True)
class GoldenInputs:
    """A task ready to run whose reference's answer is stored as a task golden: what its
    answers take (``given``), what describes that (with its ``input_sha256``, stored with the
    golden), its models by role (bytes checked) and their sha256 by name."""

    given: Any
    described: dict[str, Any]
    entries: dict[str, ZooEntry]
    models: dict[str, str]


def prepare_golden(zoo: Zoo, models: Mapping[str, str],
                   inputs: Callable[[dict[str, ZooEntry]], tuple[Any, dict[str, Any]]]
                   ) -> GoldenInputs:
    """The task's models (:func:`task_entries`), then its ``inputs`` for them."""
    entries = task_entries(zoo, models)
    given, described = inputs(entries)
    return GoldenInputs(given, described, entries, models_digest(zoo, models))


def check_against_golden(zoo: Zoo, host: Host, timeout: float, task: str,
                         models: Mapping[str, str],
                         inputs: Callable[[dict[str, ZooEntry]], tuple[Any, dict[str, Any]]],
                         on_target: Callable[[Host, GoldenInputs, Deadline], A],
                         on_reference: Callable[[Host, GoldenInputs, Deadline], Any],
                         judge: Callable[[GoldenInputs, A, Any], Outcome], reads_as: str
                         ) -> Outcome:
    """:func:`run_task_check` of a task whose reference's answer (``on_reference``) is the
    stored task golden when that was computed from the same input and model bytes, else
    the reference live; ``judge`` gets the target's answer and the reference's, and the
    record's ``reference_origin`` says which it was."""
    def reference(prepared: GoldenInputs) -> tuple[Any, str]:
        return reference_task_answer(
            zoo, task, prepared.described["input_sha256"], prepared.models,
            lambda ref: on_reference(ref, prepared, Deadline(REFERENCE_SECONDS)))

    def judged(prepared: GoldenInputs, answer: A, expected: tuple[Any, str]) -> Outcome:
        stored, origin = expected
        outcome = judge(prepared, answer, stored)
        outcome.metrics["reference_origin"] = origin
        return outcome

    return run_task_check(host, timeout, lambda: prepare_golden(zoo, models, inputs),
                          lambda prepared, where, deadline: on_target(where, prepared, deadline),
                          reference, judged, reads_as)


def check_ocr(zoo: Zoo, host: Host, timeout: float) -> Outcome:
    def judge(prepared: GoldenInputs, result: ocr.OcrResult, stored: Any) -> Outcome:
        lines = prepared.described["lines"]
        reference = ocr.OcrResult.from_dict(stored)
        agrees, message, figures = ocr.compare(result, reference)
        metrics = {**figures, "texts": result.texts, "boxes": result.boxes,
                   "angles": result.angles, "text_scores": result.text_scores,
                   "reference_texts": reference.texts, "ground_truth": lines,
                   "char_accuracy": round(ocr.char_accuracy(result.texts, lines), 4),
                   "font": prepared.described["font"]}
        return Outcome("pass" if agrees else "fail", message, metrics)

    return check_against_golden(
        zoo, host, timeout, OCR_TASK, OCR_MODELS, ocr_inputs, ocr_answer,
        lambda prepared, ref, deadline: ocr_answer(ref, prepared, deadline).to_dict(),
        judge, "OCR results")


def refresh_ocr(zoo: Zoo, reference: Reference, write: bool) -> list[str]:
    prepared = prepare_golden(zoo, OCR_MODELS, ocr_inputs)
    lines = prepared.described["lines"]
    result = ocr_answer(reference.host, prepared, Deadline(REFERENCE_SECONDS))
    data = {**prepared.described, "models": prepared.models, "result": result.to_dict(),
            "char_accuracy": round(ocr.char_accuracy(result.texts, lines), 4),
            "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, OCR_TASK, data, write,
                             f"read {result.texts} (rendered {lines})")


# -- VAD ----------------------------------------------------------------------------
def vad_signal() -> np.ndarray:
    return vad.speech_like(VAD_DURATIONS, VAD_RATE, VAD_SEED)


def vad_inputs(entries: Mapping[str, ZooEntry]) -> tuple[np.ndarray, dict[str, Any]]:
    """The synthetic speech signal and its sha256; ManifestError unless the model streams."""
    manifest = entries["vad"].manifest
    if manifest.streaming is None:
        raise ManifestError(f"{manifest.path.name}: a VAD model needs a [streaming] table")
    signal = vad_signal()
    return signal, {"input_sha256": array_digest(signal)}


def vad_answer(host: Host, prepared: GoldenInputs, deadline: Deadline) -> dict[str, Any]:
    entry, signal = prepared.entries["vad"], prepared.given
    streaming = entry.manifest.streaming
    assert streaming is not None  # checked by vad_inputs
    feeds = dict(entry.data_sets()[0])
    feeds[streaming.chunk_input] = signal
    outputs = call_task(host, f"models::vad::{entry.name}", entry.model_bytes(),
                        WORKER_FUNCTION, worker_payload(feeds, streaming), deadline)
    probabilities = np.asarray(outputs[streaming.collect[0]], dtype=np.float64)
    probabilities = probabilities.reshape(len(probabilities), -1)[:, 0]
    found = vad.segments(probabilities.tolist(), streaming.chunk, VAD_RATE, signal.size)
    return {"segments": [list(s) for s in found],
            "probabilities": [round(float(p), 6) for p in probabilities]}


def check_vad(zoo: Zoo, host: Host, timeout: float, task: str = "vad_segments") -> Outcome:
    def judge(prepared: GoldenInputs, answer: dict[str, Any], stored: Any) -> Outcome:
        agrees, message, figures = vad.compare(answer["segments"], stored["segments"])
        truth = vad.true_segments(VAD_DURATIONS)
        mine, theirs = answer["probabilities"], stored["probabilities"]
        metrics = {**figures, "speech_segments": answer["segments"],
                   "reference_segments": stored["segments"], "true_segments": truth,
                   "speech_coverage": vad.overlap_with_truth(answer["segments"], truth),
                   "max_probability_diff": float(np.abs(np.subtract(mine, theirs)).max())
                   if len(mine) == len(theirs) and mine else None,
                   "chunks": len(mine), "probabilities": [round(p, 4) for p in mine]}
        return Outcome("pass" if agrees else "fail", message, metrics)

    return check_against_golden(zoo, host, timeout, task, {"vad": VAD_TASKS[task]}, vad_inputs,
                                vad_answer, vad_answer, judge, "speech probabilities")


def refresh_vad(zoo: Zoo, reference: Reference, write: bool, task: str = "vad_segments"
                ) -> list[str]:
    prepared = prepare_golden(zoo, {"vad": VAD_TASKS[task]}, vad_inputs)
    answer = vad_answer(reference.host, prepared, Deadline(REFERENCE_SECONDS))
    truth = vad.true_segments(VAD_DURATIONS)
    data = {**prepared.described, "durations": list(VAD_DURATIONS),
            "seed": VAD_SEED, "sample_rate": VAD_RATE, "models": prepared.models,
            "result": answer, "true_segments": truth, "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, task, data, write,
                             f"segments {answer['segments']} (speech put at {truth})")


def store_task_golden(golden_dir: Path, task: str, data: dict[str, Any], write: bool,
                      summary: str) -> list[str]:
    try:
        old = golden_store.load_task(golden_dir, task)
    except golden_store.GoldenError:
        old = None
    comparable = ("input_sha256", "models", "result")
    if old is not None and all(old.get(k) == data[k] for k in comparable):
        return ["unchanged", summary]
    if write:
        golden_store.save_task(golden_dir, task, data)
    if old is None:
        return ["new golden", summary]
    changed = [k for k in comparable if old.get(k) != data[k]]
    return [f"changed: {', '.join(changed)}", summary]


def timed_task_run(host: Host, key: str, model: bytes, deadline: Deadline,
                   work: Callable[[Callable[[Any], Any]], T]) -> tuple[T, list[float]]:
    """Compile ``model`` on ``host`` under ``key``, do ``work`` with a runner that times
    each run (ms), and release the model whatever happens: the task's answer and the
    latencies of its runs."""
    latencies: list[float] = []

    def run(feeds: Any) -> Any:
        outputs, seconds = host.run(key, feeds, deadline.left())
        latencies.append(seconds * 1000.0)
        return outputs

    try:
        host.compile(key, model, deadline.left())
        result = work(run)
    finally:
        host.release(key)
    return result, [round(v, 3) for v in latencies]
