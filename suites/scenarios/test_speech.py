"""Speech recognition (语音识别): Mandarin and English speech synthesised with espeak-ng from
known text, transcribed on the target, CER/WER (jiwer) against the text and the reference.

The recogniser is GENERATED in this repository (no wheel was found to ship a Chinese and
English ASR model as an ONNX file; docs/scenarios.md): ``models/manifests/speech_ctc_zh_en.toml``.

    shipei run --suite scenarios -k asr --target onnxruntime-cpu
"""

from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.modelzoo.tasks.speech_check import MODELS, SCENARIOS, TASKS, TITLES, check_asr
from suites.scenarios.cases import ZOO, define, task_test

pytestmark = pytest.mark.case_timeout(300)


def _check(language: str, precision: str) -> Any:
    def check(target: Any) -> Outcome:
        return check_asr(ZOO, target.host, target.timeout(), language, precision)
    return check


for _language in TASKS:
    for _precision in ("fp32", "int8"):
        # the int8 cases are test_asr_int8_<language>: judged by their accuracy_drop against
        # the fp32 reference, they are not the fp32 cases' test_asr_zh* / test_asr_en*
        _title = TITLES[_language] + ("; int8 weights (derived here) vs the fp32 reference"
                                      if _precision == "int8" else "")
        define(globals(), task_test(
            f"test_asr_int8_{_language}" if _precision == "int8"
            else f"test_{TASKS[_language]}", _check(_language, _precision),
            {"task": "speech", "scenarios": list(SCENARIOS), "model": MODELS["asr"],
             "title": _title, "precision": _precision, "generated_model": True},
            _title))
