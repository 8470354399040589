"""Tensors in and out of onnxruntime as raw bits, for every driver that runs it.

onnxruntime's numpy API takes and returns only the element types plain numpy holds;
bfloat16, the float8 family and the 4- and 2-bit integers travel as ``OrtValue`` objects
built from (and read back as) their ONNX raw bytes. The onnxruntime driver and the
serial board simulator both run models this way.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.isolation.tensors import (
    ELEMENT_TYPES,
    NUMPY_NATIVE,
    PROTO_NAMES,
    element_type,
    from_packed_bytes,
    packed_bytes,
)

#: the element types the capability probe finds onnxruntime's CPU provider takes (the
#: contract checks this declaration against the probe; complex, float4 and float6 are
#: onnxruntime's refusals)
ORT_DTYPES = ("bfloat16", "bool", "float16", "float32", "float64", "float8_e4m3fn",
              "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "int16",
              "int2", "int32", "int4", "int64", "int8", "string", "uint16", "uint2", "uint32",
              "uint4", "uint64", "uint8")
#: element types onnxruntime's numpy API takes and returns as they are
NUMPY_EXCHANGED = frozenset(NUMPY_NATIVE | {"string"})
#: onnxruntime's ``tensor(...)`` type strings -> element type names
ORT_TYPES = {f"tensor({PROTO_NAMES[kind.onnx].lower()})": kind.name
             for kind in ELEMENT_TYPES.values()}


#: what the driver does where onnxruntime's numpy API refuses a type (a user calling
#: ``InferenceSession.run`` with a bfloat16 array gets "Numpy_type 256 can't be converted
#: to MLDataType", and ``OrtValue.numpy()`` has no bfloat16 either)
RAW_IO_ADAPTATION = ("inputs and outputs of types onnxruntime's numpy API does not exchange "
                     "(bfloat16, float8, 4- and 2-bit integers) travel as OrtValues built from "
                     "and read back as their raw bits")


def ort_type_name(dtype: np.dtype) -> str:
    """onnxruntime's name of an element type: ``float``, ``bfloat16``, ``float8e4m3fn``."""
    return PROTO_NAMES[element_type(dtype).onnx].lower()


def needs_raw_io(args: Iterable[Any]) -> bool:
    """Whether any of a session's inputs/outputs (``NodeArg``) has a type the numpy API
    cannot exchange, so the session must run on OrtValues."""
    return any(ORT_TYPES.get(arg.type, "float32") not in NUMPY_EXCHANGED for arg in args)


def to_ort_value(value: Any) -> Any:
    """An OrtValue holding ``value``: numpy arrays as they are, the rest from raw bytes."""
    import onnxruntime as ort

    if not isinstance(value, np.ndarray):
        return value
    kind = element_type(value)
    if kind.name in NUMPY_EXCHANGED:
        # np.asarray, not np.ascontiguousarray: that makes a 0-d array [1] (another model)
        return ort.OrtValue.ortvalue_from_numpy(np.asarray(value, order="C"))
    data = packed_bytes(value)
    ort_value = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), kind.onnx)
    if data:
        ctypes.memmove(ort_value.data_ptr(), data, len(data))
    return ort_value


def from_ort_value(ort_value: Any) -> Any:
    """An OrtValue's content as numpy: raw bytes for the types numpy lacks."""
    if not ort_value.is_tensor():
        return ort_value.numpy()
    name = ORT_TYPES.get(ort_value.data_type(), "")
    if not name or name in NUMPY_EXCHANGED:
        return ort_value.numpy()
    size = ort_value.tensor_size_in_bytes()
    data = ctypes.string_at(ort_value.data_ptr(), size) if size else b""
    return from_packed_bytes(name, ort_value.shape(), data)


def run_raw(session: Any, output_names: list[str], feeds: dict[str, Any]) -> list[Any]:
    """``session.run`` over OrtValues: every ONNX type in and out by its bits."""
    values = session.run_with_ort_values(
        output_names, {name: to_ort_value(value) for name, value in feeds.items()})
    return [from_ort_value(value) for value in values]
