"""Pipelined worker requests, proved on a target that really aborts and hangs.

Cases are sent ahead to one worker through :class:`harness.run.pipelined_host.PipelinedHost`;
the fault in the middle of the window must cost exactly its own case, the cases
sent behind it must be sent again to the fresh worker and get their real
results, and a ``shipei run`` with pipelining on must record in collection order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.cases.case import Outcome, conclude_case, outcome_from_exception, prepare_case
from harness.isolation.host import CaseTimeout, ProcessHost, WorkerCrash
from harness.run.pipelined_host import DEFAULT_WINDOW, WINDOW_ENV, PipelinedHost, configured_window
from tests.conftest import REPO
from tests.test_isolation import ABS, CAPS, FAULTY, NEG, PLUGINS


@pytest.fixture
def pipelined():
    hosts: list[PipelinedHost] = []

    def make(window: int = 8, **options: object) -> PipelinedHost:
        hosts.append(PipelinedHost(ProcessHost(FAULTY, options=options, startup_timeout=60),
                                   window))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


def _send_all(host: PipelinedHost, cases, timeout: float):  # noqa: ANN001, ANN202
    sent = []
    for case in cases:
        prepared = prepare_case(case, host, CAPS, timeout)
        assert not isinstance(prepared, Outcome), prepared
        sent.append((prepared, host.submit(prepared.key, prepared.model, prepared.feeds,
                                           timeout)))
    return sent


def _outcomes(host: PipelinedHost, sent) -> list[Outcome]:  # noqa: ANN001
    outcomes = []
    for prepared, ticket in sent:
        try:
            outcomes.append(conclude_case(prepared, host.result(ticket), CAPS))
        except (CaseTimeout, WorkerCrash) as exc:
            outcomes.append(outcome_from_exception(exc, time.perf_counter()))
    return outcomes


def test_requests_go_ahead_up_to_the_window(pipelined):
    host = pipelined(window=3, fault="abort", trigger_op="Abs")
    sent = _send_all(host, [NEG] * 5, timeout=60)
    assert host.pipeline.in_flight() == 3  # the other two wait for room in the window
    assert [o.status for o in _outcomes(host, sent)] == ["pass"] * 5
    assert host.restarts == 0


def test_crash_in_the_middle_of_a_window_costs_one_case(pipelined):
    host = pipelined(window=8, fault="abort", trigger_op="Abs")
    sent = _send_all(host, [NEG, NEG, ABS, NEG, NEG, NEG], timeout=60)
    assert host.pipeline.in_flight() == 6
    outcomes = _outcomes(host, sent)
    assert [o.status for o in outcomes] == ["pass", "pass", "crash", "pass", "pass", "pass"]
    assert outcomes[2].metrics["signal"] == "SIGABRT"
    assert host.restarts == 1
    behind = [ticket for _, ticket in sent[3:]]
    assert all(t.resent == 1 for t in behind), "the cases behind the crash were not re-sent"
    assert all(t.resent == 0 for _, t in sent[:3])


def test_hang_in_the_middle_of_a_window_costs_one_case(pipelined):
    """Every case has the hang's 2 s timeout: the ones queued behind it must not be
    charged the time they waited, since each timeout runs from when the worker could
    start it."""
    host = pipelined(window=8, fault="hang", trigger_op="Abs")
    assert _outcomes(host, _send_all(host, [NEG], timeout=60))[0].status == "pass"  # warm
    started = time.monotonic()
    outcomes = _outcomes(host, _send_all(host, [NEG, ABS, NEG, NEG], timeout=2))
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == ["pass", "timeout", "pass", "pass"]
    assert host.restarts == 1
    assert elapsed < 60, f"a 2 s timeout took {elapsed:.1f} s to take effect"  # not a hang


def test_a_direct_request_waits_for_the_answers_in_flight(pipelined):
    host = pipelined(window=8, fault="abort", trigger_op="Abs")
    sent = _send_all(host, [NEG, NEG, NEG], timeout=60)
    identity = host.identity(60)  # the wire is drained first, then asked
    assert identity["name"] == "shipei-faulty"
    assert host.pipeline.in_flight() == 0
    assert [o.status for o in _outcomes(host, sent)] == ["pass"] * 3


def test_window_setting(monkeypatch):
    monkeypatch.delenv(WINDOW_ENV, raising=False)
    assert configured_window(default=5) == 5
    assert configured_window() in (0, DEFAULT_WINDOW)  # on only with a core to spare
    monkeypatch.setenv(WINDOW_ENV, "3")
    assert configured_window() == 3
    for bad in ("many", "-1"):
        monkeypatch.setenv(WINDOW_ENV, bad)
        with pytest.raises(ValueError, match=WINDOW_ENV):
            configured_window()


SELECTION = "test_abs or test_neg or test_sign or test_floor or test_ceil"


@pytest.mark.extended
def test_shipei_run_records_in_collection_order_with_a_crash_in_the_window(shipei_cli):
    label = "shipei-faulty,fault=abort,trigger_op=Neg"
    result = shipei_cli("run", "--suite", "operators", "-k", SELECTION, "--target", label,
                        "--target", "onnxruntime-cpu", env=PLUGINS | {WINDOW_ENV: "8"})
    assert result.returncode == 1, result.stderr[-2000:]  # the crashes are unexpected
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/operators", "--collect-only", "-q",
         "-p", "no:cacheprovider", "-k", SELECTION, "--target", label,
         "--target", "onnxruntime-cpu"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ) | PLUGINS, check=False)
    order = [line for line in collected.stdout.splitlines() if "::" in line]
    records = result.records()
    assert [r["nodeid"] for r in records] == order
    mine = [r for r in records if r["target"] == label]
    assert {r["status"] for r in mine if r["tags"]["op_type"] == "Neg"} == {"crash"}
    assert all(r["status"] == "pass" for r in mine if r["tags"]["op_type"] != "Neg")
    assert all(r["status"] == "pass" for r in records if r["target"] == "onnxruntime-cpu")


def test_a_bad_window_is_a_usage_error(shipei_cli):
    result = shipei_cli("run", "--suite", "operators", "-k", "test_abs",
                        env={WINDOW_ENV: "lots"})
    assert result.returncode != 0
    assert WINDOW_ENV in result.stderr
    assert "Traceback" not in result.stderr


def test_unsent_bytes_count_the_requests_not_yet_written(pipelined):
    """What the look-ahead's byte bound (``UNSENT_BYTES``) is checked against."""
    from harness.run.pipelined_host import UNSENT_BYTES, Ticket

    pipeline = pipelined().pipeline  # never started: nothing is sent
    pipeline._queue.extend(Ticket(f"k{i}", [b""], 1.0, size=40 << 20) for i in range(2))
    assert pipeline.unsent_bytes() == 80 << 20 > UNSENT_BYTES
    pipeline._queue[0].state = "sent"
    assert pipeline.unsent_bytes() == 40 << 20
    pipeline._queue.clear()
