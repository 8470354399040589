"""Check user-supplied ONNX files (``shipei run --model PATH``) on every target.

Inputs are generated from the model's declared inputs with a fixed seed (dynamic
dimensions become 1); the reference is onnxruntime on the CPU with graph
optimizations disabled, run in this process. Each model is one case named
``test_<file stem>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from harness.cases import Case, DataSet, LoadedCase
from harness.modelfile import ModelFileError, check_model_file

SUITE = "model_file"
SEED = 20261125


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_path" in metafunc.fixturenames:
        paths = metafunc.config.getoption("shipei_models")
        metafunc.parametrize("model_path", paths, ids=[Path(p).name for p in paths])


def _random_input(value_info: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    tensor = value_info.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
             for d in tensor.shape.dim]
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 8, shape).astype(dtype)
    raise ModelFileError(f"input {value_info.name!r}: cannot generate data of type {dtype}")


def _reference(model: onnx.ModelProto, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def model_case(path: Path) -> Case:
    model = check_model_file(path)
    name = "test_" + re.sub(r"\W", "_", path.stem)

    def load() -> LoadedCase:
        rng = np.random.default_rng(SEED)
        initializers = {init.name for init in model.graph.initializer}
        feeds = {vi.name: _random_input(vi, rng) for vi in model.graph.input
                 if vi.name not in initializers}
        return LoadedCase(model, [DataSet(feeds, _reference(model, feeds))])

    return Case(suite=SUITE, name=name, load=load, rtol=1e-3, atol=1e-5,
                tags={"source": str(path), "op_type": "model"})


def test_model(target: Any, model_path: Path) -> None:
    try:
        case = model_case(Path(model_path))
    except ModelFileError as exc:
        pytest.fail(str(exc), pytrace=False)
    target.check(case)
