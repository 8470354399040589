"""OpenVINO targets: ``openvino-cpu``, ``openvino-gpu``, ``openvino-npu``.

The model goes through OpenVINO's own ONNX frontend (``Core.read_model`` on the
model bytes) and is compiled for one device. The inference precision hint is
always set explicitly: on CPUs with native bf16 OpenVINO otherwise computes
fp32 models in bf16. Reduced precision is a declared configuration of the same
target (``openvino-cpu:bf16``, ``openvino-cpu:f16``); its
:class:`~harness.driver.target.Capabilities` precision loosens the judge's tolerances.
After compiling, the driver reads the precision back from the compiled model and
refuses to run if the device quietly chose another one (this CPU plugin turns
``f16`` into ``bf16`` on CPUs without fp16 arithmetic).

Options (``--target openvino-cpu,threads=1``):

- ``threads``: ``INFERENCE_NUM_THREADS`` (0 = OpenVINO's choice).

Exchanging tensors: OpenVINO's Python binding hands bf16 and fp8 tensors to numpy
as float16/uint8 arrays holding the raw bits. The driver moves those bits
unchanged between the ml_dtypes arrays of the cases and OpenVINO tensors, which
is exact, and says so in :meth:`Executable.placement` (``bit_exchanged``).
No value is ever converted to another dtype: an output dtype that differs from
the ONNX model's is reported as it is and judged a failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

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
from harness.isolation.tensors import from_packed_bytes, packed_bytes
from targets.common import EXPECTATIONS_DIR, driver_version

if TYPE_CHECKING:  # onnx is imported where it is used: discovering targets must not
    import onnx  # import it (the test process launches its workers before it needs onnx)

#: target suffix -> (OpenVINO device name, configurations, default precision hint)
DEVICES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cpu": ("CPU", ("default", "bf16", "f16"), "f32"),
    "gpu": ("GPU", ("default", "f16"), "f32"),
    "npu": ("NPU", ("default",), "f16"),  # NPUs compute in fp16
}

#: configuration -> INFERENCE_PRECISION_HINT (``default`` takes the device's own)
CONFIG_HINTS = {"bf16": "bf16", "f16": "f16"}
#: precision hint -> (harness precision class, OPTIMIZATION_CAPABILITIES entry needed)
HINT_PRECISION = {"f32": ("fp32", "FP32"), "bf16": ("bf16", "BF16"), "f16": ("fp16", "FP16")}

#: OpenVINO element type name -> numpy dtype name of the cases (ml_dtypes for the exotic)
OV_TO_NUMPY = {
    "f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "boolean": "bool", "string": "string",
    "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2", "f8e8m0": "float8_e8m0fnu",
    "i4": "int4", "u4": "uint4", "f4e2m1": "float4_e2m1fn", "u2": "uint2",
}
#: element types the Python binding exchanges as raw bits: their ONNX raw bytes go into
#: (and come out of) the OpenVINO tensor's buffer unchanged (sub-byte types packed the
#: ONNX way, which is OpenVINO's layout too)
BIT_EXCHANGED = frozenset({"bf16", "f8e4m3", "f8e5m2", "f8e8m0", "i4", "u4", "f4e2m1", "u2"})
#: element types the capability probe finds OpenVINO's ONNX frontend and CPU plugin take
#: (the contract checks this against the probe; fnuz float8, int2/uint2, float6 and
#: complex are refused by the frontend; strings crash the CPU plugin's Identity and Cast
#: but cross a Concat intact)
OPENVINO_DTYPES = ("bfloat16", "bool", "float16", "float32", "float4_e2m1fn", "float64",
                   "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "int16", "int32", "int4",
                   "int64", "int8", "string", "uint16", "uint32", "uint4", "uint64", "uint8")

_UNSUPPORTED = re.compile(
    r"No conversion rule found|Unsupported operation|is not supported|not implemented|"
    r"Unsupported (?:data|element) type|doesn't support", re.IGNORECASE)
_SOURCE_REFS = re.compile(r"(Exception from|Check '.*?' failed at) src/\S+:\d+:")
_NOISE = re.compile(r"^(Exception from |Check '|FrontEnd API failed with|To facilitate|"
                    r"Model wasn't fully converted|Summary:|\[ GENERAL_ERROR \]$)")



def provide_targets() -> Iterable[TargetSpec]:
    """Entry point of the built-in OpenVINO driver."""
    for suffix, (device, configurations, _) in DEVICES.items():
        yield TargetSpec(
            name=f"openvino-{suffix}",
            factory="targets.openvino_target:OpenVinoTarget",
            kwargs={"device_key": suffix},
            configurations=configurations,
            summary=f"OpenVINO ONNX frontend compiled for the {device} device",
        )


def summarize_error(exc: BaseException) -> str:
    """OpenVINO's multi-line C++ exception text reduced to its informative lines."""
    text = _SOURCE_REFS.sub("", str(exc))
    lines = [line.strip(" -\t") for line in text.splitlines()]
    useful = [line for line in lines if line and not _NOISE.match(line)]
    return "; ".join(useful) or type(exc).__name__


def _numpy_dtype_name(value: np.ndarray) -> str:
    return "string" if value.dtype.kind in "USO" else value.dtype.name


def _dims_match(shape: tuple[int, ...], partial: Any) -> bool:
    if partial.rank.is_dynamic:
        return True
    if partial.rank.get_length() != len(shape):
        return False
    return all(not dim.is_static or dim.get_length() == got
               for dim, got in zip(partial, shape, strict=True))


#: (numpy dtype name, static shape) of a tensor input; None when not fully static
InputSignature = tuple[str, tuple[str, tuple[int, ...]] | None]


def _onnx_signature(value_info: onnx.ValueInfoProto) -> tuple[str, tuple[int, ...]] | None:
    import onnx

    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    dims = tensor_type.shape.dim
    if not tensor_type.elem_type or not all(d.HasField("dim_value") for d in dims):
        return None
    dtype = ("string" if tensor_type.elem_type == onnx.TensorProto.STRING
             else onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name)
    return dtype, tuple(d.dim_value for d in dims)


def _port_signature(port: Any) -> tuple[str, tuple[int, ...]] | None:
    partial = port.get_partial_shape()
    if partial.is_dynamic:
        return None
    ov_type = port.get_element_type().get_type_name()
    return OV_TO_NUMPY.get(ov_type, ov_type), tuple(partial.to_shape())


class OpenVinoExecutable(Executable):
    def __init__(self, compiled: Any, onnx_inputs: list[InputSignature],
                 onnx_outputs: list[str], placement: dict[str, Any]) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._prepared_request: Any = None  # created by the first run_prepared
        self._plain_outputs = all(
            port.get_element_type().get_type_name() not in {"string", *BIT_EXCHANGED}
            for port in compiled.outputs)
        self._onnx_inputs = [name for name, _ in onnx_inputs]
        self._placement = placement
        self._ports = self._map_inputs(onnx_inputs)
        self._outputs = self._map_outputs(onnx_outputs)
        self._bit_exchanged: set[str] = set()

    def _map_inputs(self, onnx_inputs: list[InputSignature]) -> dict[str, int]:
        """ONNX input name -> compiled input index.

        OpenVINO's frontend sometimes renames a parameter after the graph output it
        passes straight through (``Identity``, inference ``Dropout``): ``x`` becomes
        ``y``; it also drops inputs the graph never reads. A port that carries no
        ONNX input name is given the one unnamed ONNX input it can be: the one at
        its position when nothing was dropped, else the only one with its exact
        dtype and static shape. The record says so (``renamed_inputs``); anything
        more ambiguous stays unmapped and feeding it is an error.
        """
        ports = list(self._compiled.inputs)
        names = {name for name, _ in onnx_inputs}
        mapping = {name: index for index, port in enumerate(ports)
                   for name in port.get_names() if name in names}
        free = [i for i in range(len(ports)) if i not in mapping.values()]
        unnamed = [(name, sig) for name, sig in onnx_inputs if name not in mapping]
        renamed: dict[str, str] = {}
        for index in free:
            if len(ports) == len(onnx_inputs):
                candidates = [onnx_inputs[index][0]] if onnx_inputs[index][0] not in mapping \
                    else []
            else:
                candidates = [name for name, sig in unnamed
                              if sig is not None and sig == _port_signature(ports[index])]
            if len(candidates) == 1 and candidates[0] not in mapping:
                mapping[candidates[0]] = index
                renamed[candidates[0]] = ports[index].get_any_name()
        if renamed:
            self._placement["renamed_inputs"] = renamed
        return mapping

    def _map_outputs(self, onnx_outputs: list[str]) -> dict[str, int]:
        """ONNX output name -> compiled output index, by name only."""
        by_name: dict[str, int] = {}
        for index, port in enumerate(self._compiled.outputs):
            for name in port.get_names():
                by_name.setdefault(name, index)
        missing = [name for name in onnx_outputs if name not in by_name]
        if missing:
            raise TargetError(f"OpenVINO dropped the name(s) of output(s) {missing}; "
                              f"compiled outputs are named {sorted(by_name)}")
        return {name: by_name[name] for name in onnx_outputs}

    def _tensor(self, name: str, value: Any) -> Any:
        import openvino as ov

        port = self._compiled.inputs[self._ports[name]]
        ov_type = port.get_element_type().get_type_name()
        if not isinstance(value, np.ndarray):
            raise InputMismatchError(
                f"input {name!r}: {type(value).__name__} given; OpenVINO takes tensors only")
        want = OV_TO_NUMPY.get(ov_type, ov_type)
        got = _numpy_dtype_name(value)
        if got != want:
            raise InputMismatchError(f"input {name!r}: dtype {got}, model expects {want}")
        if not _dims_match(value.shape, port.get_partial_shape()):
            raise InputMismatchError(f"input {name!r}: shape {list(value.shape)}, "
                                     f"model expects {port.get_partial_shape()}")
        if ov_type in BIT_EXCHANGED:
            tensor = ov.Tensor(port.get_element_type(), ov.Shape(list(value.shape)))
            raw = packed_bytes(value)
            if raw:
                tensor.data.reshape(-1).view(np.uint8)[...] = np.frombuffer(raw, np.uint8)
            self._bit_exchanged.add(name)
            return tensor
        if value.dtype == object:  # the binding takes str arrays, not object arrays
            return np.asarray(value.tolist(), dtype=str)
        return value

    def _feeds(self, inputs: Mapping[str, Any]) -> dict[int, Any]:
        """Checked input tensors keyed by compiled input index (names may be renamed)."""
        unknown = sorted(set(inputs) - set(self._ports) - set(self._onnx_inputs))
        if unknown:
            raise InputMismatchError(
                f"unknown input name(s) {unknown}; the model takes {sorted(self._onnx_inputs)}")
        feeds: dict[int, Any] = {}
        for name, value in inputs.items():
            if value is None or name not in self._ports:
                continue  # an omitted optional, or an input the graph never reads
            feeds[self._ports[name]] = self._tensor(name, value)
        missing = sorted(port.get_any_name() for index, port in enumerate(self._compiled.inputs)
                         if index not in feeds)
        if missing:
            raise InputMismatchError(f"missing input(s) {missing}")
        return feeds

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = self._feeds(inputs)
        try:
            self._request.infer(feeds)
        except RuntimeError as exc:
            raise TargetError(f"OpenVINO inference failed: {summarize_error(exc)}") from exc
        return {name: self._read_output(self._request, name, index)
                for name, index in self._outputs.items()}

    def prepare(self, inputs: Mapping[str, Any]) -> list[tuple[int, Any]]:
        """Checked inputs as OpenVINO tensors (sharing the arrays' memory where it can),
        by compiled input index."""
        import openvino as ov

        prepared = []
        for index, value in self._feeds(inputs).items():
            if not isinstance(value, ov.Tensor):
                shared = value.dtype.kind not in "US"  # strings are always copied
                value = ov.Tensor(np.require(value, requirements="C") if shared else value,
                                  shared_memory=shared)
            prepared.append((index, value))
        return prepared

    def run_prepared(self, prepared: list[tuple[int, Any]]) -> dict[str, Any]:
        """Set the prepared tensors on a request of its own, then ``infer()``.

        The request is not the one ``run`` copies its inputs into, so ``run`` can
        never write into memory a prepared tensor shares with its array.
        """
        request = self._prepared_request
        if request is None:
            request = self._prepared_request = self._compiled.create_infer_request()
        try:
            for index, tensor in prepared:
                request.set_input_tensor(index, tensor)
            request.infer()
        except RuntimeError as exc:
            raise TargetError(f"OpenVINO inference failed: {summarize_error(exc)}") from exc
        if self._plain_outputs:  # numeric outputs: a copy of each, as _read_output makes
            return {name: request.get_output_tensor(index).data.copy()
                    for name, index in self._outputs.items()}
        return {name: self._read_output(request, name, index)
                for name, index in self._outputs.items()}

    def _read_output(self, request: Any, name: str, index: int) -> np.ndarray:
        tensor = request.get_output_tensor(index)
        ov_type = tensor.element_type.get_type_name()
        if ov_type == "string":
            return np.array(tensor.str_data, dtype=object).reshape(tuple(tensor.shape))
        if ov_type in BIT_EXCHANGED:
            self._bit_exchanged.add(name)
            raw = tensor.data.reshape(-1).view(np.uint8).tobytes() if tensor.byte_size else b""
            return from_packed_bytes(OV_TO_NUMPY[ov_type], tuple(tensor.shape), raw)
        return np.array(tensor.data, copy=True)

    def placement(self) -> dict[str, Any]:
        placement = dict(self._placement)
        if self._bit_exchanged:
            placement["bit_exchanged"] = sorted(self._bit_exchanged)
        return placement

    def close(self) -> None:
        self._request = self._prepared_request = None
        self._compiled = None


class OpenVinoTarget(Target):
    def __init__(self, device_key: str = "cpu", configuration: str = "default",
                 threads: int = 0) -> None:
        if device_key not in DEVICES:
            raise TargetError(f"unknown OpenVINO device {device_key!r}; known: {sorted(DEVICES)}")
        self.device_key = device_key
        self.device, configurations, default_hint = DEVICES[device_key]
        if configuration not in configurations:
            raise TargetError(f"openvino-{device_key} has no configuration {configuration!r}")
        self.configuration = configuration
        self.hint = CONFIG_HINTS.get(configuration, default_hint)
        self.threads = int(threads)
        self._core: Any = None
        name = f"openvino-{device_key}"
        own = EXPECTATIONS_DIR / f"{name}.{configuration}.toml"
        self.expectations_file = own if own.exists() else EXPECTATIONS_DIR / f"{name}.toml"

    @property
    def name(self) -> str:
        return f"openvino-{self.device_key}"

    def core(self) -> Any:
        if self._core is None:
            import openvino as ov

            self._core = ov.Core()
        return self._core

    @property
    def identity(self) -> TargetIdentity:
        try:
            version = metadata.version("openvino")
        except metadata.PackageNotFoundError:
            version = "not installed"
        return TargetIdentity(
            name=self.name, kind="framework", vendor="Intel", driver_version=driver_version(),
            runtime="openvino", runtime_version=version, device=self.device.lower(),
            configuration=self.configuration, driver_distribution="shipei",
        )

    def availability(self) -> Availability:
        try:
            core = self.core()
        except ImportError as exc:
            return Availability.no(f"openvino is not installed ({exc}); "
                                   "pip install 'shipei[openvino]'")
        devices = core.available_devices
        if not any(d == self.device or d.startswith(self.device + ".") for d in devices):
            return Availability.no(f"OpenVINO sees no {self.device} device on this machine "
                                   f"(available: {', '.join(devices) or 'none'})")
        needed = HINT_PRECISION[self.hint][1]
        capabilities = core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")
        if needed not in capabilities:
            return Availability.no(
                f"the {self.device} device lacks {needed} arithmetic "
                f"(OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)}); OpenVINO would "
                f"silently compute in another precision")
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        import onnx.defs

        return Capabilities(
            opset_min=1,
            opset_max=onnx.defs.onnx_opset_version(),
            dtypes=OPENVINO_DTYPES,
            devices=(self.device.lower(),),
            precision=HINT_PRECISION[self.hint][0],
            thread_safe=False,
            extra={"openvino_device": self.device, "inference_precision_hint": self.hint,
                   "inference_num_threads": self.threads},
        )

    def compile_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint,
                                  "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def compile(self, model: bytes) -> OpenVinoExecutable:
        import onnx

        try:
            proto = onnx.load_from_string(model)
        except Exception as exc:
            raise TargetError(f"not a readable ONNX model: {exc}") from exc
        core = self.core()
        try:
            ov_model = core.read_model(model, b"")
        except RuntimeError as exc:
            raise _classify("OpenVINO's ONNX frontend could not convert the model", exc) from exc
        try:
            compiled = core.compile_model(ov_model, self.device, self.compile_config())
        except RuntimeError as exc:
            raise _classify(f"OpenVINO could not compile the model for {self.device}",
                            exc) from exc
        effective = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if effective != self.hint:
            raise TargetError(f"asked {self.device} for {self.hint} inference, but the "
                              f"compiled model computes in {effective}")
        initializers = {init.name for init in proto.graph.initializer}
        placement = {"device": self.device,
                     "execution_devices": list(compiled.get_property("EXECUTION_DEVICES")),
                     "inference_precision": effective}
        return OpenVinoExecutable(
            compiled,
            [(i.name, _onnx_signature(i)) for i in proto.graph.input if i.name not in initializers],
            [o.name for o in proto.graph.output],
            placement,
        )


def _classify(what: str, exc: BaseException) -> TargetError:
    summary = summarize_error(exc)
    kind = UnsupportedModelError if _UNSUPPORTED.search(summary) else TargetError
    return kind(f"{what}: {summary}")
