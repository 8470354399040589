"""Apache TVM targets: ``tvm-llvm`` (CPU) and ``tvm-cuda``.

Compilation: apache-tvm's Relax ONNX frontend (``relax.frontend.onnx.from_onnx``,
initializers folded in as constants), ``relax.transform.DecomposeOpsForInference``
(batch/layer norm and friends in their inference form), then ``tvm.compile`` with
its default Relax pipeline (``LegalizeOps`` lowers every Relax op to TIR, then
memory planning and VM lowering) for the ``llvm`` or ``cuda`` target; the result
runs on ``relax.VirtualMachine``.

Compiled artifacts are cached on disk, keyed by sha256(model bytes), the TVM target
string, this driver's pipeline version and the TVM version: ``<key>.so`` (the
exported library) and ``<key>.json`` (what was compiled, by which TVM, how long it
took). A second run of the same suite loads the library instead of compiling;
``placement()`` says which (``cache_hit``). An unreadable cache entry is replaced,
never trusted. The cache lives in ``cache_dir`` (option), else
``$SHIPEI_CACHE_DIR/tvm`` (default ``~/.cache/shipei/tvm``); ``cache=false``
disables it.

Options (``--target tvm-llvm,threads=2,cache=false``):

- ``threads``: ``TVM_NUM_THREADS`` of the runtime thread pool (default: half the
  CPUs this process may use, at least 1; TVM's pool spins, and a 2-core machine
  also runs the harness and the reference).
- ``cache`` (default true), ``cache_dir``.

Output values: a Relax ``Shape`` (what ``Shape`` and a few shape computations
return) becomes an integer array of the dtype the ONNX model declares for that
output, which is exact; ``placement()`` lists such outputs under
``shape_outputs``. Nothing else is converted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import cache as shipei_cache
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
from harness.isolation.tensors import (
    TensorCodecError,
    element_type,
    from_packed_bytes,
    from_storage_bits,
    packed_bytes,
    storage_bits,
)
from harness.results.record_files import now_iso, write_json
from targets.common import EXPECTATIONS_DIR, driver_version

if TYPE_CHECKING:  # onnx is imported where it is used: discovering targets must not
    import onnx  # import it (the test process launches its workers before it needs onnx)

#: bump when the compilation steps change, so old cache entries are not reused
PIPELINE_VERSION = "1"

#: target suffix -> (TVM target string, device kind)
DEVICES: dict[str, tuple[str, str]] = {"llvm": ("llvm", "cpu"), "cuda": ("cuda", "gpu")}

#: the element types the capability probe finds TVM's ONNX frontend and llvm build take
#: (the contract checks this against the probe): complex and string are refused by the
#: frontend, float6 by the compiler. int2/uint2 pass the probe (an Identity hands its
#: input back) although TVM computes nothing else on them (see ONNX_LAYOUT_TYPES)
TVM_DTYPES = (
    "bfloat16", "bool", "float16", "float32", "float4_e2m1fn", "float64", "float8_e4m3fn",
    "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "int16", "int2",
    "int32", "int4", "int64", "int8", "uint16", "uint2", "uint32", "uint4", "uint64", "uint8",
)



def _tvm_version() -> str:
    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        return "not installed"


def default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def provide_targets() -> Iterable[TargetSpec]:
    """Entry point of the built-in TVM driver."""
    for suffix, (tvm_target, _) in DEVICES.items():
        yield TargetSpec(
            name=f"tvm-{suffix}",
            factory="targets.tvm_target:TvmTarget",
            kwargs={"device_key": suffix},
            summary=f"Apache TVM Relax ONNX frontend compiled for {tvm_target}",
        )


def _onnx_dtype(value_info: onnx.ValueInfoProto) -> str | None:
    import onnx

    tensor_type = value_info.type.tensor_type if value_info.type.HasField("tensor_type") else None
    if tensor_type is None or not tensor_type.elem_type:
        return None
    if tensor_type.elem_type == onnx.TensorProto.STRING:
        return "string"
    return onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name


def _onnx_dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    if not value_info.type.HasField("tensor_type"):
        return None
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


class ModelSignature:
    """The ONNX graph's inputs (initializers excluded) and outputs, in order."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        initializers = {init.name for init in proto.graph.initializer}
        self.inputs = [(vi.name, _onnx_dtype(vi), _onnx_dims(vi))
                       for vi in proto.graph.input if vi.name not in initializers]
        self.outputs = [(vi.name, _onnx_dtype(vi)) for vi in proto.graph.output]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [list(i) for i in self.inputs],
                "outputs": [list(o) for o in self.outputs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSignature:
        signature = cls.__new__(cls)
        signature.inputs = [(n, d, s) for n, d, s in data["inputs"]]
        signature.outputs = [(n, d) for n, d in data["outputs"]]
        return signature


class TvmExecutable(Executable):
    def __init__(self, library: Any, device: Any, signature: ModelSignature,
                 placement: dict[str, Any]) -> None:
        from tvm import relax

        self._vm = relax.VirtualMachine(library, device)
        self._library = library
        self._device = device
        self._signature = signature
        self._placement = placement
        self._shape_outputs: set[str] = set()

    def _arguments(self, inputs: Mapping[str, Any]) -> list[Any]:

        expected = {name for name, _, _ in self._signature.inputs}
        unknown = sorted(set(inputs) - expected)
        if unknown:
            raise InputMismatchError(
                f"unknown input name(s) {unknown}; the model takes {sorted(expected)}")
        arguments = []
        for name, dtype, dims in self._signature.inputs:
            value = inputs.get(name)
            if value is None:
                raise InputMismatchError(f"missing input {name!r} (the TVM build takes every "
                                         "graph input; an omitted optional input is not "
                                         "supported)")
            if not isinstance(value, np.ndarray):
                raise InputMismatchError(
                    f"input {name!r}: {type(value).__name__} given; TVM takes tensors only")
            if dtype is not None and value.dtype.name != dtype:
                raise InputMismatchError(
                    f"input {name!r}: dtype {value.dtype.name}, model expects {dtype}")
            if dims is not None and (len(dims) != value.ndim or any(
                    want is not None and want != got
                    for want, got in zip(dims, value.shape, strict=True))):
                raise InputMismatchError(f"input {name!r}: shape {list(value.shape)}, "
                                         f"model expects {dims}")
            arguments.append(_to_tvm(value, self._device))
        return arguments

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        arguments = self._arguments(inputs)
        try:
            result = self._vm["main"](*arguments)
        except Exception as exc:
            raise TargetError(f"TVM execution failed: {_first_line(exc)}") from exc
        if len(self._signature.outputs) == 1:
            result = [result]
        elif not _is_sequence(result):
            raise TargetError(f"TVM returned {type(result).__name__}, expected "
                              f"{len(self._signature.outputs)} outputs")
        values = list(result)
        if len(values) != len(self._signature.outputs):
            raise TargetError(f"TVM returned {len(values)} outputs, the model has "
                              f"{len(self._signature.outputs)}")
        return {name: self._to_numpy(name, dtype, value)
                for (name, dtype), value in zip(self._signature.outputs, values, strict=True)}

    def _to_numpy(self, name: str, dtype: str | None, value: Any) -> Any:
        import tvm

        if isinstance(value, tvm.runtime.Tensor):
            return _from_tvm(value)
        if _is_shape(value):
            if dtype is None or np.dtype(dtype).kind not in "iu":
                raise TargetError(f"output {name!r}: TVM returned a shape for a {dtype} output")
            self._shape_outputs.add(name)
            return np.asarray(list(value), dtype=dtype)
        if _is_sequence(value):
            return [self._to_numpy(name, None, item) for item in value]
        raise TargetError(f"output {name!r}: cannot read a TVM {type(value).__name__}")

    def placement(self) -> dict[str, Any]:
        placement = dict(self._placement)
        if self._shape_outputs:
            placement["shape_outputs"] = sorted(self._shape_outputs)
        return placement

    def close(self) -> None:
        self._vm = None
        self._library = None


#: compiled modules a worker keeps loaded: loading the same module again on every compile
#: grew the worker by about 1 MiB per compile (the contract's resource check)
LOADED_MODULES_KEPT = 256

#: 4-bit integer types TVM stores packed with element 0 in the HIGH nibble (the reverse of
#: ONNX); its float4_e2m1fn packing is done by TVM's own copyfrom/numpy
TVM_NIBBLE_TYPES = ("int4", "uint4")
#: 2-bit types: TVM's tensors hold them in ceil(n / 4) bytes and define no element order
#: of their own, so they are handed over in ONNX's (element 0 in the lowest bits). TVM
#: 0.27 cannot run them: its VM refuses to allocate a 2-bit tensor ("Check failed:
#: dtype.bits % 8 == 0") and compiled code reads 2-bit inputs one byte per element, past
#: the buffer's end; the capability probe records that refusal as TVM's own
ONNX_LAYOUT_TYPES = ("int2", "uint2")
#: packed types whose TVM memory layout the driver does not know: a harness gap, said so
#: (TVM's compiler refuses float6 before any tensor is made)
UNKNOWN_LAYOUT = ("float6_e2m3fn", "float6_e3m2fn")


def _to_tvm(value: np.ndarray, device: Any) -> Any:
    """A TVM tensor holding ``value``'s bits in TVM's own layout."""
    import tvm

    name = value.dtype.name
    if name in UNKNOWN_LAYOUT:
        raise TensorCodecError(f"the TVM driver does not know TVM's memory layout of {name}")
    if name in ONNX_LAYOUT_TYPES:
        data = np.frombuffer(packed_bytes(value), dtype=np.uint8)
    elif name in TVM_NIBBLE_TYPES:
        codes = storage_bits(value).reshape(-1)
        if codes.size % 2:
            codes = np.append(codes, np.uint8(0))
        data = np.ascontiguousarray((codes[0::2] << 4) | codes[1::2], dtype=np.uint8)
    else:
        return tvm.runtime.tensor(np.require(value, requirements="C"), device)
    tensor = tvm.runtime.empty(value.shape, name, device)
    _copy_bytes(tensor, data, into_tensor=True)
    return tensor


def _from_tvm(tensor: Any) -> np.ndarray:
    """A TVM tensor's content as numpy, unpacking TVM's sub-byte integer layouts."""
    name = str(tensor.dtype)
    if name in UNKNOWN_LAYOUT:
        raise TensorCodecError(f"the TVM driver does not know TVM's memory layout of {name}")
    if name not in TVM_NIBBLE_TYPES and name not in ONNX_LAYOUT_TYPES:
        return tensor.numpy()
    shape = tuple(int(d) for d in tensor.shape)
    count = int(np.prod(shape, dtype=np.int64))
    data = np.empty((count * element_type(name).bits + 7) // 8, dtype=np.uint8)
    _copy_bytes(tensor, data, into_tensor=False)
    if name in ONNX_LAYOUT_TYPES:
        return from_packed_bytes(name, shape, data.tobytes())
    codes = np.empty(data.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = data >> 4, data & 0x0F
    return from_storage_bits(codes[:count], name).reshape(shape)


def _copy_bytes(tensor: Any, data: np.ndarray, into_tensor: bool) -> None:
    """Copy raw bytes between a numpy buffer and a TVM tensor's storage."""
    import ctypes

    from tvm.runtime import _ffi_api

    copy = _ffi_api.TVMTensorCopyFromBytes if into_tensor else _ffi_api.TVMTensorCopyToBytes
    copy(tensor, data.ctypes.data_as(ctypes.c_void_p), data.size)


def _is_shape(value: Any) -> bool:
    return type(value).__name__ == "Shape"


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "Array"


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip() and not line.startswith(("Traceback", "  File", "    ")):
            return line.strip()[:400]
    return type(exc).__name__


class TvmTarget(Target):
    def __init__(self, device_key: str = "llvm", configuration: str = "default",
                 threads: int = 0, cache: bool = True, cache_dir: str = "") -> None:
        if device_key not in DEVICES:
            raise TargetError(f"unknown TVM device {device_key!r}; known: {sorted(DEVICES)}")
        self.device_key = device_key
        self.tvm_target, self.device_kind = DEVICES[device_key]
        self.configuration = configuration
        self.threads = int(threads) or default_threads()
        self.cache = bool(cache)
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._loaded: dict[str, tuple[Any, ModelSignature]] = {}
        self.expectations_file = EXPECTATIONS_DIR / f"tvm-{device_key}.toml"

    @property
    def cache_dir(self) -> Path:
        """``cache_dir`` if given, else ``$SHIPEI_CACHE_DIR/tvm`` (``~/.cache/shipei/tvm``)."""
        if self._cache_dir is None:
            self._cache_dir = shipei_cache.cache_dir("tvm")
        return self._cache_dir

    def _tvm(self) -> Any:
        """Import TVM with the thread pool limited (read when the pool starts)."""
        os.environ["TVM_NUM_THREADS"] = str(self.threads)
        import tvm

        return tvm

    def _device(self) -> Any:
        tvm = self._tvm()
        return tvm.cpu(0) if self.device_key == "llvm" else tvm.cuda(0)

    @property
    def identity(self) -> TargetIdentity:
        return TargetIdentity(
            name=f"tvm-{self.device_key}", kind="framework", vendor="Apache Software Foundation",
            driver_version=driver_version(), runtime="apache-tvm",
            runtime_version=_tvm_version(), device=self.device_kind,
            configuration=self.configuration, driver_distribution="shipei",
        )

    def availability(self) -> Availability:
        try:
            tvm = self._tvm()
            from tvm.relax.frontend import onnx as _  # noqa: F401
        except ImportError as exc:
            return Availability.no(f"apache-tvm is not installed ({exc}); "
                                   "pip install 'shipei[tvm]'")
        if self.device_key == "cuda":
            if not tvm.runtime.enabled("cuda"):
                return Availability.no("this apache-tvm build has no CUDA runtime")
            if not tvm.cuda(0).exist:
                return Availability.no("no CUDA device on this machine (tvm.cuda(0).exist is "
                                       "false)")
        return Availability.yes()

    def capabilities(self) -> Capabilities:
        import onnx.defs

        return Capabilities(
            opset_min=1,
            opset_max=onnx.defs.onnx_opset_version(),
            dtypes=TVM_DTYPES,
            devices=(self.device_kind,),
            precision="fp32",
            thread_safe=False,
            extra={"tvm_target": self.tvm_target, "tvm_num_threads": self.threads,
                   "cache": self.cache, "cache_dir": str(self.cache_dir) if self.cache else "",
                   "pipeline_version": PIPELINE_VERSION,
                   "compile_bound": True},  # shipei run compiles on every core (-n auto)
        )

    # -- compilation -----------------------------------------------------------------
    def cache_key(self, model: bytes) -> str:
        parts = {"model_sha256": hashlib.sha256(model).hexdigest(), "target": self.tvm_target,
                 "pipeline": PIPELINE_VERSION, "tvm": _tvm_version(),
                 "machine": platform.machine()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def compile(self, model: bytes) -> TvmExecutable:
        import onnx

        try:
            proto = onnx.load_from_string(model)
        except Exception as exc:
            raise TargetError(f"not a readable ONNX model: {exc}") from exc
        key = self.cache_key(model)
        placement: dict[str, Any] = {"tvm_target": self.tvm_target, "cache_hit": False}
        if self.cache:
            placement["cache_key"] = key
            loaded = self._load_cached(key, placement)
            if loaded is not None:
                library, signature = loaded
                placement["cache_hit"] = True
                return TvmExecutable(library, self._device(), signature, placement)
        signature = ModelSignature(proto)
        started = time.perf_counter()
        library = self._build(proto)
        placement["build_s"] = round(time.perf_counter() - started, 4)
        if self.cache:
            library = self._store(key, library, signature, placement)
        return TvmExecutable(library, self._device(), signature, placement)

    def _build(self, proto: onnx.ModelProto) -> Any:
        import warnings

        tvm = self._tvm()
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = from_onnx(proto, keep_params_in_input=False)
        except tvm.error.OpNotImplemented as exc:
            raise UnsupportedModelError(f"TVM's ONNX frontend: {_first_line(exc)}") from exc
        except Exception as exc:
            raise TargetError(f"TVM's ONNX frontend could not convert the model: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
        try:
            mod = relax.transform.DecomposeOpsForInference()(mod)
            return tvm.compile(mod, target=self.tvm_target)
        except Exception as exc:
            raise TargetError(f"TVM could not compile the model for {self.tvm_target}: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.cache_dir / f"{key}.so", self.cache_dir / f"{key}.json"

    def _load_cached(self, key: str, placement: dict[str, Any]
                     ) -> tuple[Any, ModelSignature] | None:
        if key in self._loaded:  # loaded once per worker: a module TVM loads is never freed
            placement["cache_hit_in_memory"] = True
            return self._loaded[key]
        library_path, meta_path = self._paths(key)
        if not (library_path.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            signature = ModelSignature.from_dict(meta["signature"])
            library = self._tvm().runtime.load_module(str(library_path))
        except Exception as exc:  # a torn or foreign file: rebuild, and say so
            placement["cache_discarded"] = f"{type(exc).__name__}: {_first_line(exc)}"
            for path in (library_path, meta_path):
                path.unlink(missing_ok=True)
            return None
        if len(self._loaded) >= LOADED_MODULES_KEPT:
            self._loaded.pop(next(iter(self._loaded)))
        self._loaded[key] = (library, signature)
        return library, signature

    def _store(self, key: str, executable: Any, signature: ModelSignature,
               placement: dict[str, Any]) -> Any:
        """Export the library atomically; the in-memory executable keeps serving this run."""
        library_path, meta_path = self._paths(key)
        tmp = library_path.with_name(f".{key}.{os.getpid()}.so")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            executable.export_library(str(tmp))
            os.replace(tmp, library_path)
            write_json(meta_path, {
                "cache_key": key, "signature": signature.to_dict(),
                "tvm_version": _tvm_version(), "tvm_target": self.tvm_target,
                "pipeline_version": PIPELINE_VERSION, "build_s": placement.get("build_s"),
                "created_at": now_iso(),
            })
        except Exception as exc:  # a full disk costs the cache, not the case
            with contextlib.suppress(OSError):
                tmp.unlink()
            placement["cache_store_failed"] = f"{type(exc).__name__}: {_first_line(exc)}"
            return executable
        return executable
