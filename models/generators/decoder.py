"""A small GPT-style byte-level decoder with a KV cache (GENERATED, not a trained model).

No wheel on the package registry ships a decoder-only language model as ONNX (see
``docs/scenarios.md``), so this one is built here, deterministically, with the interface
an exported LLM has (optimum's GPT-2 ``decoder_model_merged``)::

    input_ids[batch, seq] (int64, UTF-8 bytes), attention_mask[batch, past_seq + seq],
    position_ids[batch, seq], past_key_values.{i}.key / .value[batch, 4, past_seq, 32]
        -> logits[batch, seq, 256], present.{i}.key / .value[batch, 4, past_seq + seq, 32]

Two pre-norm blocks (LayerNormalization, 4-head causal self-attention over the cached and
the new positions, erf GELU MLP); a key is hidden from a query when its position (counted
along ``attention_mask``) is later than the query's ``position_ids`` or it is padding, so
a prefill (``past_seq = 0``) and each one-token decode step use the same graph.

Its weights make its text meaningful enough to judge: the token embedding and the output
head are a rank-128 factorisation (SVD) of log bigram probabilities counted over
:data:`CORPUS` (Chinese and English, UTF-8 bytes), so a prompt from the corpus continues
plausibly and perplexity on corpus text is low; the attention blocks (seeded random
weights) add position- and history-dependent terms that a broken KV cache changes.
``build_fp16`` is the same model with float16 weights and float16 cache and logits.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.generators.common import Weights, assemble

VOCAB, D_MODEL, HEADS, LAYERS, D_FF = 256, 128, 4, 2, 256
HEAD_DIM = D_MODEL // HEADS
MAX_POSITIONS = 512
SEED = 20261206
#: how strongly the attention blocks speak next to the bigram signal
BLOCK_SCALE = 0.1

#: the bigram statistics' text; the task prompts and evaluation passages are drawn from it
CORPUS = (
    "The adaptation center certifies that a chip can carry a model. A certificate says which "
    "scenario the target fits and what blocked it. The harness runs the model on the target "
    "and compares the answer with the reference. A language model reads a prompt and writes "
    "the next token, then the next, with the keys and values of the earlier tokens kept in a "
    "cache. The time to the first token measures the prefill; the time per output token "
    "measures the decode with the cache. A smart factory inspects parts with a camera, and a "
    "connected vehicle reads the road with its sensors. The speech interface listens, the "
    "text encoder finds the nearest sentence, and the large model answers the question. "
    "适配中心认证芯片能否承载模型。证书写明目标适合哪个场景，以及是什么阻碍了它。"
    "测试工具在目标上运行模型，并把答案与参考结果比较。语言模型读入提示，写出下一个词元，"
    "再写出下一个，之前词元的键和值保存在缓存中。首词元时延衡量预填充，每个输出词元的时延"
    "衡量带缓存的解码。智能工厂用相机检测零件，网联汽车用传感器读取道路。语音接口负责聆听，"
    "文本编码器找到最相近的句子，大模型回答问题。"
)


def _bigram_factors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Token embedding [V, D] and head [D, V] whose product approximates log P(next | byte)."""
    data = np.frombuffer(CORPUS.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    counts = np.full((VOCAB, VOCAB), 0.01)
    np.add.at(counts, (data[:-1], data[1:]), 1.0)
    # a fixed jitter breaks ties between equally frequent successors by a clear margin
    counts += rng.uniform(0.0, 0.3, counts.shape)
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))
    u, s, vt = np.linalg.svd(log_probs - log_probs.mean(), full_matrices=False)
    root = np.sqrt(s[:D_MODEL])
    return u[:, :D_MODEL] * root, (vt[:D_MODEL].T * root).T


def _weights(dtype: type) -> Weights:
    weights = Weights(SEED, dtype)
    embed, head = _bigram_factors(np.random.default_rng(SEED + 1))
    weights.add("embed", embed.astype(dtype))
    weights.add("head", head.astype(dtype))
    weights.normal("positions", (MAX_POSITIONS, D_MODEL), 0.1)
    for layer in range(LAYERS):
        p = f"l{layer}_"
        weights.const(p + "ln1_gamma", np.ones(D_MODEL)), weights.const(p + "ln1_beta",
                                                                         np.zeros(D_MODEL))
        weights.const(p + "ln2_gamma", np.ones(D_MODEL)), weights.const(p + "ln2_beta",
                                                                         np.zeros(D_MODEL))
        for proj in ("q", "k", "v"):
            weights.normal(p + f"w_{proj}", (D_MODEL, D_MODEL), 1.0 / math.sqrt(D_MODEL))
        weights.normal(p + "w_o", (D_MODEL, D_MODEL), BLOCK_SCALE / math.sqrt(D_MODEL))
        weights.normal(p + "w_ff1", (D_MODEL, D_FF), 1.0 / math.sqrt(D_MODEL))
        weights.normal(p + "w_ff2", (D_FF, D_MODEL), BLOCK_SCALE / math.sqrt(D_FF))
    weights.const("heads_shape", [0, 0, HEADS, HEAD_DIM], dtype=np.int64)
    weights.const("model_shape", [0, 0, D_MODEL], dtype=np.int64)
    weights.const("scale", 1.0 / math.sqrt(HEAD_DIM))
    weights.const("masked", -1e4)
    weights.const("half", 0.5), weights.const("one", 1.0)
    weights.const("inv_sqrt2", 1.0 / math.sqrt(2.0))
    weights.const("i0", 0, dtype=np.int64), weights.const("i1", 1, dtype=np.int64)
    weights.const("i1_list", [1], dtype=np.int64)
    weights.const("axis_last", [-1], dtype=np.int64)
    return weights


def _positions() -> list[onnx.NodeProto]:
    """Position embeddings of ``position_ids`` and the mask of keys a query may not see:
    later positions (causal) and padding (``attention_mask`` 0), as GPT-2's export has it."""
    n = helper.make_node
    return [
        n("Gather", ["positions", "position_ids"], ["pos_embed"], axis=0),
        n("CumSum", ["attention_mask", "i1"], ["mask_count"]),
        n("Sub", ["mask_count", "i1"], ["key_pos"]),  # each key's position: [batch, total]
        n("Unsqueeze", ["key_pos", "i1_list"], ["key_row"]),  # [batch, 1, total]
        n("Unsqueeze", ["position_ids", "axis_last"], ["query_col"]),  # [batch, seq, 1]
        n("Greater", ["key_row", "query_col"], ["later"]),
        n("Equal", ["attention_mask", "i0"], ["padding"]),
        n("Unsqueeze", ["padding", "i1_list"], ["padding_row"]),
        n("Or", ["later", "padding_row"], ["hidden_3d"]),
        n("Unsqueeze", ["hidden_3d", "i1_list"], ["future"]),  # [batch, 1, seq, total]
    ]


def _layer(layer: int, x: str) -> tuple[list[onnx.NodeProto], str]:
    n = helper.make_node
    p = f"l{layer}_"
    nodes = [n("LayerNormalization", [x, p + "ln1_gamma", p + "ln1_beta"], [p + "ln1"],
               axis=-1, epsilon=1e-5)]
    for proj in ("q", "k", "v"):
        nodes += [n("MatMul", [p + "ln1", p + f"w_{proj}"], [p + f"{proj}_lin"]),
                  n("Reshape", [p + f"{proj}_lin", "heads_shape"], [p + f"{proj}_heads"]),
                  n("Transpose", [p + f"{proj}_heads"], [p + f"{proj}_new"], perm=[0, 2, 1, 3])]
    past_k, past_v = f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"
    nodes += [
        n("Concat", [past_k, p + "k_new"], [f"present.{layer}.key"], axis=2),
        n("Concat", [past_v, p + "v_new"], [f"present.{layer}.value"], axis=2),
        n("Transpose", [f"present.{layer}.key"], [p + "k_t"], perm=[0, 1, 3, 2]),
        n("MatMul", [p + "q_new", p + "k_t"], [p + "scores_raw"]),
        n("Mul", [p + "scores_raw", "scale"], [p + "scores_scaled"]),
        n("Where", ["future", "masked", p + "scores_scaled"], [p + "scores"]),
        n("Softmax", [p + "scores"], [p + "attn"], axis=-1),
        n("MatMul", [p + "attn", f"present.{layer}.value"], [p + "ctx_t"]),
        n("Transpose", [p + "ctx_t"], [p + "ctx_heads"], perm=[0, 2, 1, 3]),
        n("Reshape", [p + "ctx_heads", "model_shape"], [p + "ctx"]),
        n("MatMul", [p + "ctx", p + "w_o"], [p + "attn_out"]),
        n("Add", [x, p + "attn_out"], [p + "res1"]),
        n("LayerNormalization", [p + "res1", p + "ln2_gamma", p + "ln2_beta"], [p + "ln2"],
          axis=-1, epsilon=1e-5),
        n("MatMul", [p + "ln2", p + "w_ff1"], [p + "ff1"]),
        n("Mul", [p + "ff1", "inv_sqrt2"], [p + "gelu_scaled"]),
        n("Erf", [p + "gelu_scaled"], [p + "gelu_erf"]),
        n("Add", [p + "gelu_erf", "one"], [p + "gelu_sum"]),
        n("Mul", [p + "ff1", p + "gelu_sum"], [p + "gelu_prod"]),
        n("Mul", [p + "gelu_prod", "half"], [p + "gelu"]),
        n("MatMul", [p + "gelu", p + "w_ff2"], [p + "ff2"]),
        n("Add", [p + "res1", p + "ff2"], [p + "out"]),
    ]
    return nodes, p + "out"


def _decoder(dtype: type, elem: int, name: str, doc: str) -> onnx.ModelProto:
    weights = _weights(dtype)
    n = helper.make_node
    nodes = [*_positions(),
             n("Gather", ["embed", "input_ids"], ["tok_embed"], axis=0),
             n("Add", ["tok_embed", "pos_embed"], ["x0"])]
    x = "x0"
    for layer in range(LAYERS):
        block, x = _layer(layer, x)
        nodes += block
    nodes.append(n("MatMul", [x, "head"], ["logits"]))
    cache = ["batch", HEADS, "past_seq", HEAD_DIM]
    present = ["batch", HEADS, "total_seq", HEAD_DIM]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch", "total_seq"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch", "seq", VOCAB])]
    for layer in range(LAYERS):
        for part in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{layer}.{part}", elem,
                                                        cache))
            outputs.append(helper.make_tensor_value_info(f"present.{layer}.{part}", elem,
                                                         present))
    return assemble(name, nodes, inputs, outputs, weights, doc)


def build() -> onnx.ModelProto:
    return _decoder(np.float32, TensorProto.FLOAT, "tiny_decoder",
                    "Shipei GENERATED: byte-level GPT-style decoder with a KV cache, fp32 "
                    "(bigram-factorised embeddings, seeded attention blocks; not trained)")


def build_fp16() -> onnx.ModelProto:
    return _decoder(np.float16, TensorProto.FLOAT16, "tiny_decoder_fp16",
                    "Shipei GENERATED: byte-level GPT-style decoder with a KV cache, fp16 "
                    "weights, cache and logits (bigram-factorised embeddings; not trained)")
