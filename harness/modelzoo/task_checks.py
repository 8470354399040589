"""Task-level checks on a target: the OCR answer and the VAD segments.

Each check runs the whole task on the target under test and compares the
answer with the reference's: the stored task golden when it was computed from
the same input and model bytes, otherwise (a different font or Pillow renders
other pixels) the reference target live, which the record then says. Figures
and the answers themselves (recognized strings, segments) go into the record,
where the models report shows them per target.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
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
from harness.perf.stats import percentile_of

T = TypeVar("T")

OCR_TASK = "ocr_pipeline"
OCR_MODELS = {"det": "ppocrv4_det", "cls": "ppocr_mobile_cls", "rec": "ppocrv4_rec"}
#: VAD task -> model: silero's default export (what load_silero_vad(onnx=True) loads)
#: and its opset-18 export, which more converters accept
VAD_TASKS = {"vad_segments": "silero_vad", "vad_segments_op18": "silero_vad_ifless"}
#: seconds of silence, speech, silence, speech, silence
VAD_DURATIONS = (0.8, 1.5, 1.0, 1.2, 0.7)
VAD_SEED = 1
VAD_RATE = 16000


class TaskUnavailable(Exception):
    """The check cannot run here (a package, font or library missing): a skip."""


def task_entries(zoo: Zoo, names: Mapping[str, str]) -> dict[str, ZooEntry]:
    entries = {role: zoo.entry(name) for role, name in names.items()}
    for entry in entries.values():
        state = entry.status()
        if not state.available:
            raise TaskUnavailable(f"{entry.name}: {state.reason}")
    return entries


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


def reference_task_answer(zoo: Zoo, task: str, input_sha256: str, models: Mapping[str, str],
                      compute: Any) -> tuple[Any, str]:
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
    started = time.perf_counter()
    deadline = Deadline(timeout)
    try:
        image, described = ocr_image()
        entries, characters = ocr_models(zoo)
        models = models_digest(zoo, OCR_MODELS)
    except TaskUnavailable as exc:
        return Outcome("skip", str(exc))
    except (SourceError, ManifestError, ValueError) as exc:
        return Outcome("infra_error", f"{type(exc).__name__}: {exc}")
    try:
        result = ocr_answer(host, entries, characters, image, deadline)
    except HOST_FAILURES as exc:
        return outcome_from_exception(exc, started)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        return Outcome("fail", f"the target's outputs cannot be read as OCR results: "
                               f"{type(exc).__name__}: {exc}")
    try:
        stored, origin = reference_task_answer(
            zoo, OCR_TASK, described["input_sha256"], models,
            lambda ref_host: ocr_answer(ref_host, entries, characters, image,
                                        Deadline(600)).to_dict())
    except (ReferenceUnavailable, *HOST_FAILURES) as exc:
        return Outcome("infra_error", f"the reference could not run: {exc}")
    reference = ocr.OcrResult.from_dict(stored)
    agrees, message, figures = ocr.compare(result, reference)
    metrics = {**figures, "texts": result.texts, "boxes": result.boxes, "angles": result.angles,
               "text_scores": result.text_scores, "reference_texts": reference.texts,
               "ground_truth": described["lines"], "reference_origin": origin,
               "char_accuracy": round(ocr.char_accuracy(result.texts, described["lines"]), 4),
               "font": described["font"]}
    return Outcome("pass" if agrees else "fail", message, metrics,
                   {"total_s": time.perf_counter() - started})


def refresh_ocr(zoo: Zoo, reference: Reference, write: bool) -> list[str]:
    image, described = ocr_image()
    entries, characters = ocr_models(zoo)
    result = ocr_answer(reference.host, entries, characters, image, Deadline(600))
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
    entry.model_bytes()
    return entry


def vad_answer(host: Host, entry: ZooEntry, signal: np.ndarray, deadline: Deadline
               ) -> dict[str, Any]:
    streaming = entry.manifest.streaming
    assert streaming is not None  # checked by vad_model
    feeds = dict(entry.data_sets()[0])
    feeds[streaming.chunk_input] = signal
    key = f"models::vad::{entry.name}"
    try:
        host.compile(key, entry.model_bytes(), deadline.left())
        outputs = host.call(WORKER_FUNCTION, key, worker_payload(feeds, streaming),
                            deadline.left())
    finally:
        host.release(key)
    probabilities = np.asarray(outputs[streaming.collect[0]], dtype=np.float64)
    probabilities = probabilities.reshape(len(probabilities), -1)[:, 0]
    found = vad.segments(probabilities.tolist(), streaming.chunk, VAD_RATE, signal.size)
    return {"segments": [list(s) for s in found],
            "probabilities": [round(float(p), 6) for p in probabilities]}


def check_vad(zoo: Zoo, host: Host, timeout: float, task: str = "vad_segments") -> Outcome:
    started = time.perf_counter()
    signal = vad_signal()
    try:
        entry = vad_model(zoo, task)
        models = models_digest(zoo, {"vad": VAD_TASKS[task]})
    except TaskUnavailable as exc:
        return Outcome("skip", str(exc))
    except (SourceError, ManifestError) as exc:
        return Outcome("infra_error", str(exc))
    try:
        answer = vad_answer(host, entry, signal, Deadline(timeout))
    except HOST_FAILURES as exc:
        return outcome_from_exception(exc, started)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        return Outcome("fail", f"the target's outputs cannot be read as speech "
                               f"probabilities: {type(exc).__name__}: {exc}")
    try:
        stored, origin = reference_task_answer(
            zoo, task, array_digest(signal), models,
            lambda ref_host: vad_answer(ref_host, entry, signal, Deadline(600)))
    except (ReferenceUnavailable, *HOST_FAILURES) as exc:
        return Outcome("infra_error", f"the reference could not run: {exc}")
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
    return Outcome("pass" if agrees else "fail", message, metrics,
                   {"total_s": time.perf_counter() - started})


def refresh_vad(zoo: Zoo, reference: Reference, write: bool, task: str = "vad_segments"
                ) -> list[str]:
    signal = vad_signal()
    answer = vad_answer(reference.host, vad_model(zoo, task), signal, Deadline(600))
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


def latency_metrics(milliseconds: Sequence[float]) -> dict[str, float]:
    """A task's single-stream latency figures over its runs, with the one percentile rule
    (:func:`harness.perf.stats.percentile_of`); none when nothing was timed."""
    if not len(milliseconds):
        return {}
    values = np.asarray(milliseconds, dtype=np.float64)
    return {"latency_p50_ms": round(float(percentile_of(values, 50)), 3),
            "latency_p99_ms": round(float(percentile_of(values, 99)), 3)}


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
