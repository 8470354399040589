"""Object detection (目标检测): a real YOLOX-style detector on rendered scenes, COCO mAP.

    shipei run --suite scenarios -k detection --target onnxruntime-cpu
"""

from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.modelzoo.tasks.detection_check import MODELS, SCENARIOS, TITLE, check_detection
from suites.scenarios.cases import ZOO, define, task_test

pytestmark = pytest.mark.case_timeout(300)


def _check(precision: str) -> Any:
    def check(target: Any) -> Outcome:
        return check_detection(ZOO, target.host, target.timeout(), precision)
    return check


define(globals(), task_test(
    "test_detection_yolo", _check("fp32"),
    {"task": "detection", "scenarios": list(SCENARIOS), "model": MODELS["det"],
     "title": TITLE},
    "ddddocr's character detector on four rendered scenes: mAP against the true boxes and "
    "against the reference's detections."), task_test(
    "test_detection_yolo_int8", _check("int8"),
    {"task": "detection", "scenarios": list(SCENARIOS), "model": MODELS["det"],
     "precision": "int8",
     "title": f"{TITLE}; int8 weights (derived here) vs the fp32 reference"},
    "The detector's weight-only int8 derivative against the fp32 reference: the mAP it "
    "loses (accuracy_drop) is held to 1 %."))
