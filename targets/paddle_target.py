"""Baidu Paddle Inference, reached from ONNX through x2paddle: ``paddle-cpu``.

x2paddle (1.6) translates the ONNX model, with its input shapes fixed from the first
run's inputs, into a Paddle static-graph inference model; Paddle Inference
(``paddle.inference``, paddlepaddle 3.3) runs it on the CPU. x2paddle reports every
conversion to its vendor unless told not to: it is always called with
``disable_feedback=True``. Runs in environment ``paddle``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetError
from targets.sdk_target import (
    DeferredExecutable,
    SdkTarget,
    as_fed,
    graph_facts,
    with_static_shapes,
)


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="paddle-cpu", factory="targets.paddle_target:PaddleTarget",
                     summary="Baidu Paddle Inference 3.3 on the CPU, converted by x2paddle 1.6")


class PaddleTarget(SdkTarget):
    name = "paddle-cpu"
    environment = "paddle"
    vendor = "Baidu"
    runtime = "paddle-inference"
    distribution = "paddlepaddle"
    opset_max = 28
    dtypes = ("float32", "float64", "float16", "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz",
              "float8_e5m2", "float8_e5m2fnuz", "int32", "int64", "int16", "int8", "int4",
              "uint16", "uint8", "uint4", "bool")

    computed_by = "Paddle Inference on the host CPU, converted by x2paddle"

    def probe(self) -> str:
        import paddle.inference
        import x2paddle  # noqa: F401 - the converter must import too

        return str(paddle.__version__)

    def build(self, model: bytes) -> Executable:
        return DeferredExecutable(model, lambda feeds: _PaddleRunner(model, feeds),
                                  {"converter": "x2paddle", "feedback": "disabled"})


class _PaddleRunner:
    def __init__(self, model: bytes, feeds: Mapping[str, np.ndarray]) -> None:
        import paddle
        from paddle import inference
        from x2paddle.convert import onnx2paddle

        logging.getLogger("x2paddle").setLevel(logging.WARNING)
        facts = graph_facts(model)
        self._inputs = list(facts.inputs)
        folder = Path(tempfile.mkdtemp(prefix="shipei-paddle-"))
        try:
            source = folder / "model.onnx"
            source.write_bytes(with_static_shapes(model, feeds))
            said = io.StringIO()  # x2paddle prints what it cannot map, then raises
            try:
                # a fresh name generator per model: x2paddle names parameters after the
                # ONNX initializers, and a second model with the same names in this
                # process would otherwise be refused ("parameter name ... have be been used")
                with paddle.utils.unique_name.guard(), contextlib.redirect_stdout(said):
                    onnx2paddle(str(source), str(folder / "out"), disable_feedback=True,
                                enable_onnx_checker=False)
            except (Exception, SystemExit) as exc:  # x2paddle calls exit(0) on some failures
                raise TargetError(f"x2paddle could not convert the model: "
                                  f"{_why(exc, said.getvalue())}") from exc
            files = _inference_files(folder / "out" / "inference_model")
            config = inference.Config(*files)
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(1)
            config.disable_glog_info()
            try:
                self._predictor = inference.create_predictor(config)
            except Exception as exc:
                raise TargetError(f"Paddle Inference could not load the converted model: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._input_names = self._predictor.get_input_names()
        self._output_names = self._predictor.get_output_names()
        if len(self._input_names) != len(self._inputs):
            raise TargetError(f"the converted model takes {len(self._input_names)} inputs, "
                              f"the ONNX graph {len(self._inputs)}")

    def placement(self) -> dict[str, Any]:
        return {"device": "Paddle Inference CPU", "inputs_renamed_to": self._input_names}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            for onnx_name, paddle_name in zip(self._inputs, self._input_names, strict=True):
                handle = self._predictor.get_input_handle(paddle_name)
                value = as_fed(feeds[onnx_name])
                handle.reshape(list(value.shape))
                handle.copy_from_cpu(value)
            self._predictor.run()
            return [self._predictor.get_output_handle(name).copy_to_cpu()
                    for name in self._output_names]
        except Exception as exc:
            raise TargetError(f"Paddle Inference run failed: {type(exc).__name__}: "
                              f"{str(exc)[:300]}") from exc

    def close(self) -> None:
        self._predictor = None


def _inference_files(folder: Path) -> tuple[str, ...]:
    """(model file, params file) of the exported inference model; Paddle 3 writes
    ``model.json`` where Paddle 2 wrote ``model.pdmodel``."""
    params = folder / "model.pdiparams"
    for name in ("model.json", "model.pdmodel"):
        if (folder / name).exists():
            return str(folder / name), str(params)
    found = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    raise TargetError(f"x2paddle wrote no inference model (found: {found})")


#: how x2paddle's op checker prints each operator it has no mapping for
_UNMAPPED_OP = re.compile(r"^=+ (\S+) =+$", re.MULTILINE)


def _why(exc: BaseException, printed: str = "") -> str:
    """x2paddle re-raises every mapping failure as a bare "convert failed node:..."
    exception; the error it replaced (its ``__context__``) says what went wrong. Its
    "Model is not supported yet" follows a printed list of the operators it cannot map."""
    unmapped = sorted(set(_UNMAPPED_OP.findall(printed)))
    if unmapped and "not supported yet" in str(exc):
        return f"x2paddle has no mapping for {', '.join(unmapped)}"
    cause = exc.__context__
    if isinstance(exc, SystemExit):
        said = f"x2paddle gave up with exit({exc.code})"
        return said + (f" after {type(cause).__name__}: {str(cause)[:200]}" if cause else "")
    said = f"{type(exc).__name__}: {str(exc)[:200]}"
    if cause is not None and str(exc).startswith("convert failed"):
        said += f" ({type(cause).__name__}: {str(cause)[:200]})"
    return said
