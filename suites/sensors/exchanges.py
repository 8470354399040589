"""The sensor suite's live checks: protocol conformance and a host-side
disconnect/reconnect. The driver runs the exchanges in its worker (their wire
details are its protocol's); this module judges what it reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.cases.case import Outcome, outcome_from_exception
from harness.driver.sensor import ConformanceReport, ReconnectTrial
from harness.isolation.host import HOST_FAILURES as HOST_FAILURES  # for the suite's tests
from harness.isolation.host import CaseTimeout, InfraError, RemoteError, WorkerCrash
from suites.sensors.checks import verdict

MIN_SAMPLES = 5


def judge_conformance(report: ConformanceReport) -> Outcome:
    return verdict(list(report.problems), dict(report.metrics),
                   "IDENTIFY, PING, refusals, STREAM_START/STOP as specified")


def judge_reconnect(trial: ReconnectTrial) -> Outcome:
    before, after = trial.before, trial.after
    if len(before) < MIN_SAMPLES:
        return Outcome("fail", f"only {len(before)} samples before the disconnect")
    problems: list[str] = []
    if len(after) < MIN_SAMPLES:
        problems.append(f"only {len(after)} samples after reconnecting")
    reset = trial.restarted.next_seq <= before[-1].seq
    if after and not reset:
        if after[0].seq <= before[-1].seq:
            problems.append("the sequence did not continue across the reconnect")
        if after[0].timestamp_us <= before[-1].timestamp_us:
            problems.append("timestamps went backwards across the reconnect")
    metrics = {"resumed_after_s": trial.resumed_s, "device_reset_on_reconnect": reset,
               "seq_before": before[-1].seq, "seq_after": after[0].seq if after else None}
    how = "restarted its counters" if reset else "continued its sequence and clock"
    return verdict(problems, metrics, f"stream resumed {trial.resumed_s:.2f} s after the "
                                      f"host let go; the device {how}")


def run_with_one_retry(exchange: Callable[[], Any], judge: Callable[[Any], Outcome],
                       during: str, started: float) -> Outcome:
    """Run a live exchange in the worker; a link drop in the middle earns one retry,
    then counts. A device that answers wrongly fails the check."""
    for attempt in (1, 2):
        try:
            outcome = judge(exchange())
        except InfraError as exc:
            if attempt == 2:
                return Outcome("infra_error", f"{during}: {exc}")
            continue
        except RemoteError as exc:
            return Outcome("fail", f"{during}: {exc.exc_type}: {exc.message}")
        except (CaseTimeout, WorkerCrash) as exc:
            return outcome_from_exception(exc, started)
        if attempt == 2:
            outcome.metrics["retried_after_link_drop"] = True
        return outcome
    raise AssertionError("unreachable")
