"""Object detection: rendered scenes with known boxes, YOLOX decoding, COCO mAP.

The detector is ddddocr's ``common_det.onnx`` (a YOLOX-style single-class
detector of the characters in click captchas: 416x416 BGR input, 0-255, no
normalization; output ``[1, 3549, 6]`` = centre x, centre y, log-width,
log-height offsets, objectness, class score over strides 8/16/32). Pre- and
post-processing follow ddddocr's ``DetectionEngine.get_bbox`` (letterbox pad
114, score = objectness x class, threshold 0.1, NMS IoU 0.45) in numpy and
Pillow, without OpenCV.

The scenes are Chinese characters drawn with Pillow at seeded positions, sizes
and colours on a textured background; each character's ground-truth box is its
ink extent, measured from the rendered glyph. mAP@0.5 and mAP@0.5:0.95 are
computed by pycocotools' ``COCOeval`` (not by hand).
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
SCORE_THRESH, NMS_THRESH = 0.1, 0.45
PAD_VALUE = 114
#: characters the scenes draw (the plan's words: adaptation, testing, AI, scenario)
CHARACTERS = "适配测试中心人工智能软硬件认证场景语音识别"
SCENE_SEEDS = (7, 11, 23, 31)
GLYPHS_PER_SCENE = 8
GLYPH_SIZES = (40, 48, 56, 64)
BACKGROUND = (235, 228, 210)

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]


@dataclass
class Scene:
    """One rendered image and its ground truth: ``[x0, y0, x1, y1]`` per glyph."""

    image: Any  # a Pillow RGB image
    boxes: list[list[float]]
    characters: str


# -- inputs and ground truth ----------------------------------------------------------
def _ink_box(glyph: str, face: Any, origin: tuple[int, int]) -> list[float] | None:
    """The extent of the pixels a glyph inks when drawn at ``origin``."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (INPUT_SIZE, INPUT_SIZE), 0)
    ImageDraw.Draw(mask).text(origin, glyph, fill=255, font=face)
    box = mask.getbbox()
    return [float(v) for v in box] if box else None


def render_scene(font: tuple[Path, int], seed: int) -> Scene:
    """A 416x416 scene of seeded, non-overlapping characters on a textured background."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    image = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for _ in range(60):  # faint strokes, as captcha backgrounds have
        x, y = rng.randrange(INPUT_SIZE), rng.randrange(INPUT_SIZE)
        draw.line((x, y, x + rng.randrange(-40, 40), y + rng.randrange(-40, 40)),
                  fill=(200, 195, 180), width=1)
    glyphs = rng.sample(CHARACTERS, GLYPHS_PER_SCENE)
    boxes: list[list[float]] = []
    drawn = ""
    for glyph in glyphs:
        face = ImageFont.truetype(str(font[0]), rng.choice(GLYPH_SIZES), index=font[1])
        for _ in range(200):
            origin = (rng.randrange(8, INPUT_SIZE - 80), rng.randrange(0, INPUT_SIZE - 90))
            box = _ink_box(glyph, face, origin)
            if box and all(box[2] + 8 < b[0] or box[0] > b[2] + 8 or box[3] + 8 < b[1]
                           or box[1] > b[3] + 8 for b in boxes):
                break
        else:
            continue  # no room left for this glyph
        draw.text(origin, glyph, font=face, fill=tuple(rng.randrange(0, 120) for _ in range(3)))
        boxes.append(box)
        drawn += glyph
    return Scene(image, boxes, drawn)


def scenes(font: tuple[Path, int], seeds: Sequence[int] = SCENE_SEEDS) -> list[Scene]:
    return [render_scene(font, seed) for seed in seeds]


def preprocess(image: Any) -> tuple[np.ndarray, float]:
    """Letterboxed BGR float input ``[1, 3, 416, 416]`` and the resize ratio."""
    from PIL import Image

    rgb = image.convert("RGB")
    ratio = min(INPUT_SIZE / rgb.height, INPUT_SIZE / rgb.width)
    size = (int(rgb.width * ratio), int(rgb.height * ratio))
    resized = np.asarray(rgb.resize(size, Image.BILINEAR) if size != rgb.size else rgb)
    padded = np.full((INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, dtype=np.uint8)
    padded[:size[1], :size[0]] = resized[:, :, ::-1]  # RGB -> BGR, as cv2 reads
    return padded.transpose(2, 0, 1).astype(np.float32)[None], ratio


# -- post-processing ------------------------------------------------------------------
def _grid() -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for stride in STRIDES:
        cells = INPUT_SIZE // stride
        xs, ys = np.meshgrid(np.arange(cells), np.arange(cells))
        grids.append(np.stack((xs, ys), 2).reshape(-1, 2))
        strides.append(np.full((cells * cells, 1), stride))
    return np.concatenate(grids), np.concatenate(strides)


def _nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """ddddocr's single-class NMS (its +1 pixel area convention)."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = int(order[0])
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[order[1:]]) - np.maximum(x0[i], x0[order[1:]])
                       + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[order[1:]]) - np.maximum(y0[i], y0[order[1:]])
                       + 1)
        overlap = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[1:][overlap <= NMS_THRESH]
    return keep


def decode(output: np.ndarray, ratio: float) -> list[tuple[list[float], float]]:
    """Boxes ``[x0, y0, x1, y1]`` in image pixels with scores, best first."""
    predictions = np.asarray(output, dtype=np.float64).reshape(-1, 6).copy()
    grid, stride = _grid()
    if len(predictions) != len(grid):
        raise ValueError(f"the detector gave {len(predictions)} anchors, a 416x416 input "
                         f"has {len(grid)}")
    centre = (predictions[:, :2] + grid) * stride
    size = np.exp(np.clip(predictions[:, 2:4], -30, 30)) * stride
    scores = predictions[:, 4] * predictions[:, 5]
    mask = scores > SCORE_THRESH
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)[mask] / ratio
    scores = scores[mask]
    keep = _nms(boxes, scores)
    return [([round(float(v), 2) for v in boxes[i]], round(float(scores[i]), 5)) for i in keep]


def detect(run: Runner, image: Any) -> list[tuple[list[float], float]]:
    """Detections on one image through ``run(feeds) -> outputs`` (the target)."""
    feeds, ratio = preprocess(image)
    outputs = run({"images": feeds})
    if len(outputs) != 1:
        raise ValueError(f"expected one output, got {sorted(outputs)}")
    return decode(np.asarray(next(iter(outputs.values()))), ratio)


# -- metrics (pycocotools) ------------------------------------------------------------
def _xywh(box: Sequence[float]) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def mean_average_precision(detections: Sequence[Sequence[tuple[Sequence[float], float]]],
                           truths: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """COCO mAP@0.5 and mAP@0.5:0.95 of per-image detections against per-image truths.

    ``truths`` may be another detector's boxes (the reference's), which then count as
    ground truth: that is the agreement figure.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "width": INPUT_SIZE, "height": INPUT_SIZE}
              for i in range(len(truths))]
    annotations, results = [], []
    for image_id, boxes in enumerate(truths, 1):
        for box in boxes:
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": 1, "bbox": xywh, "area": xywh[2] * xywh[3],
                                "iscrowd": 0})
    for image_id, found in enumerate(detections, 1):
        results += [{"image_id": image_id, "category_id": 1, "bbox": _xywh(box),
                     "score": float(score)} for box, score in found]
    if not annotations:
        raise ValueError("no ground-truth boxes to score against")
    if not results:
        return {"map50": 0.0, "map50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": 1, "name": "character"}]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map50": round(max(0.0, float(evaluation.stats[1])), 4),
            "map50_95": round(max(0.0, float(evaluation.stats[0])), 4)}
