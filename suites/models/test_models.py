"""Reference models on every requested target, judged against their goldens.

One test per manifest in ``models/manifests/`` (a model whose source package is
missing is skipped with the install hint; a manifest that does not parse is an
``infra_error``), plus two task-level checks: OCR end to end on rendered
Chinese and English text, and VAD speech segments on a synthetic signal.

    shipei run --suite models --target onnxruntime-cpu --target openvino-cpu
    shipei run --suite models -m "not slow"        # without VGG-19, ZFNet-512, AlexNet
"""

from collections.abc import Callable
from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.modelzoo.execute import execute_model, model_tags
from harness.modelzoo.task_checks import OCR_MODELS, VAD_TASKS, check_ocr, check_vad
from harness.modelzoo.zoo import BrokenManifest, Zoo, ZooEntry

SUITE = "models"
ZOO = Zoo()

pytestmark = pytest.mark.case_timeout(300)


def _named(test: Callable[..., None], case: str, doc: str, marks: list[Any]
           ) -> Callable[..., None]:
    test.__name__ = test.__qualname__ = case
    test.__doc__ = doc
    for mark in [pytest.mark.shipei_case(suite=SUITE, case=case), *marks]:
        test = mark(test)
    return test


def _model_test(entry: ZooEntry) -> Callable[..., None]:
    def test(target: Any) -> None:
        outcome = execute_model(entry, target.host, target.capabilities, target.timeout(),
                                ZOO.golden_dir)
        target.conclude(SUITE, entry.manifest.case_name, outcome, model_tags(entry))

    marks = [pytest.mark.slow] if entry.manifest.slow else []
    if entry.manifest.representative:
        marks.append(pytest.mark.representative)
    return _named(test, entry.manifest.case_name, entry.manifest.title, marks)


def _broken_test(broken: BrokenManifest) -> Callable[..., None]:
    def test(target: Any) -> None:
        target.conclude(SUITE, f"test_{broken.name}", Outcome("infra_error", broken.error),
                        {"manifest": broken.path.name})

    return _named(test, f"test_{broken.name}", f"unusable manifest {broken.path.name}", [])


for _entry in ZOO.entries:
    globals()[_entry.manifest.case_name] = _model_test(_entry)
for _broken in ZOO.broken:
    globals()[f"test_{_broken.name}"] = _broken_test(_broken)


@pytest.mark.representative
@pytest.mark.shipei_case(suite=SUITE, case="test_ocr_pipeline")
def test_ocr_pipeline(target: Any) -> None:
    """PP-OCRv4 detection, direction classification and recognition of rendered text."""
    outcome = check_ocr(ZOO, target.host, target.timeout())
    target.conclude(SUITE, "test_ocr_pipeline", outcome,
                    {"task": "ocr", "title": "OCR end to end: detection, direction, recognition",
                     "models": sorted(OCR_MODELS.values())})


def _vad_test(task: str, model: str) -> Callable[..., None]:
    def test(target: Any) -> None:
        outcome = check_vad(ZOO, target.host, target.timeout(), task)
        target.conclude(SUITE, f"test_{task}", outcome,
                        {"task": "vad", "title": f"VAD speech segments, {model}",
                         "models": [model]})

    marks = [pytest.mark.representative] if task == "vad_segments" else []
    return _named(test, f"test_{task}", f"Silero VAD ({model}) streamed over a synthetic "
                                        "signal; speech segments against the reference", marks)


for _task, _model in VAD_TASKS.items():
    globals()[f"test_{_task}"] = _vad_test(_task, _model)
