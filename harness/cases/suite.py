"""Helpers for writing suites as plain pytest modules.

:func:`define_tests` turns cases into module-level test functions named after
the cases, so ids read ``test_abs[onnxruntime-cpu]`` and ``-k``, ``-m`` and
``--junitxml`` behave as pytest users expect. The plugin collects each as one
:class:`~harness.run.case_item.CaseItem` per target (no fixtures: a case needs none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from harness.cases.case import Case
from harness.run.case_item import CaseItem

#: the attribute of a test function made by :func:`define_tests` that holds its case
CASE_ATTRIBUTE = "shipei_case_object"


def _make_test(case: Case) -> Callable[..., None]:
    def test(target: Any) -> None:
        target.check(case)

    test.__name__ = test.__qualname__ = case.name
    test.__doc__ = f"{case.suite} case {case.name}"
    setattr(test, CASE_ATTRIBUTE, case)  # so the plugin collects it as case items
    return test


def define_tests(namespace: MutableMapping[str, Any], cases: Iterable[Case],
                 representative: Iterable[str] = (),
                 marks: dict[str, list[pytest.MarkDecorator]] | None = None) -> int:
    """Define one test function per case in ``namespace`` (a module's ``globals()``).

    ``representative`` names the cases that carry the ``representative`` marker;
    ``marks`` adds further markers per case name. Returns the number defined.
    """
    chosen = set(representative)
    extra = marks or {}
    count = 0
    for case in cases:
        if not case.name.startswith("test"):
            raise ValueError(f"case name {case.name!r} must start with 'test'")
        if case.name in namespace:
            raise ValueError(f"case name {case.name!r} defined twice in suite {case.suite}")
        test = _make_test(case)
        test = pytest.mark.shipei_case(suite=case.suite, case=case.name)(test)
        if case.name in chosen:
            test = pytest.mark.representative(test)
        for mark in extra.get(case.name, []):
            test = mark(test)
        namespace[case.name] = test
        count += 1
    return count


def suite_and_case(item: pytest.Item) -> tuple[str, str]:
    """The (suite, case) a test records: from its ``shipei_case`` marker, else from its
    path (``suites/<suite>/...``) and function name."""
    if isinstance(item, CaseItem):
        return item.case.suite, item.case.name
    marker = item.get_closest_marker("shipei_case")
    if marker is not None:
        return marker.kwargs["suite"], marker.kwargs["case"]
    path = Path(str(item.path))
    parts = path.parts
    suite = parts[parts.index("suites") + 1] if "suites" in parts[:-1] else path.parent.name
    return suite, getattr(item, "originalname", item.name)
