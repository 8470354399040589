"""The output elements the ONNX spec leaves undefined, which no verdict may rest on.

The ONNX ``Cast`` spec: casting from floating point to fixed point is "undefined if OOR"
(out of range). A reference for those elements is only what the library that computed it
happened to do: onnx's generated reference for the int4/uint4/int2/uint2 casts follows
ml_dtypes, which wraps in 0.6 and maps to 0 in 0.7, so a runtime that wraps passed or
failed with the ml_dtypes version installed. :func:`undefined_elements` finds, for each
graph output a ``Cast``/``CastLike`` computes straight from a fed floating-point input into
an integer type, the elements whose input is NaN, infinite or out of the integer type's
range after truncation toward zero; the judge (:mod:`harness.verdicts.judge`) compares the rest and
says how many it left out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.isolation.tensors import onnx_values

if TYPE_CHECKING:
    import onnx

#: what a record says about the elements it did not judge
REASON = "out-of-range cast from floating point to an integer type"
CAST_OPS = ("Cast", "CastLike")


@functools.cache
def integer_bounds(elem_type: int) -> tuple[int, int] | None:
    """(min, max) of an ONNX integer element type, or None for any other type."""
    import onnx.helper

    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    name = dtype.name
    if name.startswith(("int", "uint")) and name.rstrip("0123456789") in ("int", "uint"):
        import ml_dtypes  # the sub-byte integers

        info = ml_dtypes.iinfo(dtype)
        return int(info.min), int(info.max)
    return None


def _floating(array: np.ndarray) -> bool:
    name = array.dtype.name
    return array.dtype.kind == "f" or name == "bfloat16" or name.startswith("float")


def out_of_range(values: Any, bounds: tuple[int, int]) -> np.ndarray:
    """Where floating-point ``values`` have no defined cast to an integer type."""
    x = np.asarray(onnx_values(np.asarray(values)), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.trunc(x)
        # ``max + 1`` as a float: exact where ``max`` itself (2**63 - 1) is not
        return ~np.isfinite(x) | (whole < bounds[0]) | (whole >= float(bounds[1]) + 1)


def undefined_elements(model: onnx.ModelProto, inputs: Mapping[str, Any]
                       ) -> dict[str, np.ndarray]:
    """Per graph output, a mask of the elements the ONNX spec leaves undefined (only
    outputs that have any)."""
    graph = model.graph
    casts = {out: node for node in graph.node if node.op_type in CAST_OPS
             and node.domain in ("", "ai.onnx") for out in node.output}
    if not casts:
        return {}
    masks: dict[str, np.ndarray] = {}
    for output in graph.output:
        node = casts.get(output.name)
        source = inputs.get(node.input[0]) if node is not None and node.input else None
        if not isinstance(source, np.ndarray) or not _floating(source):
            continue
        bounds = integer_bounds(output.type.tensor_type.elem_type)
        if bounds is None:
            continue
        mask = out_of_range(source, bounds)
        if mask.any():
            masks[output.name] = mask
    return masks
