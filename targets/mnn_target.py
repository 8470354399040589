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

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetError, UnsupportedModelError, check_feeds
from targets.sdk_target import SdkTarget, as_fed, element_name, graph_facts


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
    #: int8: refused by the runtime (probe); bool: carried as int32 (an adaptation);
    #: float16, bfloat16: refused by this driver (see :data:`_DRIVER_REFUSES`)
    dtypes = ("float32", "float64", "int32", "int64", "uint8", "bool")

    computed_by = "MNN's CPU backend (its Python module API) on the host CPU"

    def probe(self) -> str:
        import MNN

        return str(getattr(MNN, "version", lambda: "?")())

    def capability_extra(self) -> dict[str, Any]:
        return {"adaptations": list(ADAPTATIONS.values())}

    def build(self, model: bytes) -> Executable:
        return MnnExecutable(model)


#: what this driver may change on the way to and from MNN, each recorded per case in
#: ``placement()["adaptations"]`` when it happened
ADAPTATIONS = {
    "int64": "int64 inputs fed as int32, as MNN's converter declares them",
    "bool": "bool inputs fed as int32 (0/1), as MNN's converter declares them; bool "
            "outputs, which MNN gives as int32, read back as bool",
}
#: element types MNN's converter declares as int32 tensors whose values this driver has
#: no faithful way to feed: a limit of the driver, not a refusal of MNN's runtime
_DRIVER_REFUSES = ("float16", "bfloat16")


class MnnExecutable(Executable):
    def __init__(self, model: bytes) -> None:
        import _tools  # MNN's converter extension (not the MNN.tools wrapper, see above)
        import MNN.expr
        import MNN.nn

        self._expr = MNN.expr
        self.facts = graph_facts(model)
        self._bool_outputs = _bool_outputs(model)
        self._adaptations: dict[str, str] = {}
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
            array = as_fed(feeds[name])
            kind = element_name(array)
            if kind in _DRIVER_REFUSES:
                raise UnsupportedModelError(
                    f"MNN's converter declares {kind} inputs as int32 tensors; this driver "
                    f"has no faithful way to feed {kind} values to them",
                    refused_by="driver")
            if kind in ADAPTATIONS:  # MNN's converter declares these as int32
                array = array.astype(np.int32)
                self._adaptations[kind] = ADAPTATIONS[kind]
            mnn_type = _MNN_DTYPES.get(array.dtype.name)
            if mnn_type is None:
                raise UnsupportedModelError(f"MNN's Python API has no tensor type for "
                                            f"{kind}", refused_by="runtime")
            values.append(F.const(array, list(array.shape), F.NCHW, getattr(F, mnn_type)))
        try:
            outputs = list(self._module.onForward(values))
        except Exception as exc:
            raise TargetError(f"MNN run failed: {type(exc).__name__}: {exc}") from exc
        if len(outputs) != len(self.facts.outputs):
            raise TargetError(f"MNN returned {len(outputs)} outputs; the graph has "
                              f"{len(self.facts.outputs)} ({', '.join(self.facts.outputs)})")
        try:
            results = {name: np.array(F.convert(value, F.NCHW).read())
                       for name, value in zip(self.facts.outputs, outputs, strict=True)}
        except Exception as exc:
            raise TargetError(f"MNN could not read its outputs: {type(exc).__name__}: "
                              f"{exc}") from exc
        for name in self._bool_outputs:
            if results[name].dtype != np.bool_:
                results[name] = results[name] != 0
                self._adaptations["bool"] = ADAPTATIONS["bool"]
        return results

    def placement(self) -> dict[str, Any]:
        placement: dict[str, Any] = {"backend": "MNN CPU", "precision": "high"}
        if self._adaptations:
            placement["adaptations"] = sorted(self._adaptations.values())
        return placement

    def close(self) -> None:
        self._module = None


_MNN_DTYPES = {"float32": "float", "float64": "double", "int32": "int", "int8": "int8",
               "uint8": "uint8"}


def _bool_outputs(model: bytes) -> tuple[str, ...]:
    """The graph outputs declared bool (MNN hands them back as int32)."""
    import onnx

    graph = onnx.load_from_string(model).graph
    return tuple(o.name for o in graph.output
                 if o.type.tensor_type.elem_type == onnx.TensorProto.BOOL)
