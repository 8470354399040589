"""Judging outputs against references: allclose with figures, the way the ONNX
backend test runner judges them, plus the error figures a failure must carry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.isolation.tensors import onnx_values
from harness.verdicts.undefined import REASON as UNDEFINED_REASON

#: Minimum (rtol, atol) per declared precision. fp32 keeps the case's own tolerances.
PRECISION_FLOORS: dict[str, tuple[float, float]] = {
    "fp32": (0.0, 0.0),
    "fp16": (1e-2, 1e-3),
    "bf16": (2e-2, 1e-2),
    "int8": (5e-2, 5e-2),
}


def judged_precision(precision: str, placement: Mapping[str, Any]) -> str:
    """The precision whose floors judge a result: the configuration's, unless the result's
    placement says it did not run there (``cpu_only``: no operation reached the device
    whose reduced precision the configuration names, as a quantized model nncase leaves
    wholly on the K230's CPU), when it is judged as fp32."""
    return "fp32" if precision != "fp32" and placement.get("cpu_only") is True else precision


def effective_tolerance(rtol: float, atol: float, precision: str) -> tuple[float, float]:
    """Loosen a case's tolerances to what a reduced-precision configuration can meet."""
    floor_rtol, floor_atol = PRECISION_FLOORS.get(precision, (0.0, 0.0))
    return max(rtol, floor_rtol), max(atol, floor_atol)


@dataclass
class Judgement:
    passed: bool
    message: str = ""
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    mismatched: int = 0
    compared: int = 0
    outputs: list[str] = field(default_factory=list)
    #: elements left unjudged: the ONNX spec does not define them
    #: (:mod:`harness.verdicts.undefined`)
    undefined: int = 0

    def metrics(self) -> dict[str, Any]:
        figures = {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "mismatched_elements": self.mismatched,
            "compared_elements": self.compared,
        }
        if self.undefined:
            figures["undefined_elements"] = self.undefined
        return figures

    def undefined_note(self) -> str:
        """What a record says about the elements left unjudged ('' when none were)."""
        if not self.undefined:
            return ""
        return (f"judged {self.compared} of {self.compared + self.undefined} elements; "
                f"{self.undefined} are undefined by the ONNX spec ({UNDEFINED_REASON})")

    def absorb(self, other: Judgement) -> None:
        self.max_abs_error = max(self.max_abs_error, other.max_abs_error)
        self.max_rel_error = max(self.max_rel_error, other.max_rel_error)
        self.mismatched += other.mismatched
        self.compared += other.compared
        self.undefined += other.undefined
        if not other.passed:
            self.passed = False
            self.message = self.message or other.message


class _Mismatch(Exception):
    pass


def _is_floating(dtype: np.dtype) -> bool:
    return dtype.kind in "fc" or dtype.name == "bfloat16" or dtype.name.startswith("float")


def _as_float(array: np.ndarray) -> np.ndarray:
    """The ONNX-defined values of the elements, in a type numpy computes with (complex
    values as (real, imaginary) pairs)."""
    values = onnx_values(array)
    if values.dtype.kind == "c":
        return np.stack([values.real, values.imag], axis=-1)
    return values


def _compare_tensor(name: str, expected: Any, actual: Any, rtol: float, atol: float,
                    precision: str = "fp32", undefined: np.ndarray | None = None
                    ) -> Judgement:
    if not isinstance(actual, np.ndarray):
        actual = np.asarray(actual)
    expected = np.asarray(expected)
    if tuple(actual.shape) != tuple(expected.shape):
        raise _Mismatch(f"{name}: shape {list(actual.shape)}, expected {list(expected.shape)}")
    if undefined is not None and undefined.shape == expected.shape and undefined.any():
        judged = _compare_tensor(name, _defined(expected, undefined),
                                 _defined(actual, undefined), rtol, atol, precision)
        judged.undefined = int(np.count_nonzero(undefined))
        return judged
    if expected.dtype == object or expected.dtype.kind in "US":
        equal = np.asarray(actual == expected, dtype=bool)
        bad = int(equal.size - np.count_nonzero(equal))
        ok = bad == 0
        return Judgement(ok, "" if ok else f"{name}: {bad} string element(s) differ",
                         mismatched=bad, compared=int(expected.size))
    if actual.dtype != expected.dtype:
        raise _Mismatch(f"{name}: dtype {actual.dtype}, expected {expected.dtype}")
    if actual.tobytes() == expected.tobytes():  # bit for bit the reference: equal however
        return Judgement(passed=True, compared=int(expected.size), outputs=[name])  # judged
    if _is_floating(expected.dtype):  # integer and boolean outputs stay exact
        rtol, atol = effective_tolerance(rtol, atol, precision)
    exp = _as_float(expected)
    act = _as_float(actual)
    if exp.dtype.kind == "b":
        exp, act = exp.astype(np.int8), act.astype(np.int8)
    if exp.dtype.kind in "iu":
        exp, act = exp.astype(np.float64), act.astype(np.float64)
    if expected.dtype.name == "bfloat16":
        rtol = max(rtol, 2.0**-6)  # two bfloat16 ULPs, as the ONNX runner allows
    exp64 = exp.astype(np.float64)
    act64 = act.astype(np.float64)
    if np.array_equal(act64, exp64, equal_nan=True):  # the common case, judged at once
        return Judgement(passed=True, max_abs_error=0.0, max_rel_error=0.0, mismatched=0,
                         compared=int(exp64.size), outputs=[name])
    close = np.isclose(act64, exp64, rtol=rtol, atol=atol, equal_nan=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(act64 - exp64)
        both_nan = np.isnan(act64) & np.isnan(exp64)
        same_inf = np.isinf(exp64) & (act64 == exp64)
        diff = np.where(both_nan | same_inf, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = np.where(diff == 0, 0.0, diff / np.abs(exp64))
    bad = int(close.size - np.count_nonzero(close))
    judgement = Judgement(
        passed=bad == 0,
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        max_rel_error=float(rel.max()) if rel.size else 0.0,
        mismatched=bad,
        compared=int(close.size),
        outputs=[name],
    )
    if bad:
        judgement.message = (
            f"{name}: {bad}/{close.size} elements outside rtol={rtol:g} atol={atol:g}; "
            f"max abs error {judgement.max_abs_error:.6g}, "
            f"max rel error {judgement.max_rel_error:.6g}"
        )
    return judgement


def _defined(array: np.ndarray, undefined: np.ndarray) -> np.ndarray:
    """The elements of ``array`` the spec defines, flattened (in its own element type,
    read through its ONNX values where numpy cannot index it)."""
    try:
        return array[~undefined]
    except (TypeError, ValueError):
        return np.asarray(onnx_values(array))[~undefined]


def _compare_value(name: str, expected: Any, actual: Any, rtol: float, atol: float,
                   precision: str = "fp32") -> Judgement:
    if expected is None:
        if actual is not None:
            raise _Mismatch(f"{name}: expected an empty optional, got a value")
        return Judgement(True)
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            raise _Mismatch(f"{name}: expected a sequence, got {type(actual).__name__}")
        if len(actual) != len(expected):
            raise _Mismatch(f"{name}: sequence of {len(actual)}, expected {len(expected)}")
        total = Judgement(True)
        for i, (exp, act) in enumerate(zip(expected, actual, strict=True)):
            total.absorb(_compare_value(f"{name}[{i}]", exp, act, rtol, atol, precision))
        return total
    if actual is None:
        raise _Mismatch(f"{name}: no value returned")
    return _compare_tensor(name, expected, actual, rtol, atol, precision)


def compare_outputs(expected: Sequence[Any], actual: dict[str, Any],
                    output_names: Sequence[str], rtol: float, atol: float,
                    precision: str = "fp32",
                    undefined: Mapping[str, np.ndarray] | None = None) -> Judgement:
    """Compare outputs given in graph order against a target's named outputs.

    ``precision`` is the target's declared compute precision: floating-point
    outputs are judged with tolerances no tighter than it can meet
    (:func:`effective_tolerance`); integer and boolean outputs stay exact.
    ``undefined`` masks, per output, elements the ONNX spec leaves undefined
    (:func:`harness.verdicts.undefined.undefined_elements`): they are not judged, only counted.
    """
    undefined = undefined or {}
    total = Judgement(True)
    missing = [n for n in output_names[: len(expected)] if n not in actual]
    if missing:
        return Judgement(False, f"missing output(s) {missing}; got {sorted(actual)}")
    for name, exp in zip(output_names, expected, strict=False):
        try:
            value, mask = actual[name], undefined.get(name)
            total.absorb(_compare_tensor(name, exp, value, rtol, atol, precision, mask)
                         if mask is not None and isinstance(exp, np.ndarray)
                         else _compare_value(name, exp, value, rtol, atol, precision))
        except _Mismatch as mismatch:
            return Judgement(False, str(mismatch), max_abs_error=float("inf"),
                             max_rel_error=float("inf"))
    return total
