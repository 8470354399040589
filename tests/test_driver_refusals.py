"""A refusal names who refused: the runtime, its converter, the driver or the harness
(issue 27, item 2). A driver's own limit is never recorded as the runtime's refusal."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.probe import ACCEPTED, REFUSED, DtypeProbe
from harness.driver.target import (
    REFUSERS,
    Executable,
    TargetError,
    UnsupportedModelError,
    refused_by_of,
)
from harness.isolation.host import InlineHost
from harness.results.build import build_record
from harness.results.case_record import CaseRecord
from targets.onnxruntime_target import OnnxRuntimeTarget


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))


def test_the_refuser_travels_in_the_message_and_through_pickling():
    refusal = UnsupportedModelError("no Trilu mapping", refused_by="converter")
    assert str(refusal) == "[refused by: converter] no Trilu mapping"
    assert refused_by_of(str(pickle.loads(pickle.dumps(refusal)))) == "converter"
    assert str(TargetError("plain")) == "plain" and refused_by_of("plain") == ""
    assert REFUSERS == ("runtime", "converter", "driver", "harness")
    with pytest.raises(ValueError, match="refused_by must be one of"):
        TargetError("x", refused_by="vendor")


class _Picky(Executable):
    def __init__(self, inner: Executable) -> None:
        self.inner = inner

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if any(getattr(v, "dtype", None) == np.bool_ for v in inputs.values()):
            raise UnsupportedModelError("this driver cannot carry bool", refused_by="driver")
        return self.inner.run(inputs)


class PickyTarget(OnnxRuntimeTarget):
    """onnxruntime on the CPU behind a driver that refuses bool tensors itself and
    whose 'converter' has no Trilu: refusals of known origin, on a real runtime."""

    def compile(self, model: bytes) -> Executable:
        if b"Trilu" in model:
            raise UnsupportedModelError("the converter has no Trilu", refused_by="converter")
        return _Picky(super().compile(model))


def _case(op: str, elem: int, values: np.ndarray) -> Case:
    def load() -> LoadedCase:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"])], op.lower(),
            [helper.make_tensor_value_info("x", elem, list(values.shape))],
            [helper.make_tensor_value_info("y", elem, list(values.shape))])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 8
        return LoadedCase(model, [DataSet({"x": values}, [values])])

    return Case("refusals", f"test_{op.lower()}", load, rtol=0.0, atol=0.0)


def _raw(case: Case, host: InlineHost, caps: Any) -> dict[str, Any]:
    """The record as records.jsonl holds it."""
    outcome = execute_case(case, host, caps, timeout=60)
    return build_record("picky", case.suite, case.name, outcome, None, True, {}, 0.0, 0)


def _record(case: Case, host: InlineHost, caps: Any) -> CaseRecord:
    return CaseRecord.from_dict(_raw(case, host, caps))


def test_a_driver_limit_is_recorded_as_the_drivers_refusal_not_the_runtimes():
    target = PickyTarget()
    host, caps = InlineHost(target), target.capabilities()
    probe = DtypeProbe(host, caps)
    verdict = probe.verdict("bool", 60)
    assert verdict.verdict == REFUSED and verdict.refused_by == "driver"
    assert probe.verdict("int32", 60).verdict == ACCEPTED
    skipped = _record(_case("Not", TensorProto.BOOL, np.array([True, False])), host, caps)
    assert skipped.status == "skip" and skipped.refused_by == "driver"
    assert "[refused by: driver]" in skipped.message
    assert "the driver refuses bool tensors" in skipped.message  # not "the runtime"
    assert "the runtime refuses" not in skipped.message
    assert skipped.to_dict()["refused_by"] == "driver"
    raw = _raw(_case("Not", TensorProto.BOOL, np.array([True, False])), host, caps)
    assert raw["refused_by"] == "driver"  # in records.jsonl itself, not only once typed


def test_a_converter_refusal_is_the_converters_and_a_pass_names_nobody():
    target = PickyTarget()
    host, caps = InlineHost(target), target.capabilities()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    refused = _record(_case("Trilu", TensorProto.FLOAT, x), host, caps)
    assert refused.status == "error" and refused.refused_by == "converter"
    passed = _record(_case("Neg", TensorProto.FLOAT, x), host, caps)
    assert passed.status == "fail" and passed.refused_by == ""  # Neg(x) != x: judged
    assert "refused_by" not in passed.to_dict()


def test_a_bare_runtime_error_in_the_probe_is_the_runtimes_refusal(cache):
    target = OnnxRuntimeTarget()
    host = InlineHost(target)
    refused = DtypeProbe(host, target.capabilities()).verdict("float4_e2m1fn", 60)
    assert refused.verdict == REFUSED and refused.refused_by == "runtime"
    assert refused_by_of(refused.message) == "runtime"


def raw_io_samples() -> list[tuple[bytes, np.ndarray, bool]]:
    """Identity models of a type onnxruntime's numpy API refuses (bfloat16: exchanged as
    raw bits, an adaptation) and of one it exchanges (float32: none), each with its input
    and whether the driver adapts it."""
    import ml_dtypes
    from onnx import TensorProto, helper

    samples = []
    for kind, value, adapted in (
            (TensorProto.BFLOAT16, np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16), True),
            (TensorProto.FLOAT, np.array([1.5, -2.0], dtype=np.float32), False)):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "same",
                                  [helper.make_tensor_value_info("x", kind, [2])],
                                  [helper.make_tensor_value_info("y", kind, [2])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8  # what the older onnxruntime of a target environment reads
        samples.append((model.SerializeToString(), value, adapted))
    return samples


def test_onnxruntime_records_the_raw_bits_adaptation_where_it_makes_it() -> None:
    """onnxruntime's numpy API refuses bfloat16: the driver feeds and reads raw bits in
    OrtValues, and says so in the placement of the models where it does (and in its
    capabilities), never for a type numpy exchanges."""
    from targets.onnxruntime_target import OnnxRuntimeTarget
    from targets.ort_values import RAW_IO_ADAPTATION

    target = OnnxRuntimeTarget(provider_key="cpu")
    assert target.capabilities().extra["adaptations"] == [RAW_IO_ADAPTATION]
    for model, value, adapted in raw_io_samples():
        executable = target.compile(model)
        (out,) = executable.run({"x": value}).values()
        assert out.dtype == value.dtype and np.array_equal(out, value)
        adaptations = executable.placement().get("adaptations", [])
        assert (adaptations == [RAW_IO_ADAPTATION]) is adapted, adaptations
