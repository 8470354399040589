"""The speech scenario task: espeak-ng speech (deterministic, skipped by name where it is
missing), segment decoding, CER/WER through jiwer, the generated recogniser's artifact,
and a degraded target (tokens dropped) that fails with the figure that shows it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.isolation.host import InlineHost
from harness.modelzoo.manifest import load_manifest
from harness.modelzoo.tasks import speech, speech_check, speech_model
from harness.modelzoo.zoo import Zoo, default_models_dir
from targets.testing import FaultyTarget
from tests.test_scenario_detection import PLUGINS, SpoilingTarget, drop_tokens

MODELS = default_models_dir()


def _need_espeak() -> None:
    try:
        speech.espeak_path()
    except speech.SpeechUnavailable as exc:
        pytest.skip(str(exc))


def test_espeak_speech_is_the_same_every_time() -> None:
    _need_espeak()
    digests = {hashlib.sha256(speech.spoken("人工智能", "zh", 165, 55).tobytes()).hexdigest()
               for _ in range(2)}
    english = {hashlib.sha256(speech.synthesize("speech test", "en").tobytes()).hexdigest()
               for _ in range(2)}
    assert len(digests) == 1 and len(english) == 1


def test_without_espeak_the_task_is_skipped_naming_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    for language in speech_check.TASKS:
        outcome = speech_check.check_asr(Zoo(), None, 60, language)  # type: ignore[arg-type]
        assert outcome.status == "skip"
        assert "espeak-ng is not installed" in outcome.message
        assert "apt-get install espeak-ng" in outcome.message


def _posteriors(path: list[int]) -> np.ndarray:
    scores = np.full((1, len(path), len(speech.TOKENS)), 0.01, dtype=np.float32)
    for frame, token in enumerate(path):
        scores[0, frame, token] = 0.9
    return scores


def test_decoding_votes_per_segment_closes_short_gaps_and_keeps_to_the_language() -> None:
    zh = [speech.TOKENS.index(c) for c in "语音"]
    en = speech.TOKENS.index("speech")
    path = [0] * 5 + [zh[0]] * 8 + [0] * 4 + [zh[0]] * 3 + [0] * 20 + [zh[1]] * 2 \
        + [0] * 20 + [zh[1]] * 6 + [en] * 3 + [0] * 5
    assert speech.decode(_posteriors(path), "zh") == ["语", "音"]  # gap closed, 2 dropped
    assert speech.decode(_posteriors([0, en, en, en, en, 0]), "zh") == []  # not a zh token
    with pytest.raises(ValueError, match="expected"):
        speech.decode(np.zeros((1, 10, 3)), "zh")


def test_error_rates_come_from_jiwer() -> None:
    assert speech.error_rate("zh", ["语音识别"], ["语音识"]) == 0.25
    assert speech.error_rate("en", ["speech recognition test"], ["speech test"]) == \
        pytest.approx(1 / 3, abs=1e-4)
    assert speech.error_rate("en", ["speech test"], [""]) == 1.0


def test_the_manifest_says_the_recogniser_is_generated() -> None:
    manifest = load_manifest(MODELS / "manifests" / "speech_ctc_zh_en.toml")
    assert "GENERATED" in manifest.title and manifest.license
    assert manifest.source.regenerate == "python -m harness.modelzoo.tasks.speech_model"


def test_judging_dropped_tokens_fails_naming_the_figure() -> None:
    golden = json.loads((MODELS / "golden" / "tasks" / "asr_en.json").read_text())
    reference = golden["result"]
    status, _, metrics = speech_check.judge("en", reference, reference, golden["texts"])
    assert status == "pass" and metrics["wer_vs_reference"] == 0.0
    assert metrics["wer"] == golden["reference_wer"]
    dropped = {"transcripts": [" ".join(t.split()[::2]) for t in reference["transcripts"]]}
    status, message, metrics = speech_check.judge("en", dropped, reference, golden["texts"])
    assert status == "fail" and metrics["wer_vs_reference"] > speech_check.MAX_VS_REFERENCE
    assert f"WER against the reference's transcripts is {metrics['wer_vs_reference']:.3f}" \
        in message


def test_an_int8_recogniser_that_errs_more_fails_naming_its_drop() -> None:
    golden = json.loads((MODELS / "golden" / "tasks" / "asr_zh.json").read_text())
    reference = golden["result"]
    worse = {"transcripts": [t[:-1] for t in reference["transcripts"]]}
    status, message, metrics = speech_check.judge("zh", worse, reference, golden["texts"],
                                                  "int8")
    assert status == "fail" and metrics["accuracy_drop"] > speech_check.MAX_INT8_DROP
    assert f"int8 raises CER against the text by {metrics['accuracy_drop']:.4f}" in message


def test_dropping_tokens_blanks_every_second_segment() -> None:
    a, b, c = (speech.TOKENS.index(w) for w in ("speech", "test", "chip"))
    path = [0] * 3 + [a] * 5 + [0] * 20 + [b] * 5 + [0] * 20 + [c] * 5 + [0] * 3
    assert speech.decode(drop_tokens(_posteriors(path)), "en") == ["speech", "chip"]


def _check(target: Any, language: str, precision: str = "fp32") -> Any:
    _need_espeak()
    outcome = speech_check.check_asr(Zoo(), InlineHost(target), 120, language, precision)
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    return outcome


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_recogniser_passes_and_a_degraded_one_fails_with_its_figure(language) -> None:
    name = speech_check.MEASURE[language]
    good = _check(FaultyTarget(), language)
    assert good.status == "pass", good.message
    assert good.metrics[f"{name}_vs_reference"] == 0.0 and good.metrics[name] < 0.5
    bad = _check(SpoilingTarget(degrade="drop"), language)
    assert bad.status == "fail"
    assert f"{name.upper()} against the reference's transcripts is" in bad.message
    assert bad.metrics[name] > good.metrics[name]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_int8_recogniser_is_held_to_its_drop(language) -> None:
    outcome = _check(FaultyTarget(), language, "int8")
    assert outcome.metrics["precision_class"] == "int8"
    drop = outcome.metrics["accuracy_drop"]
    assert (outcome.status == "pass") == (drop <= speech_check.MAX_INT8_DROP), outcome.message


def _zoo_with_stale_golden(tmp_path: Path) -> Zoo:
    """A zoo holding the recogniser whose English task golden is of other samples."""
    for folder in ("manifests", "artifacts", "golden/tasks"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS / "manifests" / "speech_ctc_zh_en.toml", tmp_path / "manifests")
    shutil.copy(MODELS / "artifacts" / "speech_ctc_zh_en.onnx", tmp_path / "artifacts")
    golden = json.loads((MODELS / "golden" / "tasks" / "asr_en.json").read_text())
    stale = {**golden, "input_sha256": "0" * 64,
             "result": {"transcripts": ["chip"] * len(golden["texts"])}}
    (tmp_path / "golden" / "tasks" / "asr_en.json").write_text(json.dumps(stale))
    return Zoo(tmp_path)


def test_a_stale_golden_sends_the_check_to_the_live_reference(tmp_path) -> None:
    _need_espeak()
    outcome = speech_check.check_asr(_zoo_with_stale_golden(tmp_path),
                                     InlineHost(FaultyTarget()), 120, "en")
    assert outcome.status == "pass", outcome.message
    assert outcome.metrics["reference_origin"].startswith("live reference")
    assert outcome.metrics["wer_vs_reference"] == 0.0  # not the stale golden's "chip"s


@pytest.mark.slow
def test_the_artifact_is_what_the_generator_fits_from_espeak() -> None:
    _need_espeak()
    assert speech_model.main(["--check"]) == 0


@pytest.mark.slow
def test_the_suite_fails_a_degraded_recogniser_beside_a_passing_one(shipei_cli) -> None:
    result = shipei_cli("run", "--suite", "scenarios", "-k", "asr", "--target",
                        "onnxruntime-cpu", "--target", "shipei-spoiled,degrade=drop",
                        env=PLUGINS)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    records = {(r["target"].split(",")[0], r["case"]): r for r in result.records()}
    for case, name in (("test_asr_zh", "cer"), ("test_asr_en", "wer")):
        good, bad = records["onnxruntime-cpu", case], records["shipei-spoiled", case]
        assert good["status"] == "pass" and good["metrics"][f"{name}_vs_reference"] == 0.0
        assert bad["status"] == "fail" and name.upper() in bad["message"]
        assert good["tags"]["generated_model"] is True
