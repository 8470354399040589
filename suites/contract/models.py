"""The small models the driver contract runs, built in code with their references.

The probe model, ``y = Relu(x @ W + b)`` with a 1 MiB weight, is plain opset-13
ONNX every framework and most chips run; its weight makes a leaked executable
show in the worker's memory. The unsupported model uses an op of a domain no
runtime implements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
IN_FEATURES = 256
OUT_FEATURES = 1024  # 256 x 1024 float32 weights: 1 MiB
INPUT = "probe_input"
OUTPUT = "probe_output"
UNSUPPORTED_DOMAIN = "com.shipei.contract"
UNSUPPORTED_OP = "ShipeiNoSuchOp"


@dataclass(frozen=True)
class Probe:
    model: bytes
    weight: np.ndarray
    bias: np.ndarray

    def inputs(self, seed: int, batch: int = 1) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {INPUT: rng.uniform(-1, 1, (batch, IN_FEATURES)).astype(np.float32)}

    def reference(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        x = inputs[INPUT].astype(np.float64)
        return np.maximum(x @ self.weight.astype(np.float64) + self.bias, 0.0).astype(np.float32)


def _model(graph: onnx.GraphProto, extra_domains: tuple[str, ...] = ()) -> bytes:
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, 1) for d in extra_domains]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="shipei-contract")
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def probe_model(seed: int = 20240) -> Probe:
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((IN_FEATURES, OUT_FEATURES)) / 16).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, OUT_FEATURES).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT, "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], [OUTPUT])],
        "shipei_contract_probe",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, IN_FEATURES])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, OUT_FEATURES])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    return Probe(_model(graph), weight, bias)


def unsupported_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node(UNSUPPORTED_OP, [INPUT], [OUTPUT], domain=UNSUPPORTED_DOMAIN)],
        "shipei_contract_unsupported",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 4])],
    )
    return _model(graph, (UNSUPPORTED_DOMAIN,))
