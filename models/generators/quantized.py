"""int8 variants made with ``onnxruntime.quantization`` (static, QDQ, MinMax calibration).

Calibration data is deterministic (seeded), so a run reproduces the artifacts for a
given onnxruntime version; the artifacts are checked in under ``models/artifacts/``
and pinned by sha256 in their manifests, because another onnxruntime may quantize
differently. Regenerate (and print the new hashes) with::

    python -m models.generators.quantized [--check]

``--check`` writes nothing and exits 1 when a regenerated artifact differs from the
checked-in one.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

from harness.modelzoo.sources import package_root
from harness.modelzoo.tasks.ocr import strokes_image
from models.generators import cnn, transformer

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
#: the onnxruntime that made the checked-in artifacts (another may quantize differently)
MADE_WITH_ONNXRUNTIME = "1.32.0"
CALIBRATION_SAMPLES = 16


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over seeded samples."""

    def __init__(self, name: str, samples: Callable[[int], np.ndarray]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(
            {name: samples(i)} for i in range(CALIBRATION_SAMPLES))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _transformer_samples(i: int) -> np.ndarray:
    return np.random.default_rng(100 + i).standard_normal((1, 16, 64)).astype(np.float32)


def _cnn_samples(i: int) -> np.ndarray:
    return np.random.default_rng(200 + i).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _cls_samples(i: int) -> np.ndarray:
    return strokes_image(48, 192, 300 + i)[None].astype(np.float32)


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Paddle exports keep weights in Constant nodes; the quantizer quantizes only
    initializers, so move tensor-valued Constants there first."""
    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and \
                node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _cls_model() -> onnx.ModelProto:
    root = package_root("rapidocr_onnxruntime")
    if root is None:
        raise SystemExit("rapidocr-onnxruntime is not installed; "
                         "pip install --no-deps rapidocr-onnxruntime")
    model = onnx.load(str(root / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    return constants_to_initializers(model)


#: artifact file -> (float model, input name, calibration samples)
VARIANTS: dict[str, tuple[Callable[[], onnx.ModelProto], str, Callable[[int], np.ndarray]]] = {
    "transformer_encoder_int8.onnx": (transformer.build, "x", _transformer_samples),
    "small_cnn_int8.onnx": (cnn.build, "x", _cnn_samples),
    "ppocr_mobile_cls_int8.onnx": (_cls_model, "x", _cls_samples),
}


def quantize(build: Callable[[], onnx.ModelProto], input_name: str,
             samples: Callable[[int], np.ndarray]) -> bytes:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(build()), str(source))
        quantize_static(str(source), str(target), _Reader(input_name, samples),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=False,
                        calibrate_method=CalibrationMethod.MinMax)
        return target.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the checked-in artifacts; write nothing")
    args = parser.parse_args(argv)
    differs = 0
    for name, (build, input_name, samples) in VARIANTS.items():
        data = quantize(build, input_name, samples)
        digest = hashlib.sha256(data).hexdigest()
        path = ARTIFACTS / name
        old = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if args.check:
            state = "same" if digest == old else "DIFFERS"
            differs += digest != old
        else:
            ARTIFACTS.mkdir(exist_ok=True)
            path.write_bytes(data)
            state = "unchanged" if digest == old else "written"
        print(f"{name}: sha256 {digest} ({len(data)} bytes) {state}")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
