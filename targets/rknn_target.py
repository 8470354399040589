"""Rockchip RK3588 NPU on rknn-toolkit2's x86 simulator: ``rknn-rk3588``.

Configurations: ``default`` (the toolkit's fp16 build, what the RK3588 NPU computes
in when not quantized) and ``int8`` (asymmetric int8 quantization calibrated on the
case's own inputs). The toolkit needs fixed input shapes, so the model is built at the
first run from that run's inputs (``load_onnx(inputs=..., input_size_list=...)``);
``init_runtime()`` without a device runs the simulator, and inputs are passed as NCHW
(``data_format``), not the toolkit's default NHWC.

What the simulator is: rknn-toolkit2's x86 "NPU simulator" computes the built model
through onnxruntime (1.20.1 in environment ``rknn``) on the host's CPU, emulating the
NPU's fp16 (or int8) arithmetic; no RK3588 and no NPU takes part. Every record's
placement names what computed its numbers (``computed_by``, from the modules the
simulator actually loaded), and so do the capabilities a certificate carries. Simulator
results may differ from a board's. Runs in environment ``rknn``: the toolkit pins numpy,
onnx and torch versions the harness cannot share.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetError
from targets.sdk_target import DeferredExecutable, SdkTarget, graph_facts, ordered_inputs

#: the highest ONNX opset rknn-toolkit2 2.5 documents support for
RKNN_OPSET_MAX = 19
#: what computes the numbers, as a certificate states it (each record's placement says it
#: again from what the simulator loaded: :func:`simulator_engine`)
COMPUTED_BY = ("rknn-toolkit2's x86 simulator: onnxruntime on the host CPU, emulating the "
               "NPU's precision; not an RK3588 NPU")


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="rknn-rk3588", factory="targets.rknn_target:RknnTarget",
                     configurations=("default", "int8"),
                     summary="Rockchip RK3588 NPU: rknn-toolkit2 2.5 x86 simulator (fp16, int8)")


class RknnTarget(SdkTarget):
    name = "rknn-rk3588"
    environment = "rknn"
    vendor = "Rockchip"
    runtime = "rknn-toolkit2"
    distribution = "rknn-toolkit2"
    kind = "chip"
    device = "npu"
    opset_max = RKNN_OPSET_MAX
    dtypes = ("float32", "float16", "int32", "int64", "int8", "bool")

    def precision(self) -> str:
        return "int8" if self.configuration == "int8" else "fp16"

    computed_by = COMPUTED_BY

    def capability_extra(self) -> dict[str, Any]:
        return {"chip": "RK3588 (simulator)", "simulator": True,
                "calibration": "the case's own inputs" if self.configuration == "int8"
                else None}

    def probe(self) -> str:
        from rknn.api import RKNN  # noqa: F401 - imports torch and the simulator

        return "ok"

    def build(self, model: bytes) -> Executable:
        quantize = self.configuration == "int8"
        notes = {"device": "rknn-toolkit2 x86 simulator of the RK3588 NPU (on the host CPU)",
                 "simulated": True,
                 "precision": self.precision(), "data_format": "nchw"}
        return DeferredExecutable(model, lambda feeds: _reported(
            "build", lambda: _RknnRunner(model, feeds, quantize)), notes)


class _RknnRunner:
    def __init__(self, model: bytes, feeds: Mapping[str, np.ndarray], quantize: bool) -> None:
        from rknn.api import RKNN

        facts = graph_facts(model)
        self._facts = facts
        self._log = io.StringIO()
        self._folder = Path(tempfile.mkdtemp(prefix="shipei-rknn-"))
        self._rknn = RKNN(verbose=False)
        source = self._folder / "model.onnx"
        source.write_bytes(model)
        names = list(facts.inputs)
        inputs = ordered_inputs(facts, feeds)
        self._step("config", self._rknn.config(target_platform="rk3588",
                                               quantized_dtype="w8a8",
                                               optimization_level=1))
        self._step("load_onnx", self._rknn.load_onnx(
            model=str(source), inputs=names, input_size_list=[list(v.shape) for v in inputs]))
        dataset = None
        if quantize:
            paths = []
            for index, value in enumerate(inputs):
                path = self._folder / f"calibration_{index}.npy"
                np.save(path, value)
                paths.append(str(path))
            dataset = self._folder / "dataset.txt"
            dataset.write_text(" ".join(paths) + "\n")
        self._step("build", self._rknn.build(do_quantization=quantize,
                                             dataset=str(dataset) if dataset else None))
        self._step("init_runtime", self._rknn.init_runtime())

    def _step(self, what: str, code: int) -> None:
        if code != 0:
            raise TargetError(f"rknn-toolkit2 {what} failed (return code {code})")

    def placement(self) -> dict[str, Any]:
        return {"computed_by": simulator_engine()}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        inputs = ordered_inputs(self._facts, feeds)
        with contextlib.redirect_stdout(self._log):
            outputs = _reported("inference", lambda: self._rknn.inference(
                inputs=inputs, data_format=["nchw"] * len(inputs)))
        if outputs is None:
            raise TargetError("rknn-toolkit2 inference returned nothing (simulator failure)")
        return [np.asarray(value) for value in outputs]

    def close(self) -> None:
        self._rknn.release()
        shutil.rmtree(self._folder, ignore_errors=True)


def _reported(what: str, call: Any) -> Any:
    """Run a toolkit call; its exceptions (whose messages are whole tracebacks) become a
    TargetError quoting the last line, the one that says what went wrong."""
    try:
        return call()
    except TargetError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise TargetError(f"rknn-toolkit2 {what}: {type(exc).__name__}: "
                          f"{lines[-1] if lines else ''}"[:400]) from exc


def simulator_engine() -> str:
    """What the simulator computed with, from the modules it loaded in this worker:
    onnxruntime and its version when the toolkit imported it, else the toolkit alone."""
    ort = sys.modules.get("onnxruntime")
    version = getattr(ort, "__version__", None)
    if version is None:
        return "rknn-toolkit2's x86 simulator on the host CPU (engine not identified)"
    return (f"onnxruntime {version} on the host CPU, inside rknn-toolkit2's x86 simulator "
            "(the NPU's precision emulated); not an RK3588 NPU")
