"""A pre-norm transformer encoder block with dynamic batch and sequence dimensions.

x[batch, seq, 64] -> LayerNorm -> 4-head self-attention (MatMul, Softmax) -> residual
-> LayerNorm -> Linear(64, 128) -> GELU (erf form, as exported BERTs have it)
-> Linear(128, 64) -> residual. ``build_fp16`` is the same block with float16
weights, inputs and outputs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.generators.common import Weights, assemble

D_MODEL, HEADS, D_FF = 64, 4, 128
SEED = 20240


def _block(weights: Weights, elem: int, name: str, doc: str) -> onnx.ModelProto:
    head = D_MODEL // HEADS
    w = weights
    w.const("ln1_gamma", np.ones(D_MODEL)), w.const("ln1_beta", np.zeros(D_MODEL))
    w.const("ln2_gamma", np.ones(D_MODEL)), w.const("ln2_beta", np.zeros(D_MODEL))
    for proj in ("q", "k", "v", "o"):
        w.normal(f"w_{proj}", (D_MODEL, D_MODEL), 1.0 / math.sqrt(D_MODEL))
        w.normal(f"b_{proj}", (D_MODEL,), 0.02)
    w.normal("w_ff1", (D_MODEL, D_FF), 1.0 / math.sqrt(D_MODEL))
    w.normal("b_ff1", (D_FF,), 0.02)
    w.normal("w_ff2", (D_FF, D_MODEL), 1.0 / math.sqrt(D_FF))
    w.normal("b_ff2", (D_MODEL,), 0.02)
    w.const("heads_shape", [0, 0, HEADS, head], dtype=np.int64)
    w.const("model_shape", [0, 0, D_MODEL], dtype=np.int64)
    w.const("scale", 1.0 / math.sqrt(head))
    w.const("half", 0.5), w.const("one", 1.0), w.const("inv_sqrt2", 1.0 / math.sqrt(2.0))

    n = helper.make_node
    nodes = [n("LayerNormalization", ["x", "ln1_gamma", "ln1_beta"], ["ln1"], axis=-1,
               epsilon=1e-5)]
    for proj in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["ln1", f"w_{proj}"], [f"{proj}_mm"]),
            n("Add", [f"{proj}_mm", f"b_{proj}"], [f"{proj}_lin"]),
            n("Reshape", [f"{proj}_lin", "heads_shape"], [f"{proj}_heads"]),
            n("Transpose", [f"{proj}_heads"], [f"{proj}_t"],
              perm=[0, 2, 3, 1] if proj == "k" else [0, 2, 1, 3]),
        ]
    nodes += [
        n("MatMul", ["q_t", "k_t"], ["scores_raw"]),
        n("Mul", ["scores_raw", "scale"], ["scores"]),
        n("Softmax", ["scores"], ["attn"], axis=-1),
        n("MatMul", ["attn", "v_t"], ["ctx_t"]),
        n("Transpose", ["ctx_t"], ["ctx_heads"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_heads", "model_shape"], ["ctx"]),
        n("MatMul", ["ctx", "w_o"], ["o_mm"]),
        n("Add", ["o_mm", "b_o"], ["attn_out"]),
        n("Add", ["x", "attn_out"], ["res1"]),
        n("LayerNormalization", ["res1", "ln2_gamma", "ln2_beta"], ["ln2"], axis=-1,
          epsilon=1e-5),
        n("MatMul", ["ln2", "w_ff1"], ["ff1_mm"]),
        n("Add", ["ff1_mm", "b_ff1"], ["ff1"]),
        n("Mul", ["ff1", "inv_sqrt2"], ["gelu_scaled"]),
        n("Erf", ["gelu_scaled"], ["gelu_erf"]),
        n("Add", ["gelu_erf", "one"], ["gelu_sum"]),
        n("Mul", ["ff1", "gelu_sum"], ["gelu_prod"]),
        n("Mul", ["gelu_prod", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w_ff2"], ["ff2_mm"]),
        n("Add", ["ff2_mm", "b_ff2"], ["ff2"]),
        n("Add", ["res1", "ff2"], ["y"]),
    ]
    dims = ["batch", "seq", D_MODEL]
    return assemble(name, nodes, [helper.make_tensor_value_info("x", elem, dims)],
                    [helper.make_tensor_value_info("y", elem, dims)], w, doc)


def build() -> onnx.ModelProto:
    return _block(Weights(SEED, np.float32), TensorProto.FLOAT, "transformer_encoder",
                  "Shipei generated: pre-norm transformer encoder block, fp32, "
                  "dynamic batch and sequence")


def build_fp16() -> onnx.ModelProto:
    return _block(Weights(SEED, np.float16), TensorProto.FLOAT16, "transformer_encoder_fp16",
                  "Shipei generated: pre-norm transformer encoder block, fp16 weights and IO, "
                  "dynamic batch and sequence")
