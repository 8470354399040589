"""The worker's memory ceiling: a runaway allocation fails inside the worker and is
the target's error, not an OOM kill charged to the infrastructure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation import memory_limit
from harness.isolation.host import ProcessHost

FAULTY = TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget")
PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}
MiB = 1 << 20


@pytest.mark.parametrize(("text", "size"), [
    ("8G", 8 << 30), ("512M", 512 * MiB), ("1.5GiB", 3 << 29), ("4096", 4096),
    ("none", None), ("off", None)])
def test_sizes_read_as_people_write_them(text, size):
    assert memory_limit.parse(text) == size


def test_a_size_that_is_not_one_is_refused_with_the_form_to_use():
    with pytest.raises(ValueError, match="use e.g. 8G"):
        memory_limit.parse("lots")


def test_the_default_is_a_fraction_of_physical_memory():
    total = memory_limit.physical_memory()
    assert total and memory_limit.default_limit() == int(total * memory_limit.DEFAULT_FRACTION)


def _abs_case() -> Case:
    def load() -> LoadedCase:
        graph = helper.make_graph(
            [helper.make_node("Abs", ["x"], ["y"])], "memory_abs",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = np.array([-1.0, 0.0, 2.0], np.float32)
        return LoadedCase(model, [DataSet({"x": x}, [np.abs(x)])])

    return Case(suite="memory", name="test_abs", load=load)


def test_an_allocation_past_the_ceiling_is_the_targets_error_and_the_worker_lives_on():
    # the faulty driver holds on to 2 GiB per compile of an Abs model; the ceiling is 512 MiB
    host = ProcessHost(FAULTY, options={"fault": "leak", "trigger_op": "Abs",
                                        "leak_mb": 2048},
                       startup_timeout=60, memory_limit=512 * MiB)
    try:
        outcome = execute_case(_abs_case(), host, Capabilities(), timeout=60)
        assert host.worker_info["memory_limit_bytes"] == 512 * MiB
    finally:
        host.close()
    assert outcome.status == "error", outcome.message
    assert "MemoryError" in outcome.message
    assert outcome.blame in ("", "target")
    assert host.restarts == 0


def test_the_run_records_the_ceiling_it_ran_under(shipei_cli):
    result = shipei_cli("run", "-k", "test_abs and not bfloat", "--target",
                        "shipei-faulty,fault=leak,trigger_op=Abs,leak_mb=2048",
                        "--worker-memory-limit", "512M", env=PLUGINS)
    run_info = json.loads((result.run_dirs()[0] / "run.json").read_text())
    assert run_info["worker_memory_limit_bytes"] == 512 * MiB
    [record] = result.records()
    assert record["status"] == "error" and "MemoryError" in record["message"]
