"""The detection scenario task: rendered scenes, YOLOX decoding, mAP through pycocotools, and
a deliberately degraded target that fails with the figure that shows it.

``shipei-spoiled`` (defined here, enabled with ``SHIPEI_PLUGINS=tests.
test_scenario_detection:provide_targets``) is onnxruntime on the CPU whose outputs are
spoiled on purpose: ``degrade=shift`` moves every detector anchor's centre by ``amount``
grid cells (boxes land beside the objects), ``degrade=drop`` blanks every second spoken
token's frames in a recogniser's posteriors (tokens go missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetIdentity
from harness.isolation.host import InlineHost
from harness.modelzoo.manifest import load_manifest
from harness.modelzoo.tasks import detection, detection_check, detection_int8, ocr, speech
from harness.modelzoo.zoo import Zoo, default_models_dir
from targets.testing import FaultyTarget

MODELS = default_models_dir()
PLUGINS = {"SHIPEI_PLUGINS": "suites.scenarios:SUITE,"
                             "tests.test_scenario_detection:provide_targets"}


# -- the degraded target ------------------------------------------------------------------
def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="shipei-spoiled",
                     factory="tests.test_scenario_detection:SpoilingTarget",
                     summary="test-only: onnxruntime CPU whose task outputs are spoiled")


def shift_anchors(output: np.ndarray, amount: float) -> np.ndarray:
    """A YOLOX output ``[..., 6]`` with every anchor's centre x moved by ``amount`` cells."""
    moved = np.array(output, copy=True)
    moved[..., 0] += amount
    return moved


def drop_tokens(posteriors: np.ndarray) -> np.ndarray:
    """Posteriors ``[1, frames, tokens]`` with every second spoken token turned to blank."""
    dropped = np.array(posteriors, copy=True)
    for a, b in speech.segments(dropped[0].argmax(axis=1))[1::2]:
        dropped[0, a:b] = 0.0
        dropped[0, a:b, 0] = 1.0
    return dropped


class SpoilingExecutable(Executable):
    def __init__(self, inner: Executable, degrade: str, amount: float) -> None:
        self.inner, self.degrade, self.amount = inner, degrade, amount

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        outputs = self.inner.run(inputs)
        spoiled = {}
        for name, value in outputs.items():
            array = np.asarray(value)
            if self.degrade == "shift" and array.ndim == 3 and array.shape[-1] == 6:
                value = shift_anchors(array, self.amount)
            elif self.degrade == "drop" and array.ndim == 3 \
                    and array.shape[-1] == len(speech.TOKENS):
                value = drop_tokens(array)
            spoiled[name] = value
        return spoiled

    def close(self) -> None:
        self.inner.close()


class SpoilingTarget(FaultyTarget):
    def __init__(self, configuration: str = "default", degrade: str = "shift",
                 amount: float = 1.5) -> None:
        super().__init__(configuration)
        if degrade not in ("shift", "drop"):
            raise ValueError(f"degrade must be shift or drop, not {degrade!r}")
        self.degrade, self.amount = degrade, float(amount)

    @property
    def identity(self) -> TargetIdentity:
        inner = self.inner.identity
        return TargetIdentity(
            name="shipei-spoiled", kind="framework", vendor="Shipei test fixtures",
            driver_version=inner.driver_version, runtime=inner.runtime,
            runtime_version=inner.runtime_version, device="cpu",
            configuration=f"degrade={self.degrade},amount={self.amount}",
            driver_distribution="shipei")

    def compile(self, model: bytes) -> Executable:
        return SpoilingExecutable(self.inner.compile(model), self.degrade, self.amount)


# -- fast checks ----------------------------------------------------------------------------
def test_the_manifest_pins_the_wheel_file_and_records_its_license() -> None:
    manifest = load_manifest(MODELS / "manifests" / "ddddocr_det.toml")
    assert manifest.source.package == "ddddocr" and manifest.source.path == "common_det.onnx"
    assert manifest.license.startswith("MIT")
    assert "--no-deps ddddocr==" in manifest.source.install


def test_decoding_a_yolox_output_gives_the_anchor_box() -> None:
    output = np.zeros((1, 3549, 6), dtype=np.float32)
    output[..., 4] = 0.01  # every anchor unlikely
    cell = 10 * 52 + 20  # stride 8: row 10, column 20
    output[0, cell] = [0.5, 0.5, np.log(6.0), np.log(5.0), 0.9, 0.9]
    ((box, score),) = detection.decode(output, ratio=1.0)
    assert box == pytest.approx([20.5 * 8 - 24, 10.5 * 8 - 20, 20.5 * 8 + 24, 10.5 * 8 + 20])
    assert score == pytest.approx(0.81)
    with pytest.raises(ValueError, match="3549"):
        detection.decode(output[:, :100], ratio=1.0)


def test_map_comes_from_pycocotools_and_falls_with_shifted_boxes() -> None:
    truth = [[[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 150.0, 160.0]]]
    exact = [[(box, 0.9) for box in truth[0]]]
    assert detection.mean_average_precision(exact, truth) == {"map50": 1.0, "map50_95": 1.0}
    shifted = [[([x0 + 20, y0, x1 + 20, y1], 0.9) for x0, y0, x1, y1 in truth[0]]]
    figures = detection.mean_average_precision(shifted, truth)
    assert figures["map50"] == 0.0 and figures["map50_95"] == 0.0  # IoU 0.43, 0.45
    assert detection.mean_average_precision([[]], truth) == {"map50": 0.0, "map50_95": 0.0}


def _font() -> tuple[Path, int]:
    font = ocr.find_cjk_font()
    if font is None:
        pytest.skip(f"no CJK font: {ocr.FONT_HINT}")
    return font


def test_scenes_are_deterministic_and_boxed_by_their_ink() -> None:
    font = _font()
    first, again = detection.render_scene(font, 7), detection.render_scene(font, 7)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert first.boxes == again.boxes and len(first.boxes) == detection.GLYPHS_PER_SCENE
    pixels = np.asarray(first.image).astype(int)
    for x0, y0, x1, y1 in first.boxes:
        inside = pixels[int(y0):int(y1), int(x0):int(x1)]
        assert (np.abs(inside - detection.BACKGROUND).sum(axis=2) > 200).any()  # ink there


def test_judging_shifted_detections_fails_naming_the_figure() -> None:
    golden = json.loads((MODELS / "golden" / "tasks" / "detection_yolo.json").read_text())
    reference, truth = golden["result"], golden["true_boxes"]
    status, message, metrics = detection_check.judge(reference, reference, truth)
    assert status == "pass" and metrics["map50_vs_reference"] == 1.0
    assert metrics["map50"] == golden["reference_map"]["map50"]
    shifted = {"detections": [[[[x0 + 25, y0, x1 + 25, y1], s] for (x0, y0, x1, y1), s in scene]
                              for scene in reference["detections"]]}
    status, message, metrics = detection_check.judge(shifted, reference, truth)
    assert status == "fail"
    assert f"against the reference's detections is {metrics['map50_vs_reference']:.3f}" \
        in message and metrics["map50_vs_reference"] < detection_check.MIN_MAP50_VS_REFERENCE


def _check(target: SpoilingTarget | FaultyTarget) -> Any:
    _font()
    outcome = detection_check.check_detection(Zoo(), InlineHost(target), 120)
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    return outcome


def test_the_real_detector_passes_and_a_degraded_one_fails_with_its_figure() -> None:
    good = _check(FaultyTarget())
    assert good.status == "pass", good.message
    assert good.metrics["map50_vs_reference"] == 1.0
    assert good.metrics["map50"] > 0.5  # the reference's answer: the golden, or live where
    # another font or Pillow renders other pixels (reference_origin says which)
    bad = _check(SpoilingTarget(degrade="shift", amount=1.5))
    assert bad.status == "fail"
    assert "mAP@0.5 against the reference's detections is" in bad.message
    assert bad.metrics["map50_vs_reference"] < 0.9
    assert bad.metrics["map50"] < good.metrics["map50"]


def test_an_int8_detector_losing_map_fails_naming_its_drop() -> None:
    golden = json.loads((MODELS / "golden" / "tasks" / "detection_yolo.json").read_text())
    reference, truth = golden["result"], golden["true_boxes"]
    status, _, metrics = detection_check.judge(reference, reference, truth, "int8")
    assert status == "pass" and metrics["accuracy_drop"] == 0.0
    halved = {"detections": [scene[::2] for scene in reference["detections"]]}
    status, message, metrics = detection_check.judge(halved, reference, truth, "int8")
    assert status == "fail" and metrics["accuracy_drop"] > detection_check.MAX_INT8_DROP
    assert f"int8 loses {metrics['accuracy_drop']:.4f} mAP@0.5" in message


def test_the_int8_derivative_is_deterministic_and_held_to_its_drop() -> None:
    entry = Zoo().entry("ddddocr_det")
    if not entry.status().available:
        pytest.skip(entry.status().reason)
    first = detection_int8.conv_weight_only_int8(entry.model_bytes())
    assert first == detection_int8.conv_weight_only_int8(entry.model_bytes())
    import onnx

    model = onnx.load_from_string(first)
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == sum(n.op_type == "Conv" for n in model.graph.node) == 83
    _font()
    outcome = detection_check.check_detection(Zoo(), InlineHost(FaultyTarget()), 120, "int8")
    assert outcome.status == "pass", outcome.message
    assert outcome.metrics["precision_class"] == "int8"
    assert outcome.metrics["accuracy_drop"] <= detection_check.MAX_INT8_DROP
    assert outcome.metrics["int8_model_sha256"] == detection_int8.digest(first)


@pytest.mark.slow
def test_the_suite_fails_a_degraded_target_beside_a_passing_one(shipei_cli) -> None:
    result = shipei_cli("run", "--suite", "scenarios", "-k", "detection", "--target",
                        "onnxruntime-cpu", "--target", "shipei-spoiled,degrade=shift",
                        env=PLUGINS)
    records = {(r["target"].split(",")[0], r["case"]): r for r in result.records()}
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    good = records["onnxruntime-cpu", "test_detection_yolo"]
    bad = records["shipei-spoiled", "test_detection_yolo"]
    assert good["status"] == "pass" and good["metrics"]["map50_vs_reference"] == 1.0
    assert bad["status"] == "fail" and "mAP@0.5" in bad["message"]
    assert good["tags"]["task"] == "detection" and good["tags"]["model"] == "ddddocr_det"
    int8 = records["onnxruntime-cpu", "test_detection_yolo_int8"]
    assert int8["status"] == "pass" and "accuracy_drop" in int8["metrics"]
    assert records["shipei-spoiled", "test_detection_yolo_int8"]["status"] == "fail"
