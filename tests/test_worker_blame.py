"""Blame for a worker killed from outside (issue 16 item 10): a signal the harness did not
send is the infrastructure's, recorded with the host's OOM evidence, and a retry clears it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from harness.cases.case import execute_case
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost
from harness.results.build import build_record
from harness.results.case_record import CaseRecord, fold_attempts
from harness.run.live_output import STILL_RUNNING_ENV
from tests.test_isolation import ABS, FAULTY, NEG

CAPS = Capabilities()


@pytest.fixture
def hanging_host():
    host = ProcessHost(FAULTY, options={"fault": "hang", "trigger_op": "Abs"},
                       startup_timeout=60)
    yield host
    host.close()


def _kill_soon(host: ProcessHost, sig: signal.Signals, after: float = 1.0) -> threading.Thread:
    pid = host.pid
    assert pid is not None

    def kill() -> None:
        time.sleep(after)
        os.kill(pid, sig)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_worker_killed_from_outside_is_infra_error_blamed_on_infrastructure(hanging_host,
                                                                              sig):
    assert execute_case(NEG, hanging_host, CAPS, timeout=60).status == "pass"  # worker up
    killer = _kill_soon(hanging_host, sig)
    outcome = execute_case(ABS, hanging_host, CAPS, timeout=60)
    killer.join()
    assert outcome.status == "infra_error", outcome
    assert outcome.blame == "infrastructure"
    assert outcome.metrics["signal"] == sig.name
    assert outcome.metrics["killed_externally"] is True
    assert "oom_killed" in outcome.metrics["oom_evidence"]
    assert "not by the harness or the target" in outcome.message
    assert execute_case(NEG, hanging_host, CAPS, timeout=60).status == "pass"  # restarted


def test_the_harness_own_timeout_kill_stays_a_timeout(hanging_host):
    assert execute_case(NEG, hanging_host, CAPS, timeout=60).status == "pass"
    outcome = execute_case(ABS, hanging_host, CAPS, timeout=2)
    assert outcome.status == "timeout" and outcome.blame == ""


def test_a_fault_of_the_target_itself_stays_its_crash():
    host = ProcessHost(FAULTY, options={"fault": "abort", "trigger_op": "Abs"},
                       startup_timeout=60)
    try:
        outcome = execute_case(ABS, host, CAPS, timeout=60)
    finally:
        host.close()
    assert outcome.status == "crash" and outcome.blame == "target"
    assert outcome.metrics["signal"] == "SIGABRT"


def test_a_retry_clears_the_externally_killed_attempt(hanging_host):
    assert execute_case(NEG, hanging_host, CAPS, timeout=60).status == "pass"
    killer = _kill_soon(hanging_host, signal.SIGKILL)
    killed = execute_case(ABS, hanging_host, CAPS, timeout=60)
    killer.join()
    retried = execute_case(NEG, hanging_host, CAPS, timeout=60)  # the same case, re-run
    records = [CaseRecord.from_dict(build_record(FAULTY.name, "isolation", "test_x", outcome,
                                                 None, outcome.status == "pass", {}, 1.0, 0))
               for outcome in (killed, retried)]
    assert records[0].blame == "infrastructure"
    (effective,) = fold_attempts(records)
    assert str(effective.status) == "pass" and not effective.flaky


def test_a_remote_traceback_names_every_frame_without_caret_lines() -> None:
    from harness.isolation.worker_main import plain_traceback

    def inner() -> float:
        return 1 / 0

    try:
        try:
            inner()
        except ZeroDivisionError as exc:
            raise ValueError("while running") from exc
    except ValueError as exc:
        text = plain_traceback(exc)
    assert "in inner" in text and "ZeroDivisionError: division by zero" in text
    assert "direct cause" in text and text.rstrip().endswith("ValueError: while running")
    assert "^" not in text


# -- a crash one case causes in the next (issue 27 item 6) --------------------------------
def _corrupting_run(shipei_cli, label: str, keyword: str = "test_abs or test_neg",
                    *options: str):
    from tests.corrupting_target import PLUGINS

    result = shipei_cli("run", "--suite", "operators", "-k", keyword, "--target", label,
                        *options, env=PLUGINS)
    lines = result.records()
    by_case: dict[str, list[dict]] = {}
    for line in lines:
        by_case.setdefault(line["case"], []).append(line)
    effective = {r.case: r for r in fold_attempts(CaseRecord.from_dict(x) for x in lines)}
    return result, by_case, effective


def test_a_crash_that_passes_alone_is_charged_to_the_case_before_it(shipei_cli):
    """Abs corrupts the worker; the Neg case after it aborts, and passes alone in a fresh
    worker: Neg keeps its pass with both attempts, Abs is charged with the crash."""
    result, by_case, effective = _corrupting_run(shipei_cli, "shipei-corrupting")
    assert result.returncode == 1, result.stderr[-2000:]  # Abs's charged crash is unexpected
    victim = next(case for case in by_case if case.startswith("test_neg"))
    (neg,) = by_case[victim]
    assert neg["status"] == "pass" and neg["as_expected"] is True
    assert [a["status"] for a in neg["previous_attempts"]] == ["crash"]
    assert neg["attempt"] == 2 and neg["previous_attempts"][0]["attempt"] == 1
    assert neg["crash_charged_to"] == "operators::test_abs"
    assert "pass alone in a fresh worker" in neg["message"]
    abs_lines = by_case["test_abs"]
    assert [line["status"] for line in abs_lines] == ["pass", "crash"]
    charged = abs_lines[1]
    assert charged["left_runtime_corrupted"] == f"operators::{victim}"
    assert charged["blame"] == "target" and charged["metrics"]["signal"] == "SIGABRT"
    assert charged["nodeid"] == abs_lines[0]["nodeid"] and charged["attempt"] == 2
    assert "left the runtime corrupted" in charged["message"]
    assert effective["test_abs"].status == "crash"  # what reports and certificates count
    assert effective[victim].status == "pass"
    run_info = json.loads((result.run_dirs()[0] / "run.json").read_text())
    assert run_info["counts"]["shipei-corrupting"]["crash"] == 1
    # what the workers printed is kept in the run's folder, named by target, and counted
    # in the summary; pytest's progress line holds only results
    kept = (result.run_dirs()[0] / "worker-stderr.log").read_text().splitlines()
    assert "[shipei-corrupting] error: Abs left the heap in a state (a warning)" in kept
    assert "[shipei-corrupting] free(): corrupted heap state detected" in kept
    assert f"worker stderr: shipei-corrupting {len(kept)} line(s) in " in result.stdout
    assert "heap" not in result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if line.rstrip().endswith("%]")]
    assert progress and all(set(line.split()[0]) <= set(".FEsxX") for line in progress)


def test_a_crash_that_recurs_alone_is_the_case_own(shipei_cli):
    """Neg aborts in every worker (corrupted from its start): its own crash, one record
    holding both attempts; Abs before it is not charged."""
    result, by_case, effective = _corrupting_run(shipei_cli, "shipei-corrupting,corrupt_op=*")
    assert result.returncode == 1
    neg = [lines for case, lines in by_case.items() if case.startswith("test_neg")]
    assert neg and all(len(lines) == 1 for lines in neg)
    for (line,) in neg:
        assert line["status"] == "crash" and line["blame"] == "target"
        assert [a["status"] for a in line["previous_attempts"]] == ["crash"]
        assert "crashed again alone in a fresh worker" in line["message"]
        assert "crash_charged_to" not in line
    assert [line["status"] for line in by_case["test_abs"]] == ["pass"]


def test_a_crash_the_expectations_already_list_is_not_run_again(shipei_cli, tmp_path):
    """A reviewed crash (its expectation says crash) is recorded as it came: re-running
    every known crash alone would cost a sweep a worker start each."""
    expectations = tmp_path / "known.toml"
    expectations.write_text('[operators.test_neg]\nstatus = "crash"\nreason = "known"\n')
    result, by_case, _ = _corrupting_run(shipei_cli, "shipei-corrupting,corrupt_op=*",
                                         "test_neg", "--expectations", str(expectations))
    (known,) = by_case["test_neg"]
    assert known["status"] == "crash" and known["as_expected"] is True
    assert "previous_attempts" not in known and known["attempt"] == 1
    (other,) = by_case["test_neg_example"]  # not listed: run again alone, crashed again
    assert [a["status"] for a in other["previous_attempts"]] == ["crash"]
    assert result.returncode == 1


def test_a_crash_nobody_caused_that_passes_alone_is_flaky(shipei_cli, tmp_path):
    """The first case in a worker crashes once and passes alone: no case ran before it to
    charge, so its two attempts are two records and it is flaky."""
    marker = tmp_path / "crashed-once"
    result, by_case, effective = _corrupting_run(
        shipei_cli, f"shipei-corrupting,corrupt_op=Relu,crash_once_marker={marker}", "test_neg")
    first, *others = by_case  # the first case the worker ran
    assert [line["status"] for line in by_case[first]] == ["crash", "pass"]
    assert [line["attempt"] for line in by_case[first]] == [1, 2]
    assert effective[first].status == "flaky"
    assert others and all(effective[case].status == "pass" for case in others)
    assert result.returncode == 1


def test_a_crash_that_does_not_recur_after_the_case_before_it_charges_nobody(shipei_cli,
                                                                             tmp_path):
    """Abs ran before Neg, but Neg's crash was its own once: it passes alone and after Abs
    in a fresh worker, so Abs is not charged and Neg is flaky."""
    marker = tmp_path / "crashed-once"
    result, by_case, effective = _corrupting_run(
        shipei_cli, f"shipei-corrupting,corrupt_op=Relu,crash_once_marker={marker}")
    victim = next(case for case in by_case if case.startswith("test_neg"))
    assert [line["status"] for line in by_case[victim]] == ["crash", "pass"]
    assert effective[victim].status == "flaky"
    assert [line["status"] for line in by_case["test_abs"]] == ["pass"]


# -- a worker's start-up is the target's set-up (issue 27 item 8) --------------------------
@pytest.mark.extended
def test_a_slow_worker_start_is_the_targets_set_up_not_the_first_cases(shipei_cli, tmp_path):
    """The worker takes 8 s to start (as an emulator does); a model file is the one case
    (its suite collects at once, so the start-up outlasts collection): run.json charges
    the wait to the target's set-up and the case's time starts when the worker is ready."""
    from onnx import TensorProto, helper, save

    from tests.corrupting_target import PLUGINS

    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
         str(tmp_path / "tiny.onnx"))
    label = "shipei-corrupting,corrupt_op=Relu,start_delay_s=8"
    result = shipei_cli("run", "--model", str(tmp_path / "tiny.onnx"), "--target", label,
                        env={**PLUGINS, STILL_RUNNING_ENV: "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    # the wait is noted while it lasts, on a line of its own before the test's result
    notes = [line for line in result.stdout.splitlines() if line.startswith("still running")]
    assert notes and "test_model" in notes[0] and notes[0].endswith("s so far)")
    (first,) = result.records()
    info = json.loads((result.run_dirs()[0] / "run.json").read_text())
    setup_s = info["targets"][label]["setup_s"]
    assert setup_s > 1.0  # most of the 8 s: collection and the reference take the rest
    assert first["timings"]["setup_s"] == setup_s  # how an xdist controller learns it
    assert first["timings"]["total_s"] < setup_s and first["duration_s"] < setup_s
