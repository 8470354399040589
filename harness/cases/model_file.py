"""A model file a user hands to ``shipei run --model``: checked, fed and judged.

:func:`check_model_file` refuses what is not an ONNX model before any target sees
it. :func:`random_feeds` makes the inputs from the model's declared inputs with a
fixed seed (a dynamic dimension becomes 1; a declared 0 stays 0).
:class:`ModelFileReference` computes the expected outputs on the declared
reference (:mod:`harness.modelzoo.reference`) in its own worker process, under
the same timeout as the target, so a model that hangs or crashes the reference
costs one case and never the run. When the reference refuses or fails,
:func:`run_unjudged` still tries the target: what the target did is recorded, and
the reference's failure is recorded beside it (``reference_error``), never blamed
on the target.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.cases.case import (
    Case,
    DataSet,
    LoadedCase,
    Outcome,
    outcome_from_exception,
    prepare_case,
)
from harness.driver.target import Capabilities
from harness.isolation.host import (
    HOST_FAILURES,
    CaseTimeout,
    Host,
    InfraError,
    RemoteError,
    WorkerCrash,
)

SEED = 20261125


class ModelFileError(Exception):
    pass


class ReferenceFailed(Exception):
    """The reference could not compute the expected outputs (one-line reason)."""


def check_model_file(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; raise :class:`ModelFileError` with a one-line reason."""
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"model file {path} is not a valid ONNX model "
                             f"({type(exc).__name__}: {_first_line(exc, 'unreadable')})"
                             ) from None
    if not model.graph.node:
        raise ModelFileError(f"model file {path} has an empty graph (corrupt or not ONNX)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelFileError(f"model file {path} fails the ONNX checker: "
                             f"{_first_line(exc, type(exc).__name__)}") from None
    return model


def _first_line(exc: BaseException, default: str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def case_name(path: Path) -> str:
    """The case a model file becomes: ``test_<file stem>``."""
    return "test_" + re.sub(r"\W", "_", path.stem)


#: the most elements the harness generates for one input (about 256 MiB of float32)
MAX_GENERATED_ELEMENTS = 1 << 26


def input_shape(value_info: onnx.ValueInfoProto) -> list[int]:
    """A declared input's shape: fixed dimensions as declared (0 included), symbolic or
    missing ones as 1. A negative dimension, or more than :data:`MAX_GENERATED_ELEMENTS`
    elements, is a :class:`ModelFileError`."""
    shape = [d.dim_value if d.HasField("dim_value") else 1
             for d in value_info.type.tensor_type.shape.dim]
    if any(dim < 0 for dim in shape):
        raise ModelFileError(f"input {value_info.name!r} declares a negative dimension "
                             f"{shape}")
    elements = math.prod(shape)
    if elements > MAX_GENERATED_ELEMENTS:
        raise ModelFileError(f"input {value_info.name!r} declares {elements:.3g} elements "
                             f"({shape}); the harness generates at most "
                             f"{MAX_GENERATED_ELEMENTS:,} per input")
    return shape


def random_input(value_info: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    tensor = value_info.type.tensor_type
    if value_info.type.WhichOneof("value") != "tensor_type" or not tensor.elem_type:
        raise ModelFileError(f"input {value_info.name!r}: cannot generate data for a "
                             "non-tensor input")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape = input_shape(value_info)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 8, shape).astype(dtype)
    raise ModelFileError(f"input {value_info.name!r}: cannot generate data of type {dtype}")


def random_feeds(model: onnx.ModelProto, seed: int = SEED) -> dict[str, np.ndarray]:
    """Inputs for every graph input that is not an initializer, from a fixed seed."""
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    return {vi.name: random_input(vi, rng) for vi in model.graph.input
            if vi.name not in initializers}


class ModelFileReference:
    """The declared reference in its own worker, started on first use; a context manager.

    :meth:`outputs` raises :class:`ReferenceFailed` for every way the reference can
    fail (unavailable, refused the model, timed out, crashed); its worker is
    restarted for the next model.
    """

    def __init__(self) -> None:
        self._reference: Any = None

    def __enter__(self) -> ModelFileReference:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _host(self) -> Host:
        from harness.modelzoo.reference import Reference, ReferenceUnavailable

        if self._reference is None:
            try:
                self._reference = Reference()
            except ReferenceUnavailable as exc:
                raise ReferenceFailed(f"the reference is unavailable: {exc}") from None
        return self._reference.host

    @property
    def request(self) -> str:
        from harness.modelzoo.reference import REFERENCE_TARGET

        return REFERENCE_TARGET

    def outputs(self, key: str, model: onnx.ModelProto, feeds: dict[str, Any],
                timeout: float) -> list[Any]:
        """The reference's outputs in graph output order, within ``timeout`` seconds."""
        if not model.graph.output:
            raise ReferenceFailed("the model declares no outputs: there is nothing to compare")
        try:
            result = self._host().run_case(key, model.SerializeToString(), [feeds], timeout)
        except CaseTimeout as exc:
            raise ReferenceFailed(f"the reference timed out after {exc.seconds:g} s") from None
        except WorkerCrash as exc:
            raise ReferenceFailed(f"the reference crashed: {exc}") from None
        except InfraError as exc:
            raise ReferenceFailed(f"the reference is unavailable: {exc}") from None
        except RemoteError as exc:
            detail = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
            raise ReferenceFailed(f"the reference refused the model at {exc.phase}: "
                                  f"{exc.exc_type}: {detail}"[:400]) from None
        (outputs,) = result["outputs"]
        missing = [o.name for o in model.graph.output if o.name not in outputs]
        if missing:
            raise ReferenceFailed(f"the reference returned no output(s) {missing}")
        return [outputs[o.name] for o in model.graph.output]

    def close(self) -> None:
        if self._reference is not None:
            self._reference.close()
            self._reference = None


def run_unjudged(host: Host, caps: Capabilities, suite: str, name: str,
                 model: onnx.ModelProto, feeds: dict[str, Any], timeout: float,
                 reference_error: str) -> Outcome:
    """Try the target on a model the reference could not compute.

    The case is prepared as every case is (:func:`harness.cases.case.prepare_case`: declared
    opsets, the capability probe). What the target did is its own: a skip, an error, a
    timeout or a crash keep their status. A target that ran cannot be judged without a
    reference: that is ``infra_error`` blamed on the harness (it could not deliver a
    verdict), never a pass and never the target's failure.
    """
    case = Case(suite=suite, name=name, load=lambda: LoadedCase(model, [DataSet(feeds, [])]))
    prepared = prepare_case(case, host, caps, timeout)
    if isinstance(prepared, Outcome):
        prepared.message = f"{prepared.message} ({reference_error})"[:600]
        return prepared
    try:
        result = host.run_case(prepared.key, prepared.model, prepared.feeds,
                               prepared.started + timeout - time.perf_counter())
    except HOST_FAILURES as exc:
        outcome = outcome_from_exception(exc, prepared.started)
        outcome.message = f"{outcome.message} ({reference_error})"[:600]
        return outcome
    (outputs,) = result["outputs"]
    timings = {"compile_s": result["compile_s"], "run_s": sum(result["run_s"]),
               "total_s": time.perf_counter() - prepared.started}
    return Outcome("infra_error",
                   f"not judged: {reference_error}; the target ran and returned {len(outputs)} "
                   f"output(s)", metrics={"target_ran": True}, timings=timings,
                   placement=result["placement"], blame="harness")
