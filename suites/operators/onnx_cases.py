"""The ONNX backend test cases shipped with the installed ``onnx`` package.

- every node case ``onnx.backend.test.case.node.collect_testcases`` generates;
- the model cases under ``onnx/backend/test/data/{pytorch-converted,pytorch-operator,simple}``.

Each is judged with its own rtol/atol, as onnx's own backend test runner does.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import numpy_helper

from harness.cache import cache_dir, cached_pickle
from harness.cases.case import Case, DataSet, LoadedCase, default_opset

SUITE = "operators"
T = TypeVar("T")
MODEL_KINDS = ("pytorch-converted", "pytorch-operator", "simple")

#: ops whose canonical (shortest-named) case forms the representative subset CI runs
REPRESENTATIVE_OPS = (
    "Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat",
    "Conv", "ConvTranspose", "Div", "Einsum", "Erf", "Exp", "Flatten", "Gather", "Gelu",
    "Gemm", "GlobalAveragePool", "HardSigmoid", "InstanceNormalization",
    "LayerNormalization", "LeakyRelu", "Log", "LSTM", "MatMul", "MaxPool", "Mul", "Pad",
    "Pow", "ReduceMean", "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Tanh", "TopK", "Transpose", "Unsqueeze", "Where",
)


def _input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _loaded(model: onnx.ModelProto, data_sets: list[tuple[list[Any], list[Any]]]
            ) -> LoadedCase:
    names = _input_names(model)
    return LoadedCase(model, [
        DataSet(dict(zip(names, map(_as_array, inputs), strict=False)),
                [_as_array(o) for o in outputs])
        for inputs, outputs in data_sets
    ])


def _as_array(value: Any) -> Any:
    """numpy scalars and TensorProtos (some onnx cases store those) become arrays."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value) if isinstance(value, np.generic) else value


def _dtype_names(values: list[Any]) -> list[str]:
    names = []
    for value in values:
        if isinstance(value, np.ndarray):
            names.append(value.dtype.name)
    return sorted(set(names))


def _case_tags(model: onnx.ModelProto, op_type: str, source: str, dtypes: list[str]
               ) -> dict[str, Any]:
    domains = sorted({n.domain or "ai.onnx" for n in model.graph.node})
    return {
        "op_type": op_type,
        "domain": domains[0] if len(domains) == 1 else ",".join(domains),
        "opset": default_opset(model),
        "source": source,
        "dtypes": dtypes,
        "node_count": len(model.graph.node),
    }


def _single_op(model: onnx.ModelProto) -> str | None:
    ops = {node.op_type for node in model.graph.node}
    return ops.pop() if len(ops) == 1 else None


def _ml_dtypes_version() -> str:
    try:
        return metadata.version("ml_dtypes")
    except metadata.PackageNotFoundError:
        return "none"


@dataclass
class _NodeCase:
    name: str
    model: onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float
    atol: float


def _generate_node_cases() -> list[_NodeCase]:
    """Run onnx's case generators (several seconds), or read their cached output.

    The cache is keyed by the onnx, numpy and ml_dtypes versions that produced it (the
    reference outputs of the 2- and 4-bit casts differ between ml_dtypes 0.6 and 0.7),
    so a different installation regenerates rather than reusing stale data.
    """
    key = f"onnx-{onnx.__version__}-numpy-{np.__version__}-ml_dtypes-{_ml_dtypes_version()}"
    return _cached(("onnx-node-cases", f"{key}.pkl"), _collect_node_rows,
                   lambda rows: [_NodeCase(n, onnx.load_from_string(m), d, r, a)
                                 for n, m, d, r, a in rows])


def _cached(where: tuple[str, str], build: Callable[[], Any], convert: Callable[[Any], T]
            ) -> T:
    """:func:`~harness.cache.cached_pickle` under the cache folder ``where[0]``; a cache
    that cannot be written (a full disk, a read-only home) is only not kept: the suite
    still collects, and the run then reports the full disk where it writes its records."""
    try:
        return cached_pickle(cache_dir(where[0]) / where[1], build, convert)
    except OSError:
        return convert(build())


def _collect_node_rows() -> list[tuple[Any, ...]]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generated = collect_testcases()
    return [(tc.name, tc.model.SerializeToString(), tc.data_sets, tc.rtol, tc.atol)
            for tc in generated]


def _node_rows() -> list[tuple[Any, ...]]:
    """``("node", name, model bytes, data sets, rtol, atol, tags)`` per node case."""
    generated = _generate_node_cases()
    by_name = {tc.name: tc for tc in generated}
    rows = []
    for tc in generated:
        op_type = _single_op(tc.model)
        if op_type is None:  # an expanded function body: name the op it expands
            base = tc.name.split("_expanded")[0]
            twin = by_name.get(base)
            op_type = (_single_op(twin.model) if twin is not None else None) or \
                tc.model.graph.node[0].op_type
        inputs = tc.data_sets[0][0] if tc.data_sets else []
        rows.append(("node", tc.name, tc.model.SerializeToString(), tc.data_sets, tc.rtol,
                     tc.atol, _case_tags(tc.model, op_type, "node",
                                         _dtype_names(list(inputs)))))
    return rows


def _load_node(model: bytes, data_sets: list[tuple[list[Any], list[Any]]]) -> LoadedCase:
    loaded = _loaded(onnx.load_from_string(model), data_sets)
    loaded.model_bytes = model  # sent to the target as it is: no serializing it again
    return loaded


def _load_proto(path: str, type_proto: onnx.TypeProto) -> Any:
    with open(path, "rb") as handle:
        content = handle.read()
    if type_proto.HasField("sequence_type"):
        sequence = onnx.SequenceProto()
        sequence.ParseFromString(content)
        return numpy_helper.to_list(sequence)
    if type_proto.HasField("optional_type"):
        optional = onnx.OptionalProto()
        optional.ParseFromString(content)
        return numpy_helper.to_optional(optional)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(content)
    return numpy_helper.to_array(tensor)


def _load_model_dir(model_dir: str) -> LoadedCase:
    model = onnx.load(os.path.join(model_dir, "model.onnx"))
    graph_inputs = [i for i in model.graph.input
                    if i.name not in {init.name for init in model.graph.initializer}]
    data_sets = []
    for data_dir in sorted(glob.glob(os.path.join(model_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(data_dir, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(data_dir, "output_*.pb")))
        inputs = [_load_proto(os.path.join(data_dir, f"input_{i}.pb"), graph_inputs[i].type)
                  for i in range(n_in)]
        outputs = [_load_proto(os.path.join(data_dir, f"output_{i}.pb"),
                               model.graph.output[i].type) for i in range(n_out)]
        data_sets.append((inputs, outputs))
    return _loaded(model, data_sets)


def _model_dir_rows(kinds: tuple[str, ...] = MODEL_KINDS) -> list[tuple[Any, ...]]:
    """``("dir", name, model folder, rtol, atol, tags)`` per model case."""
    from onnx.backend.test.loader import load_model_tests

    rows = []
    for kind in kinds:
        for tc in sorted(load_model_tests(kind=kind), key=lambda t: t.name):
            if tc.model_dir is None:
                continue
            model = onnx.load(os.path.join(tc.model_dir, "model.onnx"), load_external_data=False)
            op_type = _single_op(model) or f"model:{kind}"
            rows.append(("dir", tc.name, tc.model_dir, tc.rtol, tc.atol,
                         _case_tags(model, op_type, kind, [])))
    return rows


#: bump when the rows below change shape
CASE_LIST_FORMAT = 1


def _case_list_key() -> str:
    """What the case list depends on: onnx (its cases, where its model folders are),
    numpy and ml_dtypes (the pickled data, the references they computed) and the source
    that derives names and tags from them."""
    from suites.operators import folded

    sources = hashlib.sha256()
    for module in (__file__, folded.__file__):
        sources.update(Path(module).read_bytes())
    where = hashlib.sha256(os.path.dirname(onnx.__file__).encode()).hexdigest()[:8]
    return (f"v{CASE_LIST_FORMAT}-onnx-{onnx.__version__}-{where}-numpy-{np.__version__}-"
            f"ml_dtypes-{_ml_dtypes_version()}-{sources.hexdigest()[:12]}")


def _build_rows() -> list[tuple[Any, ...]]:
    from suites.operators.folded import folded_cases

    node_rows = _node_rows()
    node = [_case_from_row(row, {}) for row in node_rows]
    folded = [("folded", twin.name, twin.tags["folded_from"], twin.rtol, twin.atol, twin.tags)
              for twin in folded_cases(node)]
    taken = {row[1] for row in node_rows} | {row[1] for row in folded}
    models = []
    for kind, name, *rest in _model_dir_rows():
        tags = rest[-1]
        if name in taken:  # a model case named like a node case keeps both, renamed
            name = f"{name}_{tags['source'].replace('-', '_')}"
        models.append((kind, name, *rest))
    return node_rows + folded + models


def _case_from_row(row: tuple[Any, ...], by_name: dict[str, Case]) -> Case:
    kind, name = row[0], row[1]
    if kind == "node":
        _, _, model, data_sets, rtol, atol, tags = row
        load = functools.partial(_load_node, model, data_sets)
    elif kind == "dir":
        _, _, model_dir, rtol, atol, tags = row
        load = functools.partial(_load_model_dir, model_dir)
    else:
        from suites.operators.folded import load_folded

        _, _, base, rtol, atol, tags = row
        load = functools.partial(load_folded, by_name[base])
    return Case(suite=SUITE, name=name, load=load, rtol=rtol, atol=atol, tags=tags)


def all_cases() -> list[Case]:
    """Every node case, its folded twins and the model cases, in a fixed order.

    The list (names, tags, tolerances, the node cases' models and data) is cached by
    :func:`_case_list_key`, so collecting the suite parses no model; a corrupt cache is
    rebuilt, never trusted."""
    return _cached(("operator-cases", f"{_case_list_key()}.pkl"), _build_rows,
                   _cases_from_rows)


def _cases_from_rows(rows: list[tuple[Any, ...]]) -> list[Case]:
    by_name: dict[str, Case] = {}
    cases = []
    for row in rows:
        case = _case_from_row(row, by_name)
        by_name[case.name] = case
        cases.append(case)
    return cases


#: element types a representative case avoids when its op has a case without them: CI's
#: subset should exercise the common path, the full sweep covers the exotic types
EXOTIC_TYPE_NAMES = ("int2", "int4", "float8", "float4", "e8m0", "e4m3", "e5m2", "bfloat16")


def _representative_key(case: Case) -> tuple[bool, int, str]:
    lowered = case.name.lower()
    return any(t in lowered for t in EXOTIC_TYPE_NAMES), len(case.name), case.name


def representative(cases: list[Case]) -> set[str]:
    """One canonical case per op in :data:`REPRESENTATIVE_OPS`: the shortest name among
    its cases of common element types (any case when it has only exotic ones)."""
    chosen: dict[str, Case] = {}
    for case in cases:
        op = case.tags.get("op_type")
        if op in REPRESENTATIVE_OPS and case.tags.get("source") == "node":
            best = chosen.get(op)
            if best is None or _representative_key(case) < _representative_key(best):
                chosen[op] = case
    return {c.name for c in chosen.values()}
