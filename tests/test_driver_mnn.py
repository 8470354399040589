"""MNN: bool tensors travel as int32, as MNN's converter declares them (an adaptation the
record states), and float16/bfloat16, which the driver cannot feed faithfully, are the
driver's refusal, not the runtime's (issue 27, item 2). Runs in environment ``mnn``."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.driver.probe import ACCEPTED, REFUSED, DtypeProbe
from harness.driver.registry import TargetSpec
from harness.environments import target_envs as envs
from harness.isolation.host import ProcessHost
from targets.mnn_target import ADAPTATIONS, MnnTarget


@pytest.fixture
def mnn_host():
    ready, reason = envs.status("mnn", envs.known_specs().get("mnn"))
    if not ready:
        pytest.skip(f"mnn-cpu: {reason}")
    launcher, env = envs.worker_launch(MnnTarget())
    host = ProcessHost(TargetSpec("mnn-cpu", "targets.mnn_target:MnnTarget"), "default", {},
                       launcher=launcher, env=env)
    yield host
    host.close()


def _logic(op: str) -> bytes:
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], op.lower(),
        [helper.make_tensor_value_info("a", TensorProto.BOOL, [4]),
         helper.make_tensor_value_info("b", TensorProto.BOOL, [4])],
        [helper.make_tensor_value_info("y", TensorProto.BOOL, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.slow
def test_bool_is_carried_as_int32_and_the_record_says_so(mnn_host):
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    result = mnn_host.run_case("xor", _logic("Xor"), [{"a": a, "b": b}], timeout=120)
    y = result["outputs"][0]["y"]
    assert y.dtype == np.bool_ and y.tolist() == [False, True, True, False]
    assert result["placement"]["adaptations"] == [ADAPTATIONS["bool"]]


@pytest.mark.slow
def test_the_probe_finds_bool_accepted_and_float16_refused_by_the_driver(mnn_host, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    probe = DtypeProbe(mnn_host, MnnTarget().capabilities())
    assert probe.verdict("bool", 120).verdict == ACCEPTED
    for name in ("float16", "bfloat16"):
        refused = probe.verdict(name, 120)
        assert refused.verdict == REFUSED and refused.refused_by == "driver", refused
        assert "this driver has no faithful way to feed" in refused.message


def test_mnn_declares_bool_and_its_adaptations_reach_the_capabilities():
    capabilities = MnnTarget().capabilities()
    assert "bool" in capabilities.dtypes and "float16" not in capabilities.dtypes
    assert capabilities.extra["adaptations"] == list(ADAPTATIONS.values())
