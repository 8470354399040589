"""The driver contract suite: it passes a sound driver and names each breach of a broken one.

End to end (``shipei run --suite contract``) on onnxruntime and on the test-only
faulty target; check by check on drivers defined here that wrap onnxruntime and
break one promise each (raw runtime errors, silently cast inputs, noisy outputs,
a shared output buffer while declaring thread safety, a child process left
behind, an incomplete identity).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from harness.driver.registry import TargetSpec
from harness.driver.target import (
    Availability,
    Capabilities,
    Executable,
    InputMismatchError,
    Target,
    TargetError,
    TargetIdentity,
    UnsupportedModelError,
)
from harness.isolation.host import InlineHost, ProcessHost
from suites.contract import checks
from tests.conftest import CliResult, run_shipei

PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}
TIMEOUT = 30.0


# -- end to end --------------------------------------------------------------------------------
def test_contract_passes_on_onnxruntime(shipei_cli) -> None:
    result = shipei_cli("run", "--suite", "contract", "--target", "onnxruntime-cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    records = {r["case"]: r for r in result.records()}
    assert set(records) == {
        "test_identity_complete", "test_availability_answered", "test_deterministic_outputs",
        "test_unsupported_op_is_clear_error", "test_wrong_input_name_is_clear_error",
        "test_wrong_input_dtype_is_clear_error", "test_wrong_input_shape_is_clear_error",
        "test_timeout_honoured", "test_resources_released", "test_thread_safety_as_declared",
        "test_declared_dtypes_match_probe"}
    assert all(r["suite"] == "contract" and r["status"] == "pass" for r in records.values())
    resources = records["test_resources_released"]["metrics"]
    assert resources["cycles"] == checks.CYCLES - checks.WARMUP
    assert abs(resources["rss_growth_mib"]) < checks.RSS_GROWTH_LIMIT_MIB
    assert resources["fds_end"] - resources["fds_start"] <= checks.FD_GROWTH_LIMIT
    timeout = records["test_timeout_honoured"]["metrics"]
    assert checks.SHORT_TIMEOUT_S <= timeout["stop_s"] < checks.SHORT_TIMEOUT_S + 5
    assert records["test_wrong_input_dtype_is_clear_error"]["metrics"]["error_type"] == \
        "InputMismatchError"


FAULTS = [
    ("leak,leak_mb=2", "test_resources_released", "fail", "memory grew"),
    ("wrong", "test_deterministic_outputs", "fail", "outputs are wrong"),
    ("abort", "test_wrong_input_dtype_is_clear_error", "crash", "SIGABRT"),
    ("hang,hang_s=120", "test_deterministic_outputs", "timeout", "exceeded the 10 s timeout"),
]


def _faulty(fault: str) -> str:
    return f"shipei-faulty,fault={fault},trigger_op=Relu"


@pytest.fixture(scope="module")
def faults_run(tmp_path_factory: pytest.TempPathFactory) -> CliResult:
    """One run of the four faulty targets, each on the case its fault must fail (-k
    matches a target's label in a case's name): the start is paid once, not four times.
    A 10 s case timeout: the resources check's cycles outlast 3 s on a loaded machine."""
    selected = " or ".join(f"({fault.split(',')[0]} and {case})"
                           for fault, case, _, _ in FAULTS)
    args = [a for fault, *_ in FAULTS for a in ("--target", _faulty(fault))]
    return run_shipei(tmp_path_factory.mktemp("contract-faults"), "run", "--suite",
                      "contract", *args, "-k", selected, "--case-timeout", "10", env=PLUGINS)


@pytest.mark.extended
@pytest.mark.parametrize("fault, case, status, words", FAULTS)
def test_contract_names_an_injected_fault(faults_run: CliResult, fault: str, case: str,
                                          status: str, words: str) -> None:
    assert faults_run.returncode == 1, faults_run.stdout + faults_run.stderr
    (record,) = [r for r in faults_run.records() if r["target"] == _faulty(fault)]
    assert (record["case"], record["status"]) == (case, status)
    assert words in record["message"] and not record["as_expected"]


# -- drivers that break one promise each --------------------------------------------------------
class BrokenExecutable(Executable):
    def __init__(self, session: Any, breach: str) -> None:
        self.session = session
        self.breach = breach
        self.names = [i.name for i in session.get_inputs()]
        self.buffer = np.zeros((1, 1024), np.float32)
        self.lock = threading.Lock()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.breach == "vague-errors" and set(inputs) != set(self.names):
            raise InputMismatchError("bad input")
        if self.breach == "casts-inputs":  # accepts anything: casts, pads, crops
            value = np.zeros((1, 256), np.float32)
            given = np.asarray(next(iter(inputs.values())), np.float32).ravel()[:256]
            value[0, :given.size] = given
            inputs = {self.names[0]: value}
        elif self.breach != "raw-errors":
            unknown = set(inputs) - set(self.names)
            if unknown:
                raise InputMismatchError(f"unknown input(s) {sorted(unknown)}")
            for name, value in inputs.items():
                if value.dtype != np.float32 or value.shape != (1, 256):
                    raise InputMismatchError(f"input {name!r}: {value.dtype} {value.shape}")
        (output,) = self.session.run(None, dict(inputs))
        if self.breach == "noisy":
            output = output + np.random.default_rng().normal(0, 1e-6, output.shape).astype(
                np.float32)
        if self.breach == "shared-buffer":  # one buffer for every caller: a data race
            self.buffer[...] = output
            time.sleep(0.001)
            output = self.buffer.copy()
        return {"probe_output": output}


class BrokenTarget(Target):
    """onnxruntime on the CPU, breaking the promise named by ``breach``."""

    def __init__(self, configuration: str = "default", breach: str = "none",
                 pid_file: str = "") -> None:
        self.breach = breach
        self.pid_file = pid_file

    @property
    def identity(self) -> TargetIdentity:
        sound = TargetIdentity(
            name="contract-probe", kind="framework", vendor="Shipei tests",
            driver_version=metadata.version("shipei"), runtime="onnxruntime",
            runtime_version=metadata.version("onnxruntime"), driver_distribution="shipei")
        if self.breach == "identity":
            return TargetIdentity(name="something-else", kind="framework", vendor="",
                                  driver_version="9.9", runtime="onnxruntime",
                                  runtime_version="1", device="npu",
                                  driver_distribution="shipei")
        return sound

    def availability(self) -> Availability:
        return Availability(False, "") if self.breach == "mute-availability" \
            else Availability.yes()

    def capabilities(self) -> Capabilities:
        return Capabilities(thread_safe=True, precision="fp32")

    def compile(self, model: bytes) -> Executable:
        import onnxruntime as ort

        if self.breach.startswith("by-probe"):
            return PlainExecutable(self._by_probe(model))
        if self.breach == "spawns" and self.pid_file:
            child = subprocess.Popen(["sleep", "120"], start_new_session=True)
            Path(self.pid_file).write_text(str(child.pid))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise TargetError(f"cannot load: {exc}") from exc
        return BrokenExecutable(session, self.breach)


    def _by_probe(self, model: bytes) -> Any:
        """``by-probe``: onnxruntime as is; ``by-probe-no-float32``: a runtime without
        float32 tensors; ``by-probe-none``: one that takes no tensors at all (as a sensor's
        driver refuses every model)."""
        import onnxruntime as ort

        graph = onnx.load_from_string(model).graph
        if self.breach == "by-probe-none" or (self.breach == "by-probe-no-float32" and any(
                i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in graph.input)):
            raise UnsupportedModelError("this runtime has no such tensors")
        try:
            return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise TargetError(f"cannot load: {exc}") from exc


class PlainExecutable(Executable):
    def __init__(self, session: Any) -> None:
        self.session = session
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(zip(self.outputs, self.session.run(None, dict(inputs)), strict=True))


def inline(breach: str) -> tuple[InlineHost, Capabilities]:
    target = BrokenTarget(breach=breach)
    return InlineHost(target), target.capabilities()


def test_sound_driver_passes_every_check_inline() -> None:
    host, caps = inline("none")
    for outcome in (checks.check_determinism(host, caps, TIMEOUT),
                    checks.check_unsupported_op(host, caps, TIMEOUT),
                    *(checks.check_bad_input(host, caps, TIMEOUT, k) for k in checks.BAD_INPUTS),
                    checks.check_thread_safety(host, caps, TIMEOUT),
                    checks.check_identity(BrokenTarget(), "contract-probe"),
                    checks.check_availability(BrokenTarget())):
        assert outcome.status == "pass", outcome.message


@pytest.mark.parametrize("breach, kind, words", [
    ("raw-errors", "name", "not a TargetError"),
    ("raw-errors", "dtype", "not a TargetError"),
    ("casts-inputs", "dtype", "accepted a float64 input"),
    ("casts-inputs", "shape", "accepted an input of shape [1, 128]"),
    ("vague-errors", "name", "does not name 'not_an_input'"),
])
def test_bad_input_breaches_are_named(breach: str, kind: str, words: str) -> None:
    host, caps = inline(breach)
    outcome = checks.run_check(lambda: checks.check_bad_input(host, caps, TIMEOUT, kind), kind)
    assert outcome.status == "fail" and words in outcome.message, outcome.message


def test_nondeterministic_outputs_are_named() -> None:
    host, caps = inline("noisy")
    outcome = checks.run_check(lambda: checks.check_determinism(host, caps, TIMEOUT), "det")
    assert outcome.status == "fail"
    assert "run 2 of the same input differs from run 1" in outcome.message


def test_declared_thread_safety_is_checked() -> None:
    host, caps = inline("shared-buffer")
    outcome = checks.run_check(lambda: checks.check_thread_safety(host, caps, TIMEOUT), "ts")
    assert outcome.status == "fail", outcome.message
    assert "declares thread_safe, but" in outcome.message and "concurrent runs" in outcome.message


def test_undeclared_thread_safety_is_skipped_with_reason() -> None:
    host, _ = inline("shared-buffer")
    outcome = checks.check_thread_safety(host, Capabilities(thread_safe=False), TIMEOUT)
    assert outcome.status == "skip" and "does not declare" in outcome.message


def test_incomplete_identity_and_mute_availability_are_named() -> None:
    identity = checks.check_identity(BrokenTarget(breach="identity"), "contract-probe")
    assert identity.status == "fail"
    for words in ("identity.vendor is empty", "is not the registered name 'contract-probe'",
                  "driver_version '9.9' is not the installed shipei",
                  "identity.device 'npu' is not among the declared devices"):
        assert words in identity.message
    availability = checks.check_availability(BrokenTarget(breach="mute-availability"))
    assert availability.status == "fail" and "unavailable without a reason" in \
        availability.message


def test_a_child_process_outliving_the_killed_worker_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "ORPHAN_GRACE_S", 1.0)
    pid_file = tmp_path / "child.pid"
    spec = TargetSpec("contract-probe", "tests.test_contract:BrokenTarget")
    host = ProcessHost(spec, options={"breach": "spawns", "pid_file": str(pid_file)})
    caps = BrokenTarget().capabilities()
    try:
        outcome = checks.run_check(lambda: checks.check_timeout(host, caps, TIMEOUT), "timeout")
    finally:
        host.close()
        if pid_file.exists():  # end the child this test's driver started
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert outcome.status == "fail", outcome.message
    assert "outlived its killed worker" in outcome.message


# -- element types declared by probe (dtypes=()) -----------------------------------------------
def _declared_by_probe(breach: str) -> Any:
    """check_declared_dtypes on a BrokenTarget worker, which declares no element types."""
    spec = TargetSpec("contract-probe", "tests.test_contract:BrokenTarget")
    host = ProcessHost(spec, options={"breach": breach})
    try:
        return checks.run_check(lambda: checks.check_declared_dtypes(
            host, BrokenTarget(breach=breach).capabilities(), 60), "dtypes")
    finally:
        host.close()


def test_a_driver_declaring_by_probe_passes_and_shows_what_the_probe_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 27.11: a driver following docs/driver-api.md (dtypes=()) used to get a skip,
    which the profiles count as a non-pass (at most 基本兼容). The probe's findings are its
    declaration: the check passes and records them."""
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    assert BrokenTarget().capabilities().dtypes == ()
    outcome = _declared_by_probe("by-probe")
    assert outcome.status == "pass", outcome.message
    accepted = outcome.metrics["probed_accepted"]
    assert outcome.metrics["declared_by"] == "probe"
    assert {"float32", "int64", "bool", "float16"} <= set(accepted)
    assert "float4_e2m1fn" not in accepted  # onnxruntime's CPU refuses it
    assert outcome.message.startswith("declared by probe (dtypes=()): the runtime accepts ")
    assert ", ".join(accepted) in outcome.message


def test_a_driver_declaring_by_probe_must_take_float32(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    outcome = _declared_by_probe("by-probe-no-float32")
    assert outcome.status == "fail", outcome.message
    assert "declared by probe, but every target must take float32" in outcome.message


def test_a_driver_that_runs_no_models_declaring_by_probe_is_not_applicable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    outcome = _declared_by_probe("by-probe-none")
    assert outcome.status == "skip" and "runs no ONNX models" in outcome.message
