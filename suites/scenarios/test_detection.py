"""Object detection (目标检测): a real YOLOX-style detector on rendered scenes, COCO mAP.

    shipei run --suite scenarios -k detection --target onnxruntime-cpu
"""

from typing import Any

import pytest

from harness.modelzoo.tasks.detection_check import MODELS, SCENARIOS, TITLE, check_detection
from harness.modelzoo.zoo import Zoo

SUITE = "scenarios"
ZOO = Zoo()

pytestmark = pytest.mark.case_timeout(300)


@pytest.mark.shipei_case(suite=SUITE, case="test_detection_yolo")
def test_detection_yolo(target: Any) -> None:
    """ddddocr's character detector on four rendered scenes: mAP against the true boxes
    and against the reference's detections."""
    outcome = check_detection(ZOO, target.host, target.timeout())
    target.conclude(SUITE, "test_detection_yolo", outcome,
                    {"task": "detection", "scenarios": list(SCENARIOS),
                     "model": MODELS["det"], "title": TITLE})


@pytest.mark.shipei_case(suite=SUITE, case="test_detection_yolo_int8")
def test_detection_yolo_int8(target: Any) -> None:
    """The detector's weight-only int8 derivative against the fp32 reference: the mAP it
    loses (accuracy_drop) is held to 1 %."""
    outcome = check_detection(ZOO, target.host, target.timeout(), "int8")
    target.conclude(SUITE, "test_detection_yolo_int8", outcome,
                    {"task": "detection", "scenarios": list(SCENARIOS),
                     "model": MODELS["det"], "precision": "int8",
                     "title": f"{TITLE}; int8 weights (derived here) vs the fp32 reference"})
