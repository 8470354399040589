"""ONNX Runtime targets: ``onnxruntime-cpu`` and one target per execution provider.

Options (``--target onnxruntime-cpu,intra_op_threads=1,graph_optimization_level=basic``):

- ``intra_op_threads``: threads inside an operator (0 = onnxruntime's default).
- ``inter_op_threads``: threads across operators (0 = default).
- ``graph_optimization_level``: ``disable``, ``basic``, ``extended`` or ``all``.

Non-CPU execution providers may hand nodes back to the CPU provider. Those
targets profile their first run and report in :meth:`Executable.placement` how
many nodes each provider ran, so a record never claims GPU work the CPU did.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
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
    InputSpec,
    Target,
    TargetError,
    TargetIdentity,
    check_feeds,
)
from targets.common import EXPECTATIONS_DIR, driver_version
from targets.ort_values import (
    ORT_DTYPES,
    RAW_IO_ADAPTATION,
    needs_raw_io,
    ort_type_name,
    run_raw,
)

#: target suffix -> (execution provider, device, vendor of the device stack)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "cpu": ("CPUExecutionProvider", "cpu", "Microsoft"),
    "cuda": ("CUDAExecutionProvider", "gpu", "NVIDIA"),
    "tensorrt": ("TensorrtExecutionProvider", "gpu", "NVIDIA"),
    "rocm": ("ROCMExecutionProvider", "gpu", "AMD"),
    "migraphx": ("MIGraphXExecutionProvider", "gpu", "AMD"),
    "openvino": ("OpenVINOExecutionProvider", "cpu", "Intel"),
    "dnnl": ("DnnlExecutionProvider", "cpu", "Intel"),
    "dml": ("DmlExecutionProvider", "gpu", "Microsoft"),
    "coreml": ("CoreMLExecutionProvider", "npu", "Apple"),
    "qnn": ("QNNExecutionProvider", "npu", "Qualcomm"),
    "cann": ("CANNExecutionProvider", "npu", "Huawei"),
}

OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

def provide_targets() -> Iterable[TargetSpec]:
    """Entry point of the built-in ONNX Runtime driver."""
    for suffix in PROVIDERS:
        yield TargetSpec(
            name=f"onnxruntime-{suffix}",
            factory="targets.onnxruntime_target:OnnxRuntimeTarget",
            kwargs={"provider_key": suffix},
            summary=f"ONNX Runtime with {PROVIDERS[suffix][0]}",
        )


class OnnxRuntimeExecutable(Executable):
    def __init__(self, session: Any, profile_placement: bool) -> None:
        self._session = session
        self._inputs = {i.name: i for i in session.get_inputs()}
        self._input_specs = {
            i.name: InputSpec(i.name, i.type[len("tensor("):-1] if i.type.startswith("tensor(")
                              else None, i.shape) for i in session.get_inputs()}
        self._output_names = [o.name for o in session.get_outputs()]
        # models with a type numpy cannot hand to onnxruntime run on OrtValues of raw bytes
        self._raw_io = needs_raw_io((*session.get_inputs(), *session.get_outputs()))
        self._profiling = profile_placement
        self._placement: dict[str, Any] = {}

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return check_feeds(self._input_specs, inputs, _feed_type_name)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.run_prepared(self._check_inputs(inputs))

    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The checked feeds: ``run_prepared`` passes them straight to ``session.run``."""
        return self._check_inputs(inputs)

    def run_prepared(self, prepared: dict[str, Any]) -> dict[str, Any]:
        try:
            if self._raw_io:
                values = run_raw(self._session, self._output_names, prepared)
            else:
                values = self._session.run(self._output_names, prepared)
        except Exception as exc:
            raise TargetError(f"onnxruntime run failed: {exc}") from exc
        if self._profiling:
            self._profiling = False
            self._placement = _placement_from_profile(self._session.end_profiling())
        return dict(zip(self._output_names, values, strict=True))

    def placement(self) -> dict[str, Any]:
        placement = dict(self._placement)
        if self._raw_io:
            placement["adaptations"] = [RAW_IO_ADAPTATION]
        return placement

    def close(self) -> None:
        self._session = None


def _feed_type_name(value: Any) -> str | None:
    """onnxruntime's element type name of a feed (only numpy arrays are checked)."""
    return ort_type_name(value.dtype) if isinstance(value, np.ndarray) else None


def _placement_from_profile(path: str) -> dict[str, Any]:
    """Count nodes per execution provider from an onnxruntime profile trace."""
    try:
        events = json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)
    per_node: dict[str, str] = {}
    for event in events:
        args = event.get("args") or {}
        provider = args.get("provider")
        if event.get("cat") == "Node" and provider:
            per_node[event.get("name", "").rsplit("_kernel_time", 1)[0]] = provider
    counts = Counter(per_node.values())
    return {"nodes_by_provider": dict(counts)}


def _thread_count(name: str, value: Any) -> int:
    """A thread-count option: a whole number, 0 for onnxruntime's default."""
    try:
        count = int(str(value))
    except ValueError:
        raise TargetError(f"{name} must be a whole number of threads, not {value!r}") from None
    if count < 0:
        raise TargetError(f"{name} must be 0 (onnxruntime's default) or more, not {count}")
    return count


class OnnxRuntimeTarget(Target):
    def __init__(
        self,
        provider_key: str = "cpu",
        configuration: str = "default",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        graph_optimization_level: str = "all",
    ) -> None:
        if provider_key not in PROVIDERS:
            raise TargetError(f"unknown onnxruntime provider {provider_key!r}")
        if graph_optimization_level not in OPT_LEVELS:
            raise TargetError(
                f"graph_optimization_level must be one of {sorted(OPT_LEVELS)}, "
                f"not {graph_optimization_level!r}"
            )
        self.provider_key = provider_key
        self.provider, self.device, self.device_vendor = PROVIDERS[provider_key]
        self.configuration = configuration
        self.intra_op_threads = _thread_count("intra_op_threads", intra_op_threads)
        self.inter_op_threads = _thread_count("inter_op_threads", inter_op_threads)
        self.graph_optimization_level = graph_optimization_level
        self.expectations_file = EXPECTATIONS_DIR / f"onnxruntime-{provider_key}.toml"

    @property
    def identity(self) -> TargetIdentity:
        try:
            version = metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            version = "not installed"
        return TargetIdentity(
            name=f"onnxruntime-{self.provider_key}",
            kind="framework",
            vendor="Microsoft",
            driver_version=driver_version(),
            runtime="onnxruntime",
            runtime_version=version,
            device=self.device,
            configuration=self.configuration,
            driver_distribution="shipei",
        )

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability.no(f"onnxruntime is not installed ({exc}); pip install onnxruntime")
        available = ort.get_available_providers()
        if self.provider not in available:
            return Availability.no(
                f"this onnxruntime build has no {self.provider} "
                f"(available: {', '.join(available)})"
            )
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        import onnx.defs

        return Capabilities(
            opset_min=1,
            opset_max=onnx.defs.onnx_opset_version(),
            dtypes=ORT_DTYPES,
            devices=(self.device,),
            precision="fp32",
            thread_safe=True,
            extra={
                "execution_provider": self.provider,
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads,
                "graph_optimization_level": self.graph_optimization_level,
                "adaptations": [RAW_IO_ADAPTATION],
            },
        )

    def session_options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, OPT_LEVELS[self.graph_optimization_level]
        )
        options.log_severity_level = 3
        return options

    def compile(self, model: bytes) -> OnnxRuntimeExecutable:
        import onnxruntime as ort

        options = self.session_options()
        profile = self.provider_key != "cpu"
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "shipei-ort")
        providers = [self.provider] if self.provider_key == "cpu" else [
            self.provider, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:
            raise TargetError(f"onnxruntime could not load the model: {exc}") from exc
        return OnnxRuntimeExecutable(session, profile_placement=profile)
