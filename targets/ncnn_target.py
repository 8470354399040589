"""Tencent ncnn, reached from ONNX through pnnx: ``ncnn-cpu`` (configurations
``default`` at fp32 and ``fp16`` with fp16 storage and arithmetic where the CPU has it).

pnnx converts for fixed input shapes, so the model is converted at the first run from
that run's inputs (``pnnx model.onnx inputshape=[...]``, the converter binary its wheel
ships; pnnx's Python wrapper needs torch and is not used). ncnn's Mats have no batch
dimension: a leading batch of 1 is dropped on the way in and the ONNX output shape
(from ONNX shape inference on the fixed-shape model) restored on the way out when the
element count matches; both are recorded in :meth:`placement`. Runs in environment
``ncnn``.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetError, UnsupportedModelError
from targets.sdk_target import (
    DeferredExecutable,
    SdkTarget,
    graph_facts,
    scalar_adaptation,
    with_static_shapes,
)

PNNX_TIMEOUT_S = 120
#: pnnx's ``inputshape`` type suffixes (pnnx itself refuses bool: "unsupported tensor elem
#: data type 9")
_PNNX_TYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64",
               "int32": "i32", "int8": "i8", "uint8": "u8"}


def _pnnx_shape(array: np.ndarray) -> str:
    """One input's ``inputshape`` entry, e.g. ``[1,3,224,224]f32``."""
    suffix = _PNNX_TYPES.get(array.dtype.name)
    if suffix is None:
        raise UnsupportedModelError(
            f"pnnx cannot declare a {array.dtype.name} input (its inputshape types: "
            f"{', '.join(sorted(_PNNX_TYPES))})", refused_by="converter")
    return f"[{','.join(str(d) for d in array.shape)}]{suffix}"


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="ncnn-cpu", factory="targets.ncnn_target:NcnnTarget",
                     configurations=("default", "fp16"),
                     summary="Tencent ncnn on the CPU, converted from ONNX by pnnx")


class NcnnTarget(SdkTarget):
    name = "ncnn-cpu"
    environment = "ncnn"
    vendor = "Tencent"
    runtime = "ncnn"
    distribution = "ncnn"
    #: pnnx parses the model with its bundled onnxruntime 1.30, which loads ai.onnx
    #: opsets <= 26 (opset 27 and above abort the converter)
    opset_max = 26
    #: what the probe finds accepted; ncnn computes in float, so it hands integer and
    #: float16/64 tensors back as float32 (those cases fail on their output type)
    dtypes = ("float16", "float32", "float64", "int32", "int64", "int8", "uint8")

    computed_by = "ncnn's CPU kernels on the host CPU (Vulkan off), converted by pnnx"

    def capability_extra(self) -> dict[str, Any]:
        """What the driver may change on the way to ncnn (each case says when it did)."""
        return {"adaptations": [
            "a leading batch of 1 dropped from inputs (ncnn Mats have no batch dimension); "
            "ONNX output shapes restored when the element count matches",
            scalar_adaptation("inputs", "fed as 1-element Mats (ncnn Mats have no rank 0; "
                                        "pnnx converts them as declared, rank 0)")]}

    def precision(self) -> str:
        return "fp16" if self.configuration == "fp16" else "fp32"

    def probe(self) -> str:
        import ncnn

        pnnx_binary()
        return str(getattr(ncnn, "__version__", "?"))

    def build(self, model: bytes) -> Executable:
        fp16 = self.configuration == "fp16"
        return DeferredExecutable(model, lambda feeds: _NcnnRunner(model, feeds, fp16),
                                  {"converter": "pnnx", "fp16": fp16})


def die_with_parent() -> None:
    """In a child about to exec: be killed when the process that started it dies. A worker
    killed for a case timeout must not leave pnnx converting on its own (seen: a pnnx
    still running 15 minutes after its worker was killed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_PR_SET_PDEATHSIG = 1


def pnnx_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pnnx is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "pnnx"
    if not binary.is_file():
        raise RuntimeError(f"the pnnx wheel has no converter binary at {binary}")
    return binary


class _NcnnRunner:
    def __init__(self, model: bytes, feeds: Mapping[str, np.ndarray], fp16: bool) -> None:
        import ncnn
        import onnx

        self._ncnn = ncnn
        facts = graph_facts(model)
        self._inputs = list(facts.inputs)
        static = with_static_shapes(model, feeds)
        try:
            inferred = onnx.shape_inference.infer_shapes(onnx.load_from_string(static))
            self._shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
                            for o in inferred.graph.output
                            if o.type.tensor_type.HasField("shape")}  # [] = rank 0
        except Exception:
            self._shapes = {}
        self._outputs = list(facts.outputs)
        folder = Path(tempfile.mkdtemp(prefix="shipei-ncnn-"))
        try:
            source = folder / "model.onnx"
            source.write_bytes(static)
            shapes = ",".join(_pnnx_shape(feeds[n]) for n in self._inputs)
            # pnnx's inputshape has no rank-0 form ("[]" is dropped and the converter then
            # counts a shape short); without inputshape it reads every input's shape and
            # type from the fixed-shape model, rank 0 included
            scalars = [n for n in self._inputs if feeds[n].ndim == 0]
            self._adaptations = [scalar_adaptation(n, "fed as a 1-element ncnn Mat (ncnn "
                                                   "Mats have no rank 0; pnnx converted "
                                                   "it as declared, rank 0)")
                                 for n in scalars]
            declared = [] if scalars else [f"inputshape={shapes}"]
            # pnnx stores weights as fp16 unless told otherwise: only the fp16 configuration
            # may lose their precision
            result = subprocess.run([str(pnnx_binary()), str(source), *declared,
                                     f"fp16={int(fp16)}"], cwd=folder, capture_output=True,
                                    text=True, timeout=PNNX_TIMEOUT_S, check=False,
                                    preexec_fn=die_with_parent)
            param, weights = folder / "model.ncnn.param", folder / "model.ncnn.bin"
            if result.returncode != 0 or not param.exists():
                raise TargetError(f"pnnx could not convert the model ({_how(result)}): "
                                  f"{_last_line(result)}")
            self._net = ncnn.Net()
            self._net.opt.use_vulkan_compute = False
            self._net.opt.num_threads = 1
            for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"):
                setattr(self._net.opt, flag, fp16)
            if self._net.load_param(str(param)) != 0:
                layers = sorted({line.split()[0] for line in param.read_text().splitlines()[2:]
                                 if line.split() and line.split()[0] != "Input"})
                raise TargetError("ncnn rejected the .param pnnx wrote, with layers "
                                  + ", ".join(layers))
            if self._net.load_model(str(weights)) != 0:
                raise TargetError("ncnn rejected the .bin pnnx wrote")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def placement(self) -> dict[str, Any]:
        placement: dict[str, Any] = {
            "layout": "ncnn Mat: a leading batch of 1 dropped from inputs, ONNX output "
                      "shapes restored when the element count matches (the batch of 1 "
                      "alone when only the rank is known)",
            "convolution": "ncnn's defaults (Winograd and sgemm kernels enabled)"}
        if self._adaptations:
            placement["adaptations"] = list(self._adaptations)
        return placement

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        ncnn = self._ncnn
        extractor = self._net.create_extractor()
        for index, name in enumerate(self._inputs):
            value = np.ascontiguousarray(feeds[name], dtype=np.float32)  # 0-d: 1 element
            if value.ndim > 1 and value.shape[0] == 1:
                value = value[0]
            # ncnn.Mat(array) shares the array's memory; clone so in-place layers are safe
            extractor.input(f"in{index}", ncnn.Mat(value).clone())
        results = []
        for index, name in enumerate(self._outputs):
            code, mat = extractor.extract(f"out{index}")
            if code != 0:
                raise TargetError(f"ncnn could not extract output {name!r} (code {code})")
            results.append(restore_onnx_shape(np.array(mat), self._shapes.get(name)))
        return results

    def close(self) -> None:
        self._net = None


def restore_onnx_shape(value: np.ndarray, shape: list[int] | None) -> np.ndarray:
    """An ncnn output in the ONNX output's shape: reshaped when ONNX shape inference gave
    every dimension (or rank 0: ncnn's 1-element Mat is a scalar) and the element count
    matches; given back its batch of 1 when only
    the rank is known and ncnn's Mat is one dimension short; else as ncnn gave it."""
    if shape is None:
        return value
    if all(shape) and int(np.prod(shape)) == value.size:  # rank 0 ([]) included
        return value.reshape(shape)
    if len(shape) == value.ndim + 1 and shape[0] in (0, 1):  # 0: a symbolic batch
        return value[np.newaxis]
    return value


def _how(result: subprocess.CompletedProcess) -> str:
    code = result.returncode
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"

