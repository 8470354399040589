"""Alibaba MNN: ``mnn-cpu``.

The ONNX model is converted with MNN's converter, called as the extension function
``_tools.mnnconvert`` in the worker. MNN's ``mnnconvert`` command-line wrapper is never
used: after converting it installs a logging SDK with pip and reports the conversion
to its vendor, which a certification run must not do. The converted model runs on
MNN's CPU backend through its Python module API. Runs in environment ``mnn``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from harness.registry import TargetSpec
from harness.target import Executable, TargetError, check_feeds
from targets.sdk_target import SdkTarget, element_name, graph_facts


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="mnn-cpu", factory="targets.mnn_target:MnnTarget",
                     summary="Alibaba MNN 3.6 on its CPU backend (converter + Python API)")


class MnnTarget(SdkTarget):
    name = "mnn-cpu"
    environment = "mnn"
    vendor = "Alibaba"
    runtime = "MNN"
    distribution = "MNN"
    opset_max = 28
    dtypes = ("float32", "float64", "int32", "int64", "uint8")  # int8: refused (probe)

    def probe(self) -> str:
        import MNN

        return str(getattr(MNN, "version", lambda: "?")())

    def build(self, model: bytes) -> Executable:
        return MnnExecutable(model)


class MnnExecutable(Executable):
    def __init__(self, model: bytes) -> None:
        import _tools  # MNN's converter extension (not the MNN.tools wrapper, see above)
        import MNN.expr
        import MNN.nn

        self._expr = MNN.expr
        self.facts = graph_facts(model)
        folder = tempfile.mkdtemp(prefix="shipei-mnn-")
        try:
            onnx_path = os.path.join(folder, "model.onnx")
            mnn_path = os.path.join(folder, "model.mnn")
            with open(onnx_path, "wb") as handle:
                handle.write(model)
            converted = _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", onnx_path,
                                           "--MNNModel", mnn_path, "--bizCode", "shipei"])
            if not converted or not os.path.exists(mnn_path):
                raise TargetError("MNN's converter rejected the model (see the worker's log)")
            runtime = MNN.nn.create_runtime_manager(({"backend": "CPU", "precision": "high",
                                                      "numThread": 1},))
            try:
                self._module = MNN.nn.load_module_from_file(
                    mnn_path, list(self.facts.inputs), list(self.facts.outputs),
                    runtime_manager=runtime)
            except Exception as exc:
                raise TargetError(f"MNN could not load the converted model: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        F = self._expr
        feeds = check_feeds(self.facts.inputs, inputs, dtype_name=element_name,
                            require_all=True)
        values = []
        for name in self.facts.inputs:
            array = np.ascontiguousarray(feeds[name])
            if array.dtype == np.int64:  # MNN's converter turns int64 tensors into int32
                array = array.astype(np.int32)
            kind = _MNN_DTYPES.get(array.dtype.name)
            if kind is None:
                raise TargetError(f"MNN has no tensor type for {array.dtype.name}")
            values.append(F.const(array, list(array.shape), F.NCHW, getattr(F, kind)))
        try:
            outputs = list(self._module.onForward(values))
        except Exception as exc:
            raise TargetError(f"MNN run failed: {type(exc).__name__}: {exc}") from exc
        if len(outputs) != len(self.facts.outputs):
            raise TargetError(f"MNN returned {len(outputs)} outputs; the graph has "
                              f"{len(self.facts.outputs)} ({', '.join(self.facts.outputs)})")
        try:
            return {name: np.array(F.convert(value, F.NCHW).read())
                    for name, value in zip(self.facts.outputs, outputs, strict=True)}
        except Exception as exc:
            raise TargetError(f"MNN could not read its outputs: {type(exc).__name__}: "
                              f"{exc}") from exc

    def placement(self) -> dict[str, Any]:
        return {"backend": "MNN CPU", "precision": "high",
                "int64_inputs": "passed as int32, as MNN's converter declares them"}

    def close(self) -> None:
        self._module = None


_MNN_DTYPES = {"float32": "float", "float64": "double", "int32": "int", "int8": "int8",
               "uint8": "uint8"}
