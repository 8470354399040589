"""Capabilities by probe: a case is skipped only when the runtime refuses an element type
(with its own error), a type the harness cannot carry is the harness's infra_error, and
the contract fails a declaration that contradicts the probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.probe import ACCEPTED, HARNESS_GAP, REFUSED, DtypeProbe
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost
from harness.isolation.tensors import ELEMENT_TYPES, numpy_dtype
from suites.contract.checks import Violation, check_declared_dtypes
from targets.onnxruntime_target import OnnxRuntimeTarget

ORT = TargetSpec("onnxruntime-cpu", "targets.onnxruntime_target:OnnxRuntimeTarget",
                 {"provider_key": "cpu"})
TVM = TargetSpec("tvm-llvm", "targets.tvm_target:TvmTarget", {"device_key": "llvm"})
CODEC_GAP = TargetSpec("shipei-faulty", "targets.testing:FaultyTarget",
                       {"fault": "codec_gap", "gap_dtype": "int4"})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def ort_host():
    host = ProcessHost(ORT, startup_timeout=60)
    yield host
    host.close()


def _cast_case(name: str) -> Case:
    """Cast float -> ``name`` -> float, judged against the values themselves."""
    code = ELEMENT_TYPES[name].onnx

    def load() -> LoadedCase:
        graph = helper.make_graph(
            [helper.make_node("Cast", ["x"], ["t"], to=code),
             helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)], "cast",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("t", code, [4]),
             helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
        x = np.array([1.0, 0.0, -1.0, -2.0], dtype=np.float32)
        return LoadedCase(model, [DataSet({"x": x}, [x.astype(numpy_dtype(name)), x])])

    return Case("probe", f"test_cast_{name}", load, rtol=0.0, atol=0.0)


def test_probe_verdicts_come_from_the_runtime_and_are_cached(cache, ort_host):
    caps = OnnxRuntimeTarget().capabilities()
    probe = DtypeProbe(ort_host, caps)
    assert probe.verdict("bfloat16", 60).verdict == ACCEPTED
    refused = probe.verdict("float4_e2m1fn", 60)
    assert refused.verdict == REFUSED and "NOT_IMPLEMENTED" in refused.message
    (stored,) = (cache / "probes").glob("*.json")
    saved = json.loads(stored.read_text())
    assert saved["verdicts"]["float4_e2m1fn"]["verdict"] == REFUSED
    assert saved["who"]["identity"]["runtime"] == "onnxruntime"


def test_a_runtime_that_cannot_take_a_graph_computing_nothing_is_probed_by_concat(cache):
    """pnnx crashes on an Identity (or Cast round trip) graph; its Concat runs: accepted."""
    spec = TargetSpec("shipei-faulty", "targets.testing:FaultyTarget",
                      {"fault": "segfault", "trigger_op": "Identity|Cast"})
    host = ProcessHost(spec, startup_timeout=60)
    try:
        verdict = DtypeProbe(host, OnnxRuntimeTarget().capabilities()).verdict("float16", 60)
    finally:
        host.close()
    assert (verdict.verdict, verdict.via) == (ACCEPTED, "Concat"), verdict


def test_a_refused_type_skips_with_the_probes_error_and_an_accepted_one_runs(cache,
                                                                              ort_host):
    caps = OnnxRuntimeTarget().capabilities()
    skipped = execute_case(_cast_case("float4_e2m1fn"), ort_host, caps, timeout=60)
    assert skipped.status == "skip" and "capability probe" in skipped.message
    assert "NOT_IMPLEMENTED" in skipped.message
    ran = execute_case(_cast_case("int4"), ort_host, caps, timeout=60)
    assert ran.status == "pass", ran.message


def test_a_type_the_harness_cannot_carry_is_infra_error_blamed_on_the_harness(cache):
    """A driver that cannot carry int4 (``targets.testing``'s ``codec_gap``): the probe
    says harness gap, and the case is the harness's infra_error, not the target's."""
    from targets.testing import FaultyTarget

    host = ProcessHost(CODEC_GAP, startup_timeout=120)
    try:
        assert DtypeProbe(host, Capabilities()).verdict("int4", 120).verdict == HARNESS_GAP
        outcome = execute_case(_cast_case("int4"), host,
                               FaultyTarget(fault="codec_gap").capabilities(), 120)
    finally:
        host.close()
    assert outcome.status == "infra_error" and outcome.blame == "harness", outcome
    assert "int4" in outcome.message


def test_tvm_takes_two_bit_tensors_by_probe_and_its_own_refusals_are_its_own(cache):
    """int2 crosses to TVM in ONNX's layout; an Identity hands it back (accepted), and
    TVM's VM refusing to allocate a 2-bit result is TVM's error, not a harness gap."""
    from targets.tvm_target import TvmTarget

    host = ProcessHost(TVM, startup_timeout=120)
    try:
        assert DtypeProbe(host, Capabilities()).verdict("int2", 120).verdict == ACCEPTED
        case = _cast_case("int2")
        outcome = execute_case(case, host, TvmTarget().capabilities(), 120)
    finally:
        host.close()
    assert outcome.status == "error" and outcome.blame != "harness", outcome
    assert "dtype.bits % 8 == 0" in outcome.message


def test_the_contract_fails_a_declaration_that_contradicts_the_probe(cache, ort_host):
    honest = OnnxRuntimeTarget().capabilities()
    assert check_declared_dtypes(ort_host, honest, 60).status == "pass"
    boastful = Capabilities(dtypes=(*honest.dtypes, "float4_e2m1fn"))
    with pytest.raises(Violation, match="declared but refused by the runtime: float4_e2m1fn"):
        check_declared_dtypes(ort_host, boastful, 60)
    shy = Capabilities(dtypes=tuple(d for d in honest.dtypes if d != "bfloat16"))
    with pytest.raises(Violation, match="accepted by the runtime but not declared: bfloat16"):
        check_declared_dtypes(ort_host, shy, 60)
