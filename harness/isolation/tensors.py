"""ONNX tensor element types as raw bits: the one table every transport uses.

A tensor crosses a process, interpreter or machine boundary as three things:
its ONNX element type name, its shape and its bytes **laid out exactly as an
ONNX ``TensorProto.raw_data``** (little-endian; sub-byte types packed
low-bits-first: two 4-bit, four 2-bit or four 6-bit elements per 1, 1 and 3
bytes). Nothing numpy-version specific travels, so a worker under numpy 1.x,
another architecture or another machine reads it by the ONNX spec alone.

In memory, tensors are numpy arrays; the types numpy lacks (bfloat16, the
float8/float6/float4 family, int4/uint4, int2/uint2) are ``ml_dtypes`` arrays,
as ``onnx.numpy_helper`` makes them. A driver that hands a runtime raw buffers
uses :func:`storage_bits` (the same bits as plain unsigned integers) and
:func:`packed_bytes` (the ONNX packed layout). This module imports only numpy
(and ml_dtypes when installed), so it runs inside any worker.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.driver.target import InfraError


def preload_extended_types() -> None:
    """Import ml_dtypes now, where it is installed (see :func:`_ml_dtypes`): a worker does
    it while it waits for its first request, instead of in the middle of its cases."""
    _ml_dtypes()


@functools.cache
def _ml_dtypes() -> Any:
    """ml_dtypes, how numpy holds the types it lacks (None where it is not installed,
    as in some foreign worker environments). Imported on first need, not with this
    module: ml_dtypes 0.7 takes half a second to import, and a worker imports it after
    telling the test process it is ready (:func:`preload_extended_types`), while that
    process is still importing onnx and collecting."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - exercised in foreign environments only
        return None
    return ml_dtypes


class TensorCodecError(InfraError):
    """A tensor this process cannot represent or decode: the harness's gap, never the
    target's (recorded as ``infra_error`` with blame ``harness``)."""

    blame = "harness"


@dataclass(frozen=True)
class ElementType:
    """One ONNX tensor element type."""

    name: str  # the numpy / ml_dtypes name, which is also the wire name
    onnx: int  # TensorProto.DataType code
    bits: int  # bits per element in ONNX raw_data
    storage: str  # unsigned numpy type holding one element's bits ("" for strings)

    @property
    def packed(self) -> bool:
        return self.bits < 8


#: every ONNX tensor element type, by wire name (TensorProto codes of onnx 1.23)
ELEMENT_TYPES: dict[str, ElementType] = {e.name: e for e in (
    ElementType("float32", 1, 32, "uint32"),
    ElementType("uint8", 2, 8, "uint8"),
    ElementType("int8", 3, 8, "uint8"),
    ElementType("uint16", 4, 16, "uint16"),
    ElementType("int16", 5, 16, "uint16"),
    ElementType("int32", 6, 32, "uint32"),
    ElementType("int64", 7, 64, "uint64"),
    ElementType("string", 8, 0, ""),
    ElementType("bool", 9, 8, "uint8"),
    ElementType("float16", 10, 16, "uint16"),
    ElementType("float64", 11, 64, "uint64"),
    ElementType("uint32", 12, 32, "uint32"),
    ElementType("uint64", 13, 64, "uint64"),
    ElementType("complex64", 14, 64, "uint64"),
    ElementType("complex128", 15, 128, ""),  # no 128-bit integer: bytes only
    ElementType("bfloat16", 16, 16, "uint16"),
    ElementType("float8_e4m3fn", 17, 8, "uint8"),
    ElementType("float8_e4m3fnuz", 18, 8, "uint8"),
    ElementType("float8_e5m2", 19, 8, "uint8"),
    ElementType("float8_e5m2fnuz", 20, 8, "uint8"),
    ElementType("uint4", 21, 4, "uint8"),
    ElementType("int4", 22, 4, "uint8"),
    ElementType("float4_e2m1fn", 23, 4, "uint8"),
    ElementType("float8_e8m0fnu", 24, 8, "uint8"),
    ElementType("uint2", 25, 2, "uint8"),
    ElementType("int2", 26, 2, "uint8"),
    ElementType("float6_e2m3fn", 27, 6, "uint8"),
    ElementType("float6_e3m2fn", 28, 6, "uint8"),
)}
BY_ONNX_CODE: dict[int, ElementType] = {e.onnx: e for e in ELEMENT_TYPES.values()}
#: TensorProto.DataType enum names, by code (runtimes spell types after them)
PROTO_NAMES: dict[int, str] = dict(enumerate((
    "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING",
    "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16",
    "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4",
    "FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2")))
#: element types plain numpy holds without ml_dtypes
NUMPY_NATIVE = frozenset({"float32", "uint8", "int8", "uint16", "int16", "int32", "int64",
                          "bool", "float16", "float64", "uint32", "uint64", "complex64",
                          "complex128"})


#: element types by numpy dtype, filled as dtypes are met (``dtype.name`` is slow
#: enough to show in a run of thousands of small tensors)
_BY_DTYPE: dict[np.dtype, ElementType] = {}


def element_type(value: np.ndarray | np.dtype | str) -> ElementType:
    """The ONNX element type of an array, a dtype or a wire name."""
    if isinstance(value, np.ndarray):
        value = value.dtype
    if isinstance(value, np.dtype):
        known = _BY_DTYPE.get(value)
        if known is not None:
            return known
        name = "string" if value.kind in "OUS" else value.name
    else:
        name = value
    try:
        kind = ELEMENT_TYPES[name]
    except KeyError:
        raise TensorCodecError(f"{name!r} is not an ONNX tensor element type") from None
    if isinstance(value, np.dtype):
        _BY_DTYPE[value] = kind
    return kind


@functools.cache  # by wire name; a name that raises is not kept
def numpy_dtype(name: str) -> np.dtype:
    """The in-memory numpy dtype for a wire name (ml_dtypes for the types numpy lacks)."""
    kind = element_type(name)
    if kind.name == "string":
        return np.dtype(object)
    if kind.name in NUMPY_NATIVE:
        return np.dtype(kind.name)
    ml_dtypes = _ml_dtypes()
    extended = getattr(ml_dtypes, kind.name, None) if ml_dtypes is not None else None
    if extended is None:
        raise TensorCodecError(
            f"this process cannot hold {kind.name} tensors: "
            + ("ml_dtypes is not installed" if ml_dtypes is None
               else f"ml_dtypes {ml_dtypes.__version__} lacks {kind.name}"))
    return np.dtype(extended)


def storage_bits(array: np.ndarray) -> np.ndarray:
    """The same elements as unsigned integers holding their ONNX bit patterns.

    bfloat16 -> uint16, float8 -> uint8, int4/uint4/float4/int2/uint2/float6 -> uint8
    with the code in the low bits (one element per byte, unpacked).
    """
    kind = element_type(array)
    if not kind.storage:
        raise TensorCodecError(f"{kind.name} tensors have no integer storage view")
    bits = np.ascontiguousarray(array).view(kind.storage)
    if kind.packed:
        bits = bits & np.uint8((1 << kind.bits) - 1)
    return bits


def from_storage_bits(bits: np.ndarray, name: str) -> np.ndarray:
    """Inverse of :func:`storage_bits`: reinterpret unsigned codes as element type ``name``."""
    kind = element_type(name)
    codes = np.ascontiguousarray(bits, dtype=kind.storage)
    if kind.packed:
        codes = codes & np.uint8((1 << kind.bits) - 1)
    return codes.view(numpy_dtype(name))


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack ``bits``-wide codes (one per uint8) the ONNX way: element 0 in the lowest bits."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    stream = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes, one per uint8."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:count].copy()
    needed = (count * bits + 7) // 8
    if raw.size < needed:
        raise TensorCodecError(f"{raw.size} bytes hold fewer than {count} {bits}-bit elements")
    stream = np.unpackbits(raw[:needed], bitorder="little")[: count * bits]
    grouped = np.zeros((count, 8), dtype=np.uint8)
    grouped[:, :bits] = stream.reshape(count, bits)
    return np.packbits(grouped, axis=1, bitorder="little").reshape(-1)


def packed_bytes(array: np.ndarray) -> bytes:
    """The array's bytes as ONNX ``raw_data`` (little-endian, sub-byte types packed)."""
    kind = element_type(array)
    if kind.name == "string":
        raise TensorCodecError("string tensors have no raw byte layout")
    if kind.packed:
        return pack_codes(storage_bits(array), kind.bits)
    data = np.ascontiguousarray(array)
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and np.little_endian is False):
        data = data.astype(data.dtype.newbyteorder("<"))
    return data.tobytes()


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def from_packed_bytes(name: str, shape: tuple[int, ...] | list[int],
                      data: bytes | memoryview) -> np.ndarray:
    """Inverse of :func:`packed_bytes`: a writable array of element type ``name``."""
    kind = element_type(name)
    shape = tuple(int(d) for d in shape)
    count = element_count(shape)
    if kind.packed:
        return from_storage_bits(unpack_codes(data, kind.bits, count), name).reshape(shape)
    dtype = numpy_dtype(name)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise TensorCodecError(f"{name}{list(shape)} needs {expected} bytes, got {len(data)}")
    little = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    return np.frombuffer(data, dtype=little).astype(dtype, copy=True).reshape(shape)


def onnx_values(array: np.ndarray) -> np.ndarray:
    """The values ONNX defines for the array's elements, for judging: the floating
    types numpy lacks become float32 (exact for every 4-, 6-, 8- and 16-bit float),
    int4/uint4/int2/uint2 become int8/uint8; other arrays are returned as they are."""
    name = array.dtype.name
    if name in NUMPY_NATIVE or array.dtype.kind in "OUS":
        return array
    kind = element_type(name)
    if name.startswith(("int", "uint")):
        return array.astype(np.int8 if name.startswith("int") else np.uint8)
    if kind.name in ELEMENT_TYPES:
        return array.astype(np.float32)
    return array


def describe(value: Any) -> str:
    """A short type description for error messages."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype.name}{list(value.shape)}"
    return type(value).__name__
