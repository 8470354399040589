"""One scenario task case as a pytest test: the factory every module of the suite shares.

A task module names its cases and what runs them (a task check of
:mod:`harness.modelzoo.tasks`), and :func:`task_test` makes the test: it runs the check
on the ``target`` fixture and concludes the case with what the reports and the scenario
profiles read (``task``, ``scenarios``, ``model``, ``title``)."""

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import pytest

from harness.cases.case import Outcome
from harness.isolation.host import Host
from harness.modelzoo.zoo import Zoo
from suites.scenarios import SUITE as SPEC

SUITE = SPEC.name
#: the reference-model zoo every task of the suite reads
ZOO = Zoo()


def task_test(case: str, check: Callable[[Any], Outcome], about: Mapping[str, Any], doc: str,
              representative: bool = False) -> Callable[..., None]:
    """A test named ``case`` (``test_…``) that runs ``check(target)`` and concludes the case
    with ``about``; ``representative`` marks it for the per-target CI subset."""
    if not case.startswith("test_"):
        raise ValueError(f"scenario case name {case!r} must start with 'test_'")

    def test(target: Any) -> None:
        target.conclude(SUITE, case, check(target), dict(about))

    test.__name__ = test.__qualname__ = case
    test.__doc__ = doc
    test = pytest.mark.shipei_case(suite=SUITE, case=case)(test)
    if representative:
        test = pytest.mark.representative(test)
    return test


def at_target_precision(check: Callable[[Zoo, Host, str, float, str], Outcome], task: str
                        ) -> Callable[[Any], Outcome]:
    """``check(ZOO, host, precision, timeout, task)`` on a target, at the precision its
    configuration declares (the text embedding and generation checks)."""
    def run(target: Any) -> Outcome:
        return check(ZOO, target.host, target.capabilities.precision, target.timeout(), task)
    return run


def define(namespace: MutableMapping[str, Any], *tests: Callable[..., None]) -> None:
    """Put each test into ``namespace`` (a module's ``globals()``) under its case name."""
    for test in tests:
        if test.__name__ in namespace:
            raise ValueError(f"scenario case {test.__name__!r} defined twice")
        namespace[test.__name__] = test
