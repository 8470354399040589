"""Speech recognition (语音识别): Mandarin and English speech synthesised with espeak-ng from
known text, transcribed on the target, CER/WER (jiwer) against the text and the reference.

The recogniser is GENERATED in this repository (no wheel was found to ship a Chinese and
English ASR model as an ONNX file; docs/scenarios.md): ``models/manifests/speech_ctc_zh_en.toml``.

    shipei run --suite scenarios -k asr --target onnxruntime-cpu
"""

from collections.abc import Callable
from typing import Any

import pytest

from harness.modelzoo.tasks.speech_check import MODELS, SCENARIOS, TASKS, TITLES, check_asr
from harness.modelzoo.zoo import Zoo

SUITE = "scenarios"
ZOO = Zoo()

pytestmark = pytest.mark.case_timeout(300)


def _asr_test(language: str, precision: str) -> Callable[..., None]:
    # the int8 cases are test_asr_int8_<language>: judged by their accuracy_drop against
    # the fp32 reference, they are not the fp32 cases' test_asr_zh* / test_asr_en*
    case = f"test_asr_int8_{language}" if precision == "int8" else f"test_{TASKS[language]}"
    title = TITLES[language] + ("; int8 weights (derived here) vs the fp32 reference"
                               if precision == "int8" else "")

    @pytest.mark.shipei_case(suite=SUITE, case=case)
    def test(target: Any) -> None:
        outcome = check_asr(ZOO, target.host, target.timeout(), language, precision)
        target.conclude(SUITE, case, outcome,
                        {"task": "speech", "scenarios": list(SCENARIOS),
                         "model": MODELS["asr"], "title": title, "precision": precision,
                         "generated_model": True})

    test.__name__ = test.__qualname__ = case
    test.__doc__ = title
    return test


for _language in TASKS:
    for _precision in ("fp32", "int8"):
        _test = _asr_test(_language, _precision)
        globals()[_test.__name__] = _test
