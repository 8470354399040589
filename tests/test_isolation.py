"""Worker isolation, proved with a target that really aborts, segfaults and hangs.

``targets.testing`` wraps onnxruntime and misbehaves when a model contains its
``trigger_op``: ``os.abort()``, a NULL read through ctypes, or a sleep far past
the case timeout. Each must cost exactly one case, be recorded with the right
status and signal, and leave the next case on a fresh worker passing.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost

FAULTY = TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget")
PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}
CAPS = Capabilities()


def _unary_case(op: str, reference) -> Case:  # noqa: ANN001 - a numpy function
    def load() -> LoadedCase:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"])], f"isolation_{op.lower()}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = np.array([[-1.5, 0.0, 2.0], [3.25, -4.0, 0.5]], dtype=np.float32)
        return LoadedCase(model, [DataSet({"x": x}, [reference(x)])])

    return Case(suite="isolation", name=f"test_{op.lower()}", load=load)


ABS = _unary_case("Abs", np.abs)
NEG = _unary_case("Neg", np.negative)


@pytest.fixture
def host_for():
    hosts: list[ProcessHost] = []

    def make(**options: object) -> ProcessHost:
        hosts.append(ProcessHost(FAULTY, options=options, startup_timeout=60))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


@pytest.mark.parametrize(("fault", "signal_name"), [("abort", "SIGABRT"),
                                                    ("segfault", "SIGSEGV")])
def test_dying_worker_is_a_crash_and_the_next_case_passes(host_for, fault, signal_name):
    host = host_for(fault=fault, trigger_op="Abs")
    first = execute_case(NEG, host, CAPS, timeout=60)
    assert first.status == "pass", first.message
    pid_before = host.pid

    crashed = execute_case(ABS, host, CAPS, timeout=60)
    assert crashed.status == "crash"
    assert crashed.metrics["signal"] == signal_name
    assert crashed.metrics["exit_code"] < 0
    assert signal_name in crashed.message
    # the runtime's last words on stderr are the crash's reason; silence adds nothing
    last_words = "terminate called after throwing an instance of 'injected_fault'"
    assert crashed.message.endswith(f": {last_words}") == (fault == "abort")
    assert (last_words in crashed.detail) == (fault == "abort")

    after = execute_case(NEG, host, CAPS, timeout=60)
    assert after.status == "pass", after.message
    assert host.restarts == 1
    assert host.pid != pid_before


def test_hanging_case_is_a_timeout_and_the_next_case_passes(host_for):
    host = host_for(fault="hang", trigger_op="Abs")
    assert execute_case(NEG, host, CAPS, timeout=60).status == "pass"  # worker warm
    started = time.monotonic()
    hung = execute_case(ABS, host, CAPS, timeout=2)
    elapsed = time.monotonic() - started
    assert hung.status == "timeout", hung.message
    assert hung.metrics["timeout_s"] > 0
    assert elapsed < 60, f"a 2 s timeout took {elapsed:.1f} s to take effect"  # not a hang

    after = execute_case(NEG, host, CAPS, timeout=60)
    assert after.status == "pass", after.message
    assert host.restarts == 1


def test_raising_target_is_an_error_and_the_worker_lives_on(host_for):
    host = host_for(fault="raise", trigger_op="Abs")
    assert execute_case(NEG, host, CAPS, timeout=60).status == "pass"
    pid = host.pid
    failed = execute_case(ABS, host, CAPS, timeout=60)
    assert failed.status == "error"
    assert "RuntimeError: injected failure" in failed.message
    assert execute_case(NEG, host, CAPS, timeout=60).status == "pass"
    assert host.restarts == 0 and host.pid == pid


@pytest.mark.parametrize("spec", [
    TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget",
               kwargs={"fault": "no-such-fault"}),
    TargetSpec(name="nowhere", factory="targets.no_such_driver:Target"),
], ids=["target-raises-in-constructor", "driver-module-missing"])
def test_worker_that_fails_to_start_is_infra_error(spec):
    host = ProcessHost(spec, startup_timeout=60)
    try:
        outcome = execute_case(NEG, host, CAPS, timeout=60)
    finally:
        host.close()
    assert outcome.status == "infra_error"
    assert "failed to start" in outcome.message


@pytest.mark.extended
def test_shipei_run_records_crashes_and_timeouts_and_keeps_going(shipei_cli):
    """Three misbehaving targets in one ``shipei run``: abort on Abs, segfault on Neg,
    hang on Floor. Exactly the cases with the trigger op are lost; every other case
    passes, on a restarted worker once one has died."""
    triggers = {"shipei-faulty,fault=abort,trigger_op=Abs": ("Abs", "crash", "SIGABRT"),
                "shipei-faulty,fault=segfault,trigger_op=Neg": ("Neg", "crash", "SIGSEGV"),
                "shipei-faulty,fault=hang,trigger_op=Floor": ("Floor", "timeout", None)}
    targets = [arg for label in triggers for arg in ("--target", label)]
    result = shipei_cli("run", "--suite", "operators", "-k",
                        "test_abs or test_neg or test_sign or test_floor or test_ceil",
                        *targets, "--case-timeout", "3", env=PLUGINS)
    assert result.returncode == 1, result.stderr[-2000:]  # the faults are unexpected
    records = result.records()
    assert {r["target"] for r in records} == set(triggers)
    assert len(records) == 3 * 9  # abs 1, neg 2, sign 2, floor 2, ceil 2

    for label, (op, status, signal_name) in triggers.items():
        mine = [r for r in records if r["target"] == label]
        for record in mine:
            if record["tags"]["op_type"] == op:
                assert record["status"] == status, record
                assert record["metrics"].get("signal") == signal_name
                assert record["as_expected"] is False
            else:
                assert record["status"] == "pass", record
        assert any(r["status"] == "pass" and r["worker_restarts"] >= 1 for r in mine), \
            f"no case passed on a restarted worker of {label}"

    run_dir = result.run_dirs()[0]
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["counts"]["shipei-faulty,fault=abort,trigger_op=Abs"]["crash"] == 1
    assert run_info["counts"]["shipei-faulty,fault=hang,trigger_op=Floor"]["timeout"] == 2
    junit = (result.reports / run_dir.name / "junit.xml").read_text()
    assert "SIGABRT" in junit and "SIGSEGV" in junit


def test_a_crashs_reason_is_the_runtimes_last_words_not_a_stack_frame():
    from harness.cases.case import runtime_last_words

    dotnet = ("Unhandled exception. System.AggregateException: One or more errors occurred.\n"
              " ---> System.NotSupportedException: Not Supported Onnx op: If\n"
              "   at Nncase.Importer.OnnxImporter.Visit(NodeProto op)\n"
              "   at System.Threading.Tasks.Task.ThrowIfExceptional(Boolean b)\n")
    assert runtime_last_words(dotnet).endswith("Not Supported Onnx op: If")
    cpp = "loading model\nterminate called after throwing an instance of 'std::bad_alloc'\n"
    assert runtime_last_words(cpp) == "terminate called after throwing an instance of " \
                                      "'std::bad_alloc'"
    assert runtime_last_words("compiling\nrunning\n") == ""


def test_a_crash_quotes_its_own_requests_stderr_not_an_earlier_models():
    """A case printed an error-like line and passed; the next one dies silently. The crash
    record must not quote the earlier case's line as the dying runtime's last words."""
    from tests.corrupting_target import PLUGINS as CORRUPTING

    spec = TargetSpec(name="shipei-corrupting",
                      factory="tests.corrupting_target:CorruptingTarget")
    host = ProcessHost(spec, options={"silent": "true"}, env=CORRUPTING, startup_timeout=60)
    try:
        assert execute_case(ABS, host, CAPS, timeout=60).status == "pass"
        crash = execute_case(NEG, host, CAPS, timeout=60)
    finally:
        host.close()
    assert crash.status == "crash" and crash.metrics["signal"] == "SIGABRT"
    assert "left the heap" not in crash.message and "left the heap" not in crash.detail


def test_the_stderr_tail_splits_at_request_marks():
    import os as _os

    from harness.isolation.host import _StderrTail
    from harness.isolation.worker_main import REQUEST_MARK

    read, write = _os.pipe()
    tail = _StderrTail(_os.fdopen(read, "rb"))
    _os.write(write, b"old error\n" + REQUEST_MARK + b"partial" + REQUEST_MARK + b"mine\n")
    _os.close(write)
    assert tail.join()
    assert tail.text() == "old error\npartial\nmine"
    assert tail.request_text() == "mine"
