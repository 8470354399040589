"""The detection task on a target: rendered scenes -> detector -> mAP.

The target's detections are scored by COCO mAP against the scenes' true boxes
(``map50``, ``map50_95``) and against the reference target's detections taken as
ground truth (``map50_vs_reference``). The reference's answer comes from the task
golden when it was computed from the same pixels and model bytes, otherwise from
the reference target live (the record says which). A target fails when it agrees
with the reference below :data:`MIN_MAP50_VS_REFERENCE`, or when its mAP@0.5
against the truth lies more than :data:`MAX_MAP50_DROP` below the reference's.

The int8 configuration (``test_detection_yolo_int8``) runs the detector's weight-only
int8 derivative (:mod:`~harness.modelzoo.tasks.detection_int8`) on the target against
the fp32 reference and records ``accuracy_drop`` (the reference's mAP@0.5 minus the
target's; negative where int8 scored higher): it fails above :data:`MAX_INT8_DROP`
(AIIA's 1 %) or below :data:`MIN_INT8_VS_REFERENCE` agreement.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.cases.case import Outcome
from harness.isolation.host import Host
from harness.modelzoo.execute import Deadline
from harness.modelzoo.reference import Reference
from harness.modelzoo.task_checks import (
    REFERENCE_SECONDS,
    GoldenInputs,
    array_digest,
    check_against_golden,
    cjk_font,
    need_libraries,
    prepare_golden,
    store_task_golden,
    timed_task_run,
)
from harness.modelzoo.tasks import detection, detection_int8
from harness.modelzoo.zoo import Zoo, ZooEntry
from harness.perf.stats import latency_percentiles_ms

TASK = "detection_yolo"
MODELS = {"det": "ddddocr_det"}
MIN_MAP50_VS_REFERENCE = 0.9
MAX_MAP50_DROP = 0.05
MAX_INT8_DROP, MIN_INT8_VS_REFERENCE = 0.01, 0.8
PRECISIONS = ("fp32", "int8")
TITLE = "Object detection: YOLOX character detector (ddddocr) on rendered scenes, COCO mAP"
SCENARIOS = ("inspection", "vehicles", "medical")


def task_scenes() -> tuple[list[detection.Scene], dict[str, Any]]:
    """The rendered scenes and what describes them (font, seeds, pixel sha256)."""
    need_libraries("pycocotools", why="the mAP metric")
    font = cjk_font()
    rendered = detection.scenes(font)
    pixels = np.stack([np.asarray(scene.image) for scene in rendered])
    return rendered, {"font": f"{font[0].name}#{font[1]}", "seeds": list(detection.SCENE_SEEDS),
                      "characters": [scene.characters for scene in rendered],
                      "true_boxes": [scene.boxes for scene in rendered],
                      "input_sha256": array_digest(pixels)}


def model_bytes(entry: ZooEntry, precision: str) -> bytes:
    """The pinned fp32 detector, or its weight-only int8 derivative."""
    data = entry.model_bytes()
    return detection_int8.conv_weight_only_int8(data) if precision == "int8" else data


def answer(host: Host, prepared: GoldenInputs, deadline: Deadline, precision: str = "fp32"
           ) -> dict[str, Any]:
    """Every scene's detections on ``host``, with the runs' latencies (ms)."""
    key = f"scenarios::{TASK}::{precision}"
    found, latencies = timed_task_run(
        host, key, model_bytes(prepared.entries["det"], precision), deadline,
        lambda run: [detection.detect(run, scene.image) for scene in prepared.given])
    return {"detections": [[[box, score] for box, score in scene] for scene in found],
            "latencies_ms": latencies}


def _pairs(stored: list[list[Any]]) -> list[list[tuple[list[float], float]]]:
    return [[(list(box), float(score)) for box, score in scene] for scene in stored]


def judge(mine: dict[str, Any], reference: dict[str, Any], truth: list[list[list[float]]],
          precision: str = "fp32") -> tuple[str, str, dict[str, Any]]:
    """Status, message and figures of a target's answer."""
    found, theirs = _pairs(mine["detections"]), _pairs(reference["detections"])
    against_truth = detection.mean_average_precision(found, truth)
    reference_truth = detection.mean_average_precision(theirs, truth)
    agreement = detection.mean_average_precision(
        found, [[box for box, _ in scene] for scene in theirs])
    latencies = mine.get("latencies_ms") or []
    metrics: dict[str, Any] = {
        **against_truth, "map50_vs_reference": agreement["map50"],
        "map50_95_vs_reference": agreement["map50_95"],
        "reference_map50": reference_truth["map50"],
        "reference_map50_95": reference_truth["map50_95"],
        "detections": sum(len(scene) for scene in found),
        "reference_detections": sum(len(scene) for scene in theirs),
        "true_boxes": sum(len(scene) for scene in truth)}
    metrics.update(latency_percentiles_ms(latencies))
    if precision == "int8":
        return _judge_int8(metrics)
    if agreement["map50"] < MIN_MAP50_VS_REFERENCE:
        return "fail", (f"mAP@0.5 against the reference's detections is "
                        f"{agreement['map50']:.3f} < {MIN_MAP50_VS_REFERENCE} "
                        f"(mAP@0.5 against the truth {against_truth['map50']:.3f}, "
                        f"the reference's {reference_truth['map50']:.3f})"), metrics
    if against_truth["map50"] < reference_truth["map50"] - MAX_MAP50_DROP:
        return "fail", (f"mAP@0.5 against the truth is {against_truth['map50']:.3f}, "
                        f"more than {MAX_MAP50_DROP} below the reference's "
                        f"{reference_truth['map50']:.3f}"), metrics
    return "pass", "", metrics


def _judge_int8(metrics: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    drop = round(metrics["reference_map50"] - metrics["map50"], 4)
    metrics.update({"accuracy_drop": drop, "precision_class": "int8"})
    if drop > MAX_INT8_DROP:
        return "fail", (f"int8 loses {drop:.4f} mAP@0.5 against the truth "
                        f"({metrics['map50']:.4f}, fp32 {metrics['reference_map50']:.4f}), "
                        f"more than {MAX_INT8_DROP}"), metrics
    if metrics["map50_vs_reference"] < MIN_INT8_VS_REFERENCE:
        return "fail", (f"mAP@0.5 of int8 against the fp32 reference's detections is "
                        f"{metrics['map50_vs_reference']:.3f} < {MIN_INT8_VS_REFERENCE}"), metrics
    return "pass", "", metrics


def check_detection(zoo: Zoo, host: Host, timeout: float, precision: str = "fp32") -> Outcome:
    def judged(prepared: GoldenInputs, mine: dict[str, Any], stored: Any) -> Outcome:
        described = prepared.described
        status, message, metrics = judge(mine, stored, described["true_boxes"], precision)
        metrics.update({"font": described["font"], "characters": described["characters"],
                        "boxes": mine["detections"], "latencies_ms": mine["latencies_ms"]})
        if precision == "int8":
            metrics["int8_model_sha256"] = detection_int8.digest(
                model_bytes(prepared.entries["det"], precision))
        return Outcome(status, message, metrics)

    return check_against_golden(
        zoo, host, timeout, TASK, MODELS, lambda _: task_scenes(),
        lambda where, prepared, deadline: answer(where, prepared, deadline, precision),
        answer, judged, "detections")


def refresh(zoo: Zoo, reference: Reference, write: bool) -> list[str]:
    """Recompute the task golden on the reference (``write``: store it)."""
    prepared = prepare_golden(zoo, MODELS, lambda _: task_scenes())
    result = answer(reference.host, prepared, Deadline(REFERENCE_SECONDS))
    stored = {key: value for key, value in result.items() if key != "latencies_ms"}
    figures = detection.mean_average_precision(_pairs(stored["detections"]),
                                               prepared.described["true_boxes"])
    data = {**prepared.described, "models": prepared.models, "result": stored,
            "reference_map": figures, "reference": reference.summary()}
    return store_task_golden(zoo.golden_dir, TASK, data, write,
                             f"{sum(len(s) for s in stored['detections'])} detections, {figures}")
