"""Small deterministic models for the performance suite, built with ``onnx.helper``.

Every model has a dynamic batch dimension ``N`` so the offline scenario can
batch. Weights come from a seeded generator: the same code gives the same bytes
on every machine. Reference outputs come from ``onnx.reference`` (independent of
every target) and are computed once per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass(frozen=True)
class PerfModel:
    """A generated model and how to make its inputs."""

    name: str
    summary: str
    build: Callable[[], onnx.ModelProto]
    #: shape of one sample, without the batch dimension
    sample_shape: tuple[int, ...]
    rtol: float = 1e-4
    atol: float = 1e-5

    def model(self) -> onnx.ModelProto:
        return _built(self.name)

    def inputs(self, count: int, batch: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
        """``count`` distinct feeds of ``batch`` samples each, deterministic per seed."""
        rng = np.random.default_rng(seed)
        name = self.model().graph.input[0].name
        return [{name: rng.standard_normal((batch, *self.sample_shape)).astype(np.float32)}
                for _ in range(count)]


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def weight(self, *shape: int, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        std = scale if scale is not None else (2.0 / fan_in) ** 0.5
        return self.const(self.rng.standard_normal(shape).astype(np.float32) * std)

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        self._count += 1
        out = f"{op_type.lower()}{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, name: str, x_shape: list[int | str], out: str,
              out_shape: list[int | str]) -> onnx.ModelProto:
        self.nodes[-1].output[0] = "y"
        for node in self.nodes:  # rename uses of the last output
            node.input[:] = ["y" if i == out else i for i in node.input]
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="shipei-perf")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def build_mlp() -> onnx.ModelProto:
    """256 -> 1024 -> 1024 -> 10 fully connected, ReLU."""
    b = _Builder(seed=1)
    h = "x"
    for fan_in, fan_out in ((256, 1024), (1024, 1024)):
        h = b.op("Gemm", [h, b.weight(fan_out, fan_in), b.const(np.zeros(fan_out, np.float32))],
                 transB=1)
        h = b.op("Relu", [h])
    h = b.op("Gemm", [h, b.weight(10, 1024), b.const(np.zeros(10, np.float32))], transB=1)
    return b.model("perf_mlp", ["N", 256], h, ["N", 10])


def build_convnet() -> onnx.ModelProto:
    """A small image classifier on 3x64x64: four 3x3 convs, global pooling, a classifier."""
    b = _Builder(seed=2)
    h, channels = "x", 3
    for width, stride in ((16, 1), (32, 2), (64, 2), (64, 1)):
        h = b.op("Conv", [h, b.weight(width, channels, 3, 3),
                          b.const(np.zeros(width, np.float32))],
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
        h = b.op("Relu", [h])
        channels = width
    h = b.op("GlobalAveragePool", [h])
    h = b.op("Flatten", [h], axis=1)
    h = b.op("Gemm", [h, b.weight(10, channels), b.const(np.zeros(10, np.float32))], transB=1)
    return b.model("perf_convnet", ["N", 3, 64, 64], h, ["N", 10])


def build_encoder() -> onnx.ModelProto:
    """One transformer encoder layer: 64 tokens, width 128, 4 heads, FFN 512."""
    b = _Builder(seed=3)
    d, heads, ffn = 128, 4, 512
    x = "x"
    split_heads = b.const(np.array([0, 0, heads, d // heads], np.int64))
    merge_heads = b.const(np.array([0, 0, d], np.int64))
    scale = b.const(np.array(1.0 / np.sqrt(d // heads), np.float32))
    qkv = []
    for _ in range(3):
        h = b.op("MatMul", [x, b.weight(d, d, scale=d ** -0.5)])
        h = b.op("Reshape", [h, split_heads])
        qkv.append(b.op("Transpose", [h], perm=[0, 2, 1, 3]))
    q, k, v = qkv
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt]), scale])
    attn = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    attn = b.op("Reshape", [b.op("Transpose", [attn], perm=[0, 2, 1, 3]), merge_heads])
    attn = b.op("MatMul", [attn, b.weight(d, d, scale=d ** -0.5)])
    ones, zeros = b.const(np.ones(d, np.float32)), b.const(np.zeros(d, np.float32))
    h = b.op("LayerNormalization", [b.op("Add", [x, attn]), ones, zeros], axis=-1)
    f = b.op("Relu", [b.op("MatMul", [h, b.weight(d, ffn, scale=d ** -0.5)])])
    f = b.op("MatMul", [f, b.weight(ffn, d, scale=ffn ** -0.5)])
    ones2, zeros2 = b.const(np.ones(d, np.float32)), b.const(np.zeros(d, np.float32))
    out = b.op("LayerNormalization", [b.op("Add", [h, f]), ones2, zeros2], axis=-1)
    return b.model("perf_encoder", ["N", 64, d], out, ["N", 64, d])


def build_tiny() -> onnx.ModelProto:
    """A 16 -> 16 Gemm: microseconds per query, for the harness's own tests."""
    b = _Builder(seed=4)
    h = b.op("Gemm", ["x", b.weight(16, 16), b.const(np.zeros(16, np.float32))], transB=1)
    return b.model("perf_tiny", ["N", 16], h, ["N", 16])


MODELS: dict[str, PerfModel] = {m.name: m for m in (
    PerfModel("mlp", "MLP 256-1024-1024-10", build_mlp, (256,)),
    PerfModel("convnet", "4-layer CNN on 3x64x64", build_convnet, (3, 64, 64)),
    PerfModel("encoder", "transformer encoder layer, 64x128, 4 heads", build_encoder, (64, 128),
              rtol=1e-3, atol=1e-4),
    PerfModel("tiny", "16x16 Gemm (tests)", build_tiny, (16,)),
)}


@functools.cache
def _built(name: str) -> onnx.ModelProto:
    builders = {m.name: m.build for m in MODELS.values()}
    return builders[name]()


@functools.cache
def model_bytes(name: str) -> bytes:
    return _built(name).SerializeToString()


def reference_outputs(name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs from ``onnx.reference``, in graph output order."""
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(_built(name)).run(None, feeds))
