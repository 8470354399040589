"""The model_file suite (``shipei run --model PATH``) on hostile models.

A model that hangs the reference costs one case within the case timeout, a declared
dimension of 0 is fed as 0, and a model the reference refuses is still tried on the
target, with the reference's failure recorded beside the target's result.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cases.model_file import ModelFileReference, ReferenceFailed, random_feeds
from tests.doc_driver import TARGET as DOC_TARGET
from tests.doc_driver import install_doc_driver

OPSET = [helper.make_opsetid("", 17)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def relu_model(shape: list, opsets: list | None = None, outputs: bool = True,
               op: str = "Relu", domain: str = "") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)] if outputs else [])
    return helper.make_model(graph, opset_imports=opsets or OPSET)


def looping_model(trip_count: int = 10**15) -> onnx.ModelProto:
    """``y = x + trip_count``, one Add per iteration of a Loop: a practical hang."""
    scalar = []
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, scalar),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, scalar),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, scalar),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(trip_count, np.int64), "M"),
         numpy_helper.from_array(np.array(True), "cond")])
    return helper.make_model(graph, opset_imports=OPSET)


UNKNOWN_DOMAIN = [helper.make_opsetid("", 17), helper.make_opsetid("acme.custom", 1)]


def test_declared_zero_dimension_is_fed_as_zero() -> None:
    feeds = random_feeds(relu_model([0, 3]))
    assert feeds["x"].shape == (0, 3)
    assert random_feeds(relu_model(["N", 3]))["x"].shape == (1, 3)  # symbolic: 1


def test_reference_is_isolated_and_bounded() -> None:
    model = looping_model()
    feeds = random_feeds(model)
    with ModelFileReference() as reference:
        started = time.monotonic()
        with pytest.raises(ReferenceFailed, match="timed out after 2 s"):
            reference.outputs("hang", model, feeds, timeout=2.0)
        assert time.monotonic() - started < 30  # the worker start included
        with pytest.raises(ReferenceFailed, match="refused the model.*Frob"):
            unknown = relu_model([2], UNKNOWN_DOMAIN, op="Frob", domain="acme.custom")
            reference.outputs("unknown", unknown, random_feeds(unknown), timeout=30)
        with pytest.raises(ReferenceFailed, match="declares no outputs"):
            reference.outputs("none", relu_model([2], outputs=False), feeds, timeout=30)
        # a fresh worker serves the next model
        small = looping_model(trip_count=3)
        (out,) = reference.outputs("small", small, {"x": np.zeros(1, np.float32)}, 30)
        assert out.tolist() == [3.0]


@pytest.mark.extended
def test_hostile_models_cost_one_case_each(shipei_cli, tmp_path: Path) -> None:
    models = {
        "looping": looping_model(),
        "zero_dim": relu_model([0, 3]),
        "unknown_domain": relu_model([2], UNKNOWN_DOMAIN, op="Frob", domain="acme.custom"),
        "no_outputs": relu_model([2], outputs=False),
        "opset999": relu_model([2], [helper.make_opsetid("", 999)]),
    }
    args = [a for name, model in models.items()
            for a in ("--model", str(_save(model, tmp_path / f"{name}.onnx")))]
    started = time.monotonic()
    result = shipei_cli("run", *args, "--target", "onnxruntime-cpu", "--target", DOC_TARGET,
                        "--case-timeout", "8", env=install_doc_driver(tmp_path / "driver"))
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    records = {(r["target"], r["case"]): r for r in result.records()}
    assert len(records) == 2 * len(models)
    ort = {case: records["onnxruntime-cpu", f"test_{case}"] for case in models}
    ref = {case: records[DOC_TARGET, f"test_{case}"] for case in models}

    # the hang: the reference timed out, the target was tried and timed out too
    for record in (ort["looping"], ref["looping"]):
        assert record["tags"]["reference_error"] == "the reference timed out after 8 s"
        assert record["status"] == "timeout"
    assert ort["zero_dim"]["status"] == "pass" and "reference_error" not in ort["zero_dim"]["tags"]
    assert ref["zero_dim"]["status"] == "pass"
    # refused by the reference: tried anyway, the target's own result recorded
    for target in (ort, ref):
        assert "refused the model" in target["unknown_domain"]["tags"]["reference_error"]
        assert target["unknown_domain"]["status"] == "error"
        assert "declares no outputs" in target["no_outputs"]["tags"]["reference_error"]
        assert target["no_outputs"]["as_expected"] is False
    assert ort["no_outputs"]["status"] == "error"  # onnxruntime refuses to run it
    # the evaluator driver runs it (no outputs): tried, but nothing to judge
    assert ref["no_outputs"]["status"] == "infra_error"
    assert ref["no_outputs"]["metrics"]["target_ran"] is True
    assert ref["no_outputs"]["message"].startswith("not judged: the model declares no outputs")
    # opset 999: outside both targets' declared opsets, a skip with the reason
    for target in (ort, ref):
        assert target["opset999"]["status"] == "skip"
        assert "opset 999 outside" in target["opset999"]["message"]
        assert "refused the model" in target["opset999"]["tags"]["reference_error"]
    # two 8 s timeouts per target plus worker starts, never the 1e15-step loop
    assert elapsed < 300
