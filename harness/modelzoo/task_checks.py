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
LIBRARIES = {"sklearn": "scikit-learn"}


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


def need_libraries(*modules: str) -> None:
    """:class:`TaskUnavailable`, with the install hint, unless every module is importable."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise TaskUnavailable(f"{module} is not installed; pip install "
                                  f"{LIBRARIES.get(module, module)}")


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
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise TaskUnavailable("Pillow is not installed; pip install pillow") from None
    font = ocr.find_cjk_font()
    if font is None:
        raise TaskUnavailable(f"no CJK font found; {ocr.FONT_HINT}")
    image = ocr.render_text(font)
    return image, {"font": f"{font[0].name}#{font[1]}", "lines": list(ocr.LINES),
                   "input_sha256": array_digest(np.asarray(image))}


def ocr_models(zoo: Zoo) -> tuple[dict[str, ZooEntry], list[str]]:
    """The three OCR models (bytes checked) and the recognizer's dictionary."""
    entries = task_entries(zoo, OCR_MODELS)
    return entries, ocr.character_list(entries["rec"].model_bytes())


def ocr_answer(host: Host, entries: Mapping[str, ZooEntry], characters: list[str], image: Any,
               deadline: Deadline) -> ocr.OcrResult:
    keys = {role: f"models::{OCR_TASK}::{role}" for role in entries}
    try:
        for role, entry in entries.items():
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


def check_ocr(zoo: Zoo, host: Host, timeout: float) -> Outcome:
    def prepare() -> dict[str, Any]:
        image, described = ocr_image()
        entries, characters = ocr_models(zoo)
        return {"image": image, "described": described, "entries": entries,
                "characters": characters, "models": models_digest(zoo, OCR_MODELS)}

    def on(prepared: dict[str, Any], where: Host, deadline: Deadline) -> ocr.OcrResult:
        return ocr_answer(where, prepared["entries"], prepared["characters"],
                          prepared["image"], deadline)

    def on_reference(prepared: dict[str, Any]) -> tuple[Any, str]:
        return reference_task_answer(
            zoo, OCR_TASK, prepared["described"]["input_sha256"], prepared["models"],
            lambda ref: on(prepared, ref, Deadline(REFERENCE_SECONDS)).to_dict())

    def judge(prepared: dict[str, Any], result: ocr.OcrResult, expected: tuple[Any, str]
              ) -> Outcome:
        stored, origin = expected
        described = prepared["described"]
        reference = ocr.OcrResult.from_dict(stored)
        agrees, message, figures = ocr.compare(result, reference)
        metrics = {**figures, "texts": result.texts, "boxes": result.boxes,
                   "angles": result.angles, "text_scores": result.text_scores,
                   "reference_texts": reference.texts, "ground_truth": described["lines"],
                   "reference_origin": origin,
                   "char_accuracy": round(ocr.char_accuracy(result.texts, described["lines"]),
                                          4),
                   "font": described["font"]}
        return Outcome("pass" if agrees else "fail", message, metrics)

    return run_task_check(host, timeout, prepare, on, on_reference, judge, "OCR results")


def refresh_ocr(zoo: Zoo, reference: Reference, write: bool) -> list[str]:
    image, described = ocr_image()
    entries, characters = ocr_models(zoo)
    result = ocr_answer(reference.host, entries, characters, image,
                        Deadline(REFERENCE_SECONDS))
    data = {**described, "models": models_digest(zoo, OCR_MODELS), "result": result.to_dict(),
            "char_accuracy": round(ocr.char_accuracy(result.texts, described["lines"]), 4),
            "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, OCR_TASK, data, write,
                       f"read {result.texts} (rendered {described['lines']})")


# -- VAD ----------------------------------------------------------------------------
def vad_signal() -> np.ndarray:
    return vad.speech_like(VAD_DURATIONS, VAD_RATE, VAD_SEED)


def vad_model(zoo: Zoo, task: str) -> ZooEntry:
    entry = task_entries(zoo, {"vad": VAD_TASKS[task]})["vad"]
    if entry.manifest.streaming is None:
        raise ManifestError(f"{entry.manifest.path.name}: a VAD model needs a [streaming] table")
    return entry


def vad_answer(host: Host, entry: ZooEntry, signal: np.ndarray, deadline: Deadline
               ) -> dict[str, Any]:
    streaming = entry.manifest.streaming
    assert streaming is not None  # checked by vad_model
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
    signal = vad_signal()

    def prepare() -> tuple[ZooEntry, dict[str, str]]:
        return vad_model(zoo, task), models_digest(zoo, {"vad": VAD_TASKS[task]})

    def on(prepared: tuple[ZooEntry, dict[str, str]], where: Host, deadline: Deadline
           ) -> dict[str, Any]:
        return vad_answer(where, prepared[0], signal, deadline)

    def on_reference(prepared: tuple[ZooEntry, dict[str, str]]) -> tuple[Any, str]:
        return reference_task_answer(
            zoo, task, array_digest(signal), prepared[1],
            lambda ref: on(prepared, ref, Deadline(REFERENCE_SECONDS)))

    def judge(prepared: Any, answer: dict[str, Any], expected: tuple[Any, str]) -> Outcome:
        stored, origin = expected
        agrees, message, figures = vad.compare(answer["segments"], stored["segments"])
        truth = vad.true_segments(VAD_DURATIONS)
        mine, theirs = answer["probabilities"], stored["probabilities"]
        metrics = {**figures, "speech_segments": answer["segments"],
                   "reference_segments": stored["segments"], "true_segments": truth,
                   "speech_coverage": vad.overlap_with_truth(answer["segments"], truth),
                   "max_probability_diff": float(np.abs(np.subtract(mine, theirs)).max())
                   if len(mine) == len(theirs) and mine else None,
                   "chunks": len(mine), "reference_origin": origin,
                   "probabilities": [round(p, 4) for p in mine]}
        return Outcome("pass" if agrees else "fail", message, metrics)

    return run_task_check(host, timeout, prepare, on, on_reference, judge,
                          "speech probabilities")


def refresh_vad(zoo: Zoo, reference: Reference, write: bool, task: str = "vad_segments"
                ) -> list[str]:
    signal = vad_signal()
    answer = vad_answer(reference.host, vad_model(zoo, task), signal,
                        Deadline(REFERENCE_SECONDS))
    data = {"input_sha256": array_digest(signal), "durations": list(VAD_DURATIONS),
            "seed": VAD_SEED, "sample_rate": VAD_RATE,
            "models": models_digest(zoo, {"vad": VAD_TASKS[task]}), "result": answer,
            "true_segments": vad.true_segments(VAD_DURATIONS),
            "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, task, data, write,
                       f"segments {answer['segments']} "
                       f"(speech put at {vad.true_segments(VAD_DURATIONS)})")


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
