"""The speech recognition task on a target: espeak-ng speech -> recogniser -> CER/WER.

For each language the target transcribes the task's utterances; the transcripts are
scored with jiwer against the known text (``cer`` for Chinese, ``wer`` for English)
and against the reference target's transcripts taken as the truth
(``cer_vs_reference`` / ``wer_vs_reference``). The reference's transcripts come from
the task golden when it was computed from the same samples and model bytes,
otherwise from the reference target live (the record says which). A target fails
when it departs from the reference by more than :data:`MAX_VS_REFERENCE`, or when
its error against the text exceeds the reference's by more than :data:`MAX_RISE`.

The int8 configuration (``test_asr_int8_zh``, ``test_asr_int8_en``) runs the recogniser's
weight-only int8 derivative (every Conv weight int8 per output channel, as the detector's:
:func:`~harness.modelzoo.tasks.detection_int8.conv_weight_only_int8`) against the fp32
reference. Its transcripts may differ from the reference's; what is judged is the
accuracy it loses: ``accuracy_drop`` (its error against the text minus the reference's;
negative where int8 erred less) must not exceed :data:`MAX_INT8_DROP` (AIIA's 1 %).
"""

from __future__ import annotations

import hashlib
from typing import Any

from harness.cases.case import Outcome
from harness.isolation.host import Host
from harness.modelzoo.execute import Deadline
from harness.modelzoo.reference import Reference
from harness.modelzoo.task_checks import (
    REFERENCE_SECONDS,
    GoldenInputs,
    TaskUnavailable,
    check_against_golden,
    need_libraries,
    prepare_golden,
    store_task_golden,
    timed_task_run,
)
from harness.modelzoo.tasks import detection_int8, speech
from harness.modelzoo.zoo import Zoo, ZooEntry
from harness.perf.stats import latency_percentiles_ms

MODELS = {"asr": "speech_ctc_zh_en"}
TASKS = {"zh": "asr_zh", "en": "asr_en"}
MEASURE = {"zh": "cer", "en": "wer"}
MAX_VS_REFERENCE = 0.05
MAX_RISE = 0.05
MAX_INT8_DROP = 0.01
SCENARIOS = ("speech", "education")
TITLES = {"zh": "Speech recognition, Mandarin (CER): generated recogniser on espeak-ng speech",
          "en": "Speech recognition, English (WER): generated recogniser on espeak-ng speech"}


def task_utterances(language: str) -> tuple[list[speech.Utterance], dict[str, Any]]:
    """The synthesised utterances and what describes them (espeak-ng, text, sha256)."""
    need_libraries("jiwer", why="the CER/WER metric")
    try:
        spoken = speech.utterances(language)
        version = speech.espeak_version()
    except speech.SpeechUnavailable as exc:
        raise TaskUnavailable(f"no synthesised speech: {exc}") from None
    digest = hashlib.sha256()
    for utterance in spoken:
        digest.update(utterance.samples.tobytes())
    return spoken, {"espeak": version, "voice": dict(speech.TASK_VOICE),
                    "texts": [u.text for u in spoken], "input_sha256": digest.hexdigest(),
                    "seconds": [round(u.samples.size / speech.SAMPLE_RATE, 3)
                                for u in spoken]}


def model_bytes(entry: ZooEntry, precision: str) -> bytes:
    """The pinned fp32 recogniser, or its weight-only int8 derivative."""
    data = entry.model_bytes()
    return detection_int8.conv_weight_only_int8(data) if precision == "int8" else data


def answer(host: Host, prepared: GoldenInputs, deadline: Deadline, precision: str = "fp32"
           ) -> dict[str, Any]:
    """Every utterance's transcript on ``host``, with the runs' latencies (ms)."""
    spoken = prepared.given
    key = f"scenarios::asr::{spoken[0].language}::{precision}"
    transcripts, latencies = timed_task_run(
        host, key, model_bytes(prepared.entries["asr"], precision), deadline,
        lambda run: [speech.recognize(run, utterance) for utterance in spoken])
    return {"transcripts": transcripts, "latencies_ms": latencies}


def judge(language: str, mine: dict[str, Any], reference: dict[str, Any],
          texts: list[str], precision: str = "fp32") -> tuple[str, str, dict[str, Any]]:
    """Status, message and figures of a target's transcripts."""
    name = MEASURE[language]
    against_text = speech.error_rate(language, texts, mine["transcripts"])
    reference_error = speech.error_rate(language, texts, reference["transcripts"])
    against_reference = speech.error_rate(language, reference["transcripts"],
                                          mine["transcripts"])
    latencies = mine.get("latencies_ms") or []
    metrics: dict[str, Any] = {name: against_text, f"{name}_vs_reference": against_reference,
                               f"reference_{name}": reference_error}
    metrics.update(latency_percentiles_ms(latencies))
    if precision == "int8":
        drop = round(against_text - reference_error, 4)
        metrics.update({"accuracy_drop": drop, "precision_class": "int8"})
        if drop > MAX_INT8_DROP:
            return "fail", (f"int8 raises {name.upper()} against the text by {drop:.4f} "
                            f"({against_text:.4f}, fp32 {reference_error:.4f}), more than "
                            f"{MAX_INT8_DROP}"), metrics
        return "pass", "", metrics
    if against_reference > MAX_VS_REFERENCE:
        return "fail", (f"{name.upper()} against the reference's transcripts is "
                        f"{against_reference:.3f} > {MAX_VS_REFERENCE} ({name.upper()} against "
                        f"the text {against_text:.3f}, the reference's {reference_error:.3f})"
                        ), metrics
    if against_text > reference_error + MAX_RISE:
        return "fail", (f"{name.upper()} against the text is {against_text:.3f}, more than "
                        f"{MAX_RISE} above the reference's {reference_error:.3f}"), metrics
    return "pass", "", metrics


def check_asr(zoo: Zoo, host: Host, timeout: float, language: str, precision: str = "fp32"
              ) -> Outcome:
    def judged(prepared: GoldenInputs, mine: dict[str, Any], stored: Any) -> Outcome:
        described = prepared.described
        status, message, metrics = judge(language, mine, stored, described["texts"],
                                         precision)
        metrics.update({"transcripts": mine["transcripts"],
                        "reference_transcripts": stored["transcripts"],
                        "ground_truth": described["texts"], "espeak": described["espeak"],
                        "model_generated": True, "latencies_ms": mine["latencies_ms"]})
        return Outcome(status, message, metrics)

    return check_against_golden(
        zoo, host, timeout, TASKS[language], MODELS, lambda _: task_utterances(language),
        lambda where, prepared, deadline: answer(where, prepared, deadline, precision),
        answer, judged, "token posteriors")


def refresh(zoo: Zoo, reference: Reference, write: bool, language: str) -> list[str]:
    """Recompute one language's task golden on the reference (``write``: store it)."""
    prepared = prepare_golden(zoo, MODELS, lambda _: task_utterances(language))
    result = answer(reference.host, prepared, Deadline(REFERENCE_SECONDS))
    stored = {"transcripts": result["transcripts"]}
    error = speech.error_rate(language, prepared.described["texts"], stored["transcripts"])
    data = {**prepared.described, "models": prepared.models, "result": stored,
            f"reference_{MEASURE[language]}": error, "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, TASKS[language], data, write,
                             f"{stored['transcripts']} ({MEASURE[language]} {error})")
