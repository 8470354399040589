"""A small image classifier with a dynamic batch dimension and random (seeded) weights.

x[batch, 3, 32, 32] -> Conv 3x3 (16) -> BatchNorm -> Relu -> MaxPool -> Conv 3x3 (32)
-> Relu -> GlobalAveragePool -> Flatten -> Gemm (100 classes) -> Softmax. Unlike the
onnx "light" models (constant weights, uniform outputs), its class scores differ,
so top-1/top-5 agreement is meaningful on it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.generators.common import Weights, assemble

CLASSES = 100
SEED = 20241


def build() -> onnx.ModelProto:
    w = Weights(SEED)
    w.normal("conv1_w", (16, 3, 3, 3), 0.3)
    w.normal("conv1_b", (16,), 0.05)
    w.add("bn_scale", (1.0 + 0.1 * w.rng.standard_normal(16)).astype(np.float32))
    w.normal("bn_bias", (16,), 0.1)
    w.normal("bn_mean", (16,), 0.1)
    w.add("bn_var", (0.5 + w.rng.random(16)).astype(np.float32))
    w.normal("conv2_w", (32, 16, 3, 3), 0.12)
    w.normal("conv2_b", (32,), 0.05)
    w.normal("fc_w", (CLASSES, 32), 0.6)
    w.normal("fc_b", (CLASSES,), 0.1)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b1"]),
        n("Relu", ["b1"], ["r1"]),
        n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["r2"]),
        n("GlobalAveragePool", ["r2"], ["g"]),
        n("Flatten", ["g"], ["f"]),
        n("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["prob"], axis=-1),
    ]
    return assemble(
        "small_cnn", nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", CLASSES])],
        w, "Shipei generated: small CNN classifier, dynamic batch, seeded weights")
