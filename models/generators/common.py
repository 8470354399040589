"""Helpers shared by the generators: seeded weights and byte-stable model assembly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: IR version and default opset of the generated models: old enough for every
#: runtime the zoo is run on, new enough for LayerNormalization (opset 17).
IR_VERSION = 8
OPSET = 17
PRODUCER = "shipei-models"


class Weights:
    """Seeded initializers; every call draws the next tensor of one stream."""

    def __init__(self, seed: int, dtype: type = np.float32) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.initializers: list[TensorProto] = []

    def add(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def normal(self, name: str, shape: Sequence[int], scale: float) -> str:
        return self.add(name, (self.rng.standard_normal(shape) * scale).astype(self.dtype))

    def const(self, name: str, value: Sequence[float] | float, dtype: type | None = None) -> str:
        return self.add(name, np.asarray(value, dtype=dtype or self.dtype))


def assemble(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[onnx.ValueInfoProto], weights: Weights, doc: str,
             opset: int = OPSET) -> onnx.ModelProto:
    """A checked model with pinned IR version, opset and producer (stable bytes)."""
    graph = helper.make_graph(nodes, name, inputs, outputs, weights.initializers)
    model = helper.make_model(graph, producer_name=PRODUCER, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model
