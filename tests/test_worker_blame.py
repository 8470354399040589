"""Blame for a worker killed from outside (issue 16 item 10): a signal the harness did not
send is the infrastructure's, recorded with the host's OOM evidence, and a retry clears it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from harness.case_record import CaseRecord, fold_attempts
from harness.cases import execute_case
from harness.runs import build_record
from harness.target import Capabilities
from harness.worker import ProcessHost
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
    from harness.worker_main import plain_traceback

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
