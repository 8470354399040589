"""Weight-only int8 of the detector: the int8 configuration the detection task holds to a drop.

No wheel ships the detector both in fp32 and in int8, so the int8 configuration is derived
here, deterministically, from the pinned fp32 file: every Conv weight becomes int8 with a
symmetric scale per output channel, turned back into float in the graph by ``Cast`` and
``Mul`` (the model's opset 11 has no per-channel ``DequantizeLinear``). The arithmetic
stays fp32 (W8A32); what is judged is what the rounding of the weights costs in mAP.
"""

from __future__ import annotations

import hashlib

import numpy as np


def conv_weight_only_int8(model_bytes: bytes) -> bytes:
    """The model with every Conv weight stored as int8 and rescaled in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    weights = sorted({node.input[1] for node in graph.node
                      if node.op_type == "Conv" and node.input[1] in initializers})
    added = []
    for name in weights:
        values = numpy_helper.to_array(initializers[name]).astype(np.float32)
        peak = np.abs(values.reshape(values.shape[0], -1)).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shaped = scale.reshape(-1, *([1] * (values.ndim - 1)))
        quantized = np.clip(np.rint(values / shaped), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                                  numpy_helper.from_array(shaped, f"{name}_scale")])
        added += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"],
                                   to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name])]
    nodes = [*added, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
