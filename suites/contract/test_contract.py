"""The driver contract, against every ``--target``.

Run it with ``shipei run --suite contract --target NAME`` (``shipei gate`` runs it
with the suites the target's kind requires). Every check lands in the run's
records as suite ``contract``; see :mod:`suites.contract.checks` for what each
demands.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.cases.suite import suite_and_case
from harness.isolation.host import ProcessHost
from suites.contract import checks

pytestmark = [pytest.mark.contract, pytest.mark.case_timeout(60)]


def _conclude(target: Any, outcome: Outcome) -> None:
    suite, case = suite_and_case(target.item)
    target.conclude(suite, case, outcome)


def _own_host(target: Any) -> ProcessHost | None:
    """A worker of the check's own, so killing or closing it disturbs no other test."""
    if target.session.config.getoption("shipei_isolation") == "inline":
        return None
    return target.session.pool.fresh_process_host(target.request)


def test_identity_complete(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_identity(target.target, target.request.name), "identity"))


def test_availability_answered(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_availability(target.target), "availability"))


def test_deterministic_outputs(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_determinism(target.host, target.capabilities, target.timeout()),
        "determinism"))


def test_unsupported_op_is_clear_error(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_unsupported_op(target.host, target.capabilities, target.timeout()),
        "unsupported op"))


def _bad_input(target: Any, kind: str) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_bad_input(target.host, target.capabilities, target.timeout(), kind),
        f"wrong input {kind}"))


def test_wrong_input_name_is_clear_error(target: Any) -> None:
    _bad_input(target, "name")


def test_wrong_input_dtype_is_clear_error(target: Any) -> None:
    _bad_input(target, "dtype")


def test_wrong_input_shape_is_clear_error(target: Any) -> None:
    _bad_input(target, "shape")


def test_timeout_honoured(target: Any) -> None:
    host = _own_host(target)
    if host is None:
        outcome = Outcome("skip", "inline isolation cannot enforce timeouts")
    else:
        outcome = checks.run_check(
            lambda: checks.check_timeout(host, target.capabilities, target.timeout()), "timeout")
    _conclude(target, outcome)


def test_resources_released(target: Any) -> None:
    host = _own_host(target)
    _conclude(target, checks.run_check(
        lambda: checks.check_resources(host or target.host, target.capabilities,
                                       target.timeout(), owned=host is not None),
        "resources"))


def test_thread_safety_as_declared(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_thread_safety(target.host, target.capabilities, target.timeout()),
        "thread safety"))


def test_declared_dtypes_match_probe(target: Any) -> None:
    _conclude(target, checks.run_check(
        lambda: checks.check_declared_dtypes(target.host, target.capabilities, target.timeout()),
        "declared element types"))
