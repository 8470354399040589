"""A worker launched ahead (during collection) serves the first case, or fails it
exactly as a worker started on demand would."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost

ORT = TargetSpec(name="onnxruntime-cpu", factory="targets.onnxruntime_target:OnnxRuntimeTarget",
                 kwargs={"provider_key": "cpu"})
BROKEN = TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget",
                    kwargs={"fault": "no-such-fault"})


def _neg() -> LoadedCase:
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "prestart_neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    return LoadedCase(model, [DataSet({"x": x}, [-x])])


NEG = Case(suite="prestart", name="test_neg", load=_neg)


def test_a_worker_launched_ahead_serves_the_first_case():
    host = ProcessHost(ORT, startup_timeout=60)
    try:
        host.prestart()
        host.prestart()  # a second call launches nothing more
        launched = host._launched
        assert launched is not None and host.pid is None  # launched, not yet waited for
        assert execute_case(NEG, host, Capabilities(), timeout=60).status == "pass"
        assert host.pid == launched.process.pid and host.restarts == 0
    finally:
        host.close()


def test_a_worker_that_fails_while_launched_ahead_is_the_first_cases_infra_error():
    host = ProcessHost(BROKEN, startup_timeout=60)
    try:
        host.prestart()
        outcome = execute_case(NEG, host, Capabilities(), timeout=60)
    finally:
        host.close()
    assert outcome.status == "infra_error" and "failed to start" in outcome.message


def test_closing_a_host_reaps_a_worker_launched_ahead_and_never_used():
    host = ProcessHost(ORT, startup_timeout=60)
    host.prestart()
    process = host._launched.process
    host.close()
    assert process.poll() is not None and host._launched is None


def test_the_plugin_and_target_discovery_do_not_import_onnx() -> None:
    """Workers launch when collection starts; onnx (with ml_dtypes, half a second) is
    first imported by the suites' collection, so the worker's start-up overlaps it."""
    import subprocess
    import sys

    probe = ("import sys, harness.run.plugin\n"
             "from harness.driver.registry import discover\n"
             "discover()\n"
             "print(sorted(m for m in ('onnx', 'ml_dtypes') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
