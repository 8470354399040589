"""ExampleVendor's Shipei driver: the target ``examplevendor-cpu``.

An example of an out-of-tree driver. It wraps a real runtime (ONNX Runtime on
the CPU) under a vendor's name, the way a vendor wraps its own SDK: it states
its identity, answers availability with a reason, declares its capabilities
(opsets, element types, thread safety), refuses what its "hardware" lacks with
:class:`~harness.driver.target.UnsupportedModelError` (ops in :data:`UNSUPPORTED_OPS`),
rejects bad inputs with :class:`~harness.driver.target.InputMismatchError`, and ships
its own expectations file.

Options (``--target examplevendor-cpu,threads=2``):

- ``threads``: intra-op threads of the runtime (default 1).

Fault injection, only to watch ``shipei gate`` fail (never in production):

- ``fault_wrong_op=OP``: outputs of models containing OP are off by 0.5;
- ``fault_leak_mb=N``: every compile keeps N MiB alive for good;
- ``fault_hang_op=OP``: running a model containing OP never returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import (
    Availability,
    Capabilities,
    Executable,
    InputMismatchError,
    Target,
    TargetError,
    TargetIdentity,
    UnsupportedModelError,
)

DISTRIBUTION = "shipei-examplevendor"
TARGET_NAME = "examplevendor-cpu"
#: ops the (pretend) ExampleVendor kernels lack: refused at compile time
UNSUPPORTED_OPS = frozenset({"LSTM"})
#: element types the (pretend) ExampleVendor stack accepts; other cases are skipped
DTYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
          "int64", "uint64", "bool", "string")  # what the capability probe finds it accepts
#: onnxruntime's type names -> numpy's
ORT_TYPES = {"float": "float32", "double": "float64", "float16": "float16", "int8": "int8",
             "uint8": "uint8", "int16": "int16", "int32": "int32", "int64": "int64",
             "bool": "bool", "string": "str"}
_LEAKED: list[np.ndarray] = []


def provide_targets() -> Iterable[TargetSpec]:
    """Entry point of the ``shipei.targets`` group (see pyproject.toml)."""
    yield TargetSpec(name=TARGET_NAME, factory="examplevendor_shipei:ExampleVendorTarget",
                     summary="ExampleVendor inference stack (ONNX Runtime CPU underneath)")


class ExampleVendorExecutable(Executable):
    def __init__(self, session: Any, ops: set[str], target: ExampleVendorTarget) -> None:
        self._session = session
        self._inputs = {i.name: i for i in session.get_inputs()}
        self._outputs = [o.name for o in session.get_outputs()]
        self._hang = bool(target.fault_hang_op) and target.fault_hang_op in ops
        self._wrong = bool(target.fault_wrong_op) and target.fault_wrong_op in ops

    def _check(self, inputs: Mapping[str, Any]) -> None:
        unknown = sorted(set(inputs) - set(self._inputs))
        if unknown:
            raise InputMismatchError(f"unknown input(s) {unknown}; the model takes "
                                     f"{sorted(self._inputs)}")
        for name, value in inputs.items():
            spec = self._inputs[name]
            if not isinstance(value, np.ndarray) or not spec.type.startswith("tensor("):
                continue
            want = ORT_TYPES.get(spec.type[7:-1], spec.type[7:-1])
            got = "str" if value.dtype.kind in "UO" else value.dtype.name
            if got != want:
                raise InputMismatchError(f"input {name!r} is {got}; the model takes {want}")
            fixed = [d if isinstance(d, int) else None for d in spec.shape]
            if len(fixed) != value.ndim or any(d is not None and d != g
                                               for d, g in zip(fixed, value.shape, strict=True)):
                raise InputMismatchError(f"input {name!r} has shape {list(value.shape)}; the "
                                         f"model takes {spec.shape}")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self._check(inputs)
        if self._hang:
            time.sleep(3600)
        feeds = {k: v for k, v in inputs.items() if v is not None}
        try:
            values = self._session.run(self._outputs, feeds)
        except Exception as exc:
            raise TargetError(f"ExampleVendor runtime failed: {exc}") from exc
        outputs = dict(zip(self._outputs, values, strict=True))
        if self._wrong:
            outputs = {k: v + v.dtype.type(0.5) if isinstance(v, np.ndarray) and
                       v.dtype.kind == "f" else v for k, v in outputs.items()}
        return outputs

    def close(self) -> None:
        self._session = None


class ExampleVendorTarget(Target):
    expectations_file = Path(__file__).parent / "expectations" / f"{TARGET_NAME}.toml"

    def __init__(self, configuration: str = "default", threads: int = 1,
                 fault_wrong_op: str = "", fault_leak_mb: int = 0, fault_hang_op: str = ""
                 ) -> None:
        self.configuration = configuration
        self.threads = int(threads)
        self.fault_wrong_op = str(fault_wrong_op)
        self.fault_leak_mb = int(fault_leak_mb)
        self.fault_hang_op = str(fault_hang_op)

    @property
    def identity(self) -> TargetIdentity:
        try:
            runtime_version = metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            runtime_version = "not installed"
        return TargetIdentity(
            name=TARGET_NAME, kind="framework", vendor="ExampleVendor (示例厂商)",
            driver_version=metadata.version(DISTRIBUTION), runtime="onnxruntime",
            runtime_version=runtime_version, device="cpu", configuration=self.configuration,
            driver_distribution=DISTRIBUTION)

    def availability(self) -> Availability:
        try:
            import onnxruntime
        except ImportError as exc:
            return Availability.no(f"onnxruntime is missing ({exc}); "
                                   f"pip install {DISTRIBUTION}")
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return Availability.no("this onnxruntime build has no CPU execution provider")
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        import onnx.defs

        return Capabilities(opset_min=7, opset_max=onnx.defs.onnx_opset_version(),
                            dtypes=DTYPES, devices=("cpu",),
                            precision="fp32", thread_safe=True,
                            extra={"unsupported_ops": sorted(UNSUPPORTED_OPS),
                                   "threads": self.threads})

    def compile(self, model: bytes) -> ExampleVendorExecutable:
        import onnx
        import onnxruntime

        try:
            ops = {node.op_type for node in onnx.load_from_string(model).graph.node}
        except Exception as exc:
            raise TargetError(f"not an ONNX model: {exc}") from exc
        missing = sorted(ops & UNSUPPORTED_OPS)
        if missing:
            raise UnsupportedModelError(f"ExampleVendor has no kernel for {', '.join(missing)}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(model, options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:
            text = str(exc)
            kind = UnsupportedModelError if ("NOT_IMPLEMENTED" in text or
                                             "not a registered" in text) else TargetError
            raise kind(f"ExampleVendor cannot load the model: {text}") from exc
        if self.fault_leak_mb:
            _LEAKED.append(np.ones(self.fault_leak_mb * 2**20, np.uint8))
        return ExampleVendorExecutable(session, ops, self)
