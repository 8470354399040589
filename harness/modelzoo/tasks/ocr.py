"""OCR end to end: PP-OCRv4 detection -> direction classifier -> PP-OCRv4 recognition.

Only the ONNX files of ``rapidocr-onnxruntime`` are used; the pre- and
post-processing here follows its published pipeline (``config.yaml``: mean/std
0.5, detection threshold 0.3, box threshold 0.5, unclip ratio 1.6, recognition
height 48, classifier 48x192 with labels 0/180 and threshold 0.9) in numpy and
Pillow, without OpenCV. Boxes are axis-aligned, which is exact for the
horizontal lines rendered here. The character dictionary is the recognition
model's own ``character`` metadata entry, with the CTC blank first and a space
last, as rapidocr's ``CTCLabelDecode`` builds it.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

DET_THRESH, BOX_THRESH, UNCLIP_RATIO = 0.3, 0.5, 1.6
REC_HEIGHT, REC_WIDTH = 48, 480
CLS_HEIGHT, CLS_WIDTH, CLS_LABELS, CLS_THRESH = 48, 192, ("0", "180"), 0.9

#: the text the check renders: Chinese and English lines
LINES = ("适配测试中心", "Shipei compatibility 2026", "人工智能软硬件适配", "ONNX Runtime on CPU")
IMAGE_SIZE = (480, 256)  # width, height: multiples of 32, as the detector wants
FONT_SIZE = 28
FONT_ENV = "SHIPEI_CJK_FONT"
#: where Debian/Ubuntu packages put CJK fonts (fonts-noto-cjk, fonts-wqy-zenhei, ...)
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
FONT_HINT = "apt-get install fonts-noto-cjk (or fonts-wqy-zenhei), or set SHIPEI_CJK_FONT"

Runner = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, Any]]


# -- inputs -------------------------------------------------------------------------
def normalize(pixels: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1] (mean 0.5, std 0.5 after /255)."""
    scaled = pixels.astype(np.float32) / 255.0
    return ((scaled - 0.5) / 0.5).transpose(2, 0, 1)


def strokes_image(height: int, width: int, seed: int) -> np.ndarray:
    """A font-independent text-like image: rows of dark glyph-sized blocks on white,
    normalized as the OCR models expect. Pure numpy, so identical everywhere."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 250, dtype=np.uint8)
    glyph = max(6, height // 6)
    y = int(rng.integers(2, max(3, glyph // 2)))
    while y + glyph < height:
        x = int(rng.integers(2, glyph))
        stop = int(rng.integers(width // 2, width))
        while x + glyph < stop:
            for _ in range(int(rng.integers(2, 5))):  # a few strokes per glyph
                x0, y0 = x + int(rng.integers(0, glyph // 2)), y + int(rng.integers(0, glyph // 2))
                w, h = int(rng.integers(1, glyph // 2 + 1)), int(rng.integers(1, glyph))
                pixels[y0:y0 + h, x0:x0 + w] = int(rng.integers(0, 60))
            x += glyph + int(rng.integers(1, glyph // 3 + 2))
        y += glyph + int(rng.integers(glyph // 2, glyph * 2))
    return normalize(pixels)


def find_cjk_font() -> tuple[Path, int] | None:
    """A font file with Chinese glyphs and the face index to use, or None."""
    candidates: list[str] = []
    if os.environ.get(FONT_ENV):
        candidates.append(os.environ[FONT_ENV])
    candidates += CJK_FONT_CANDIDATES
    if shutil.which("fc-list"):
        try:
            listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True,
                                    text=True, timeout=20, check=False).stdout
            candidates += sorted(line.split(":")[0].strip() for line in listed.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file():
            return path, _simplified_chinese_face(path)
    return None


def _simplified_chinese_face(path: Path) -> int:
    from PIL import ImageFont

    for index in range(12 if path.suffix.lower() == ".ttc" else 1):
        try:
            family = ImageFont.truetype(str(path), FONT_SIZE, index=index).getname()[0]
        except OSError:
            break
        if family and family.endswith(" SC"):
            return index
    return 0


def render_text(font: tuple[Path, int], lines: Sequence[str] = LINES) -> Any:
    """The test image (a Pillow RGB image): one line of text per row, black on white."""
    from PIL import Image, ImageDraw, ImageFont

    path, index = font
    face = ImageFont.truetype(str(path), FONT_SIZE, index=index)
    image = Image.new("RGB", IMAGE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    pitch = IMAGE_SIZE[1] // len(lines)
    for row, line in enumerate(lines):
        draw.text((20, row * pitch + (pitch - FONT_SIZE) // 2 - 4), line, fill="black",
                  font=face)
    return image


# -- dictionary and decoding --------------------------------------------------------
def character_list(rec_model: bytes) -> list[str]:
    """The recognition model's dictionary with the CTC blank first and space last."""
    model = onnx.load_from_string(rec_model)
    for prop in model.metadata_props:
        if prop.key == "character":
            return ["blank", *prop.value.split("\n"), " "]
    raise ValueError("the recognition model has no 'character' metadata entry")


def ctc_decode(probabilities: np.ndarray, characters: Sequence[str]
               ) -> list[tuple[str, float]]:
    """Greedy CTC: argmax per step, merge repeats, drop blanks; (text, mean score)."""
    if probabilities.shape[-1] != len(characters):
        raise ValueError(f"the model scores {probabilities.shape[-1]} classes, the "
                         f"dictionary has {len(characters)}")
    best, score = probabilities.argmax(axis=2), probabilities.max(axis=2)
    decoded = []
    for indices, scores in zip(best, score, strict=True):
        keep = np.ones(len(indices), dtype=bool)
        keep[1:] = indices[1:] != indices[:-1]
        keep &= indices != 0
        text = "".join(characters[i] for i in indices[keep])
        decoded.append((text, float(scores[keep].mean()) if keep.any() else 0.0))
    return decoded


# -- detection post-processing ------------------------------------------------------
def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an array of (y, x)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    found = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        labels[start] = len(found) + 1
        stack, members = [start], []
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = labels[start]
                    stack.append((ny, nx))
        found.append(np.array(members))
    return found


def boxes_from_probability(probability: np.ndarray) -> list[tuple[list[int], float]]:
    """Text boxes ``[x0, y0, x1, y1]`` (exclusive end) with scores, in reading order."""
    height, width = probability.shape
    boxes = []
    for members in _components(probability > DET_THRESH):
        ys, xs = members[:, 0], members[:, 1]
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        score = float(probability[y0:y1, x0:x1].mean())
        if score < BOX_THRESH:
            continue
        w, h = x1 - x0, y1 - y0
        offset = w * h * UNCLIP_RATIO / (2 * (w + h))  # DB's unclip of the shrunk region
        box = [max(0, math.floor(x0 - offset)), max(0, math.floor(y0 - offset)),
               min(width, math.ceil(x1 + offset)), min(height, math.ceil(y1 + offset))]
        if box[2] - box[0] > 3 and box[3] - box[1] > 3:
            boxes.append((box, score))
    return sorted(boxes, key=lambda item: (item[0][1] // 8, item[0][0]))


def _line_input(image: Any, box: Sequence[int], height: int, width: int,
                rotate: bool = False) -> np.ndarray:
    from PIL import Image

    crop = image.crop(tuple(box))
    if rotate:
        crop = crop.rotate(180)
    resized_w = min(width, math.ceil(height * crop.width / crop.height))
    resized = np.asarray(crop.resize((resized_w, height), Image.BILINEAR))
    padded = np.zeros((3, height, width), dtype=np.float32)
    padded[:, :, :resized_w] = normalize(resized)
    return padded


# -- the pipeline -------------------------------------------------------------------
@dataclass
class OcrResult:
    boxes: list[list[int]]
    texts: list[str]
    text_scores: list[float]
    angles: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OcrResult:
        return cls([list(b) for b in data["boxes"]], list(data["texts"]),
                   list(data["text_scores"]), list(data["angles"]))


def run_pipeline(run: Runner, keys: Mapping[str, str], image: Any,
                 characters: Sequence[str]) -> OcrResult:
    """Detect, classify and recognize on the target behind ``run(key, feeds)``.

    ``keys`` maps ``det``, ``cls`` and ``rec`` to the keys their models were
    compiled under; the input name of all three PP-OCR models is ``x``.
    """
    pixels = np.asarray(image.convert("RGB"))
    det = _only(run(keys["det"], {"x": normalize(pixels)[None]}))
    found = boxes_from_probability(np.asarray(det)[0, 0])
    if not found:
        return OcrResult([], [], [], [])
    boxes = [box for box, _ in found]
    cls_batch = np.stack([_line_input(image, b, CLS_HEIGHT, CLS_WIDTH) for b in boxes])
    cls_scores = np.asarray(_only(run(keys["cls"], {"x": cls_batch})))
    angles = [CLS_LABELS[int(row.argmax())] for row in cls_scores]
    rotate = [a == "180" and float(row.max()) > CLS_THRESH
              for a, row in zip(angles, cls_scores, strict=True)]
    rec_batch = np.stack([_line_input(image, b, REC_HEIGHT, REC_WIDTH, r)
                          for b, r in zip(boxes, rotate, strict=True)])
    decoded = ctc_decode(np.asarray(_only(run(keys["rec"], {"x": rec_batch}))), characters)
    return OcrResult(boxes, [t for t, _ in decoded], [round(s, 6) for _, s in decoded], angles)


def _only(outputs: Mapping[str, Any]) -> Any:
    if len(outputs) != 1:
        raise ValueError(f"expected one output, got {sorted(outputs)}")
    return next(iter(outputs.values()))


# -- judging ------------------------------------------------------------------------
def iou(a: Sequence[int], b: Sequence[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_accuracy(texts: Sequence[str], truth: Sequence[str]) -> float:
    """1 - (edit distance / characters) of the recognized lines against the rendered ones."""
    got, want = "\n".join(texts), "\n".join(truth)
    return max(0.0, 1.0 - edit_distance(got, want) / max(1, len(want)))


MIN_BOX_IOU = 0.8


def compare(result: OcrResult, reference: OcrResult) -> tuple[bool, str, dict[str, Any]]:
    """Whether a target's answer agrees with the reference's, why not, and figures.

    Each reference box is paired with the target's box that overlaps it most;
    the pair must overlap by IoU >= MIN_BOX_IOU and read the same text.
    """
    metrics: dict[str, Any] = {"boxes": len(result.boxes),
                               "reference_boxes": len(reference.boxes)}
    if len(result.boxes) != len(reference.boxes):
        return False, (f"{len(result.boxes)} text boxes detected, the reference has "
                       f"{len(reference.boxes)}"), metrics
    pairs = []
    for i, ref_box in enumerate(reference.boxes):
        overlaps = [iou(box, ref_box) for box in result.boxes]
        j = int(np.argmax(overlaps))
        pairs.append((i, j, overlaps[j]))
    metrics["min_box_iou"] = round(min(p[2] for p in pairs), 4) if pairs else 1.0
    differing = [(i, j) for i, j, _ in pairs if result.texts[j] != reference.texts[i]]
    metrics["lines_differing"] = len(differing)
    metrics["angles_differing"] = sum(result.angles[j] != reference.angles[i]
                                      for i, j, _ in pairs)
    for i, j, overlap in pairs:
        if overlap < MIN_BOX_IOU:
            return False, (f"reference box {i} {reference.boxes[i]} is matched only by "
                           f"{result.boxes[j]} (IoU {overlap:.2f} < {MIN_BOX_IOU})"), metrics
    if differing:
        i, j = differing[0]
        return False, (f"line {i} reads {result.texts[j]!r}, the reference reads "
                       f"{reference.texts[i]!r}"), metrics
    if metrics["angles_differing"]:
        return False, "the direction classifier disagrees with the reference", metrics
    return True, "", metrics
