"""The folded family: node cases whose attribute-like inputs become initializers.

Many ONNX node cases pass what a real model holds as a constant — a Reshape's
shape, Tile's repeats, Slice's starts, Pad's pads, TopK's k, Resize's scales,
NonMaxSuppression's limits — as a *graph input*. A compiler that needs those
values at build time (TVM, an NPU toolchain) then fails in its frontend and the
case never reaches its kernels. Each such case gets a twin named
``<case>_folded`` (tag ``family = "folded"``) with those inputs folded into
initializers, so "the frontend cannot take a dynamic shape" and "the compiled
kernel is wrong" are told apart in records, the matrix and certificates.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from harness.cases.case import Case, DataSet, LoadedCase

#: op -> positions of the inputs that hold what a model would have as a constant
FOLDABLE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Tile": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "TopK": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "NonMaxSuppression": (2, 3, 4),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "SplitToSequence": (1,),
    "ConstantOfShape": (0,), "OneHot": (1,), "Range": (0, 1, 2), "CumSum": (1,),
    "Trilu": (1,), "CenterCropPad": (1,), "Clip": (1, 2), "Dropout": (1, 2),
    "AffineGrid": (1,), "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 2, 3),
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "DynamicQuantizeLinear": (),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "BlackmanWindow": (0,),
    "HannWindow": (0,), "HammingWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4),
    "Bernoulli": (), "RandomUniformLike": (), "Compress": (1,),
}
FOLDED_SUFFIX = "_folded"


def _folded_names(model: onnx.ModelProto, inputs: dict[str, Any]) -> list[str]:
    """The graph inputs of ``model``'s single node that may be folded and have a value."""
    if len(model.graph.node) != 1:
        return []
    node = model.graph.node[0]
    positions = FOLDABLE_INPUTS.get(node.op_type, ())
    graph_inputs = {i.name for i in model.graph.input}
    return [node.input[p] for p in positions
            if p < len(node.input) and node.input[p] in graph_inputs
            and isinstance(inputs.get(node.input[p]), np.ndarray)]


def fold(loaded: LoadedCase) -> LoadedCase:
    """The case with its foldable inputs as initializers (the same values, every data set)."""
    if not loaded.data_sets:
        return loaded
    names = _folded_names(loaded.model, loaded.data_sets[0].inputs)
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    kept = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name in names:
        model.graph.initializer.append(
            numpy_helper.from_array(loaded.data_sets[0].inputs[name], name))
    data_sets = [DataSet({k: v for k, v in d.inputs.items() if k not in names}, d.outputs)
                 for d in loaded.data_sets]
    return LoadedCase(model, data_sets)


def _foldable(case: Case) -> bool:
    loaded = case.load()
    if not loaded.data_sets:
        return False
    names = _folded_names(loaded.model, loaded.data_sets[0].inputs)
    # a folded input must hold the same value in every data set
    return bool(names) and all(
        all(np.array_equal(d.inputs.get(n), loaded.data_sets[0].inputs[n]) for n in names)
        for d in loaded.data_sets[1:])


def load_folded(case: Case) -> LoadedCase:
    """``case`` loaded, then folded."""
    return fold(case.load())


def folded_cases(node_cases: list[Case]) -> list[Case]:
    """A ``_folded`` twin of every single-op node case with foldable inputs."""
    twins = []
    for case in node_cases:
        if case.tags.get("op_type") not in FOLDABLE_INPUTS or case.name.endswith("_expanded"):
            continue
        if not _foldable(case):
            continue
        twins.append(dataclasses.replace(
            case, name=case.name + FOLDED_SUFFIX, load=functools.partial(load_folded, case),
            tags={**case.tags, "family": "folded", "folded_from": case.name}))
    return twins
