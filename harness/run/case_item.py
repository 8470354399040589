"""The pytest item of one ``define_tests`` case on one target.

A suite's cases are thousands of tiny tests. Collected as pytest ``Function``
items, each would get a fixture closure, a parametrization and a fixture request
of its own, which measured about a third of a millisecond per case: a fifth of the
harness's whole cost on the operator suite. A :class:`CaseItem` is a plain
:class:`pytest.Item` (as pytest's own non-Python tests are) with the same node id
(``test_abs[onnxruntime-cpu]``), the case function's markers and the module's, so
``-k``, ``-m``, node-id selection, ``--junitxml`` and pytest-xdist see what they
saw before. Its setup opens the target as the ``target`` fixture does and its
call runs ``target.check(case)``; a case requests no other fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from harness.cases.case import Case

#: opens a case's target for an item (the plugin's), or ends the test with a skip
TargetOpener = Callable[["CaseItem", str], Any]


class CaseItem(pytest.Item):
    """``case`` on the target labelled ``target_label``."""

    #: a case item requests no fixtures; plugins that read an item's fixture names, as
    #: pytest's own Function items have them (labgrid's does), see none
    fixturenames: tuple[str, ...] = ()

    def __init__(self, *, case: Case, target_label: str, marks: Iterable[pytest.Mark],
                 opener: TargetOpener, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.target_label = target_label
        self._opener = opener
        self.handle: Any = None
        for mark in marks:
            self.own_markers.append(mark)
            self.keywords[mark.name] = mark

    def setup(self) -> None:
        self.handle = self._opener(self, self.target_label)

    def runtest(self) -> None:
        self.handle.check(self.case)

    def teardown(self) -> None:
        self.handle = None

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def case_items(collector: pytest.Collector, name: str, function: Any, case: Case,
               labels: Iterable[str], opener: TargetOpener) -> list[CaseItem]:
    """One item per target label for a function ``define_tests`` made."""
    marks = list(getattr(function, "pytestmark", []))
    return [CaseItem.from_parent(collector, name=f"{name}[{label}]", case=case,
                                 target_label=label, marks=marks, opener=opener)
            for label in labels]


def item_target_label(item: pytest.Item) -> str | None:
    """The target label a test runs on (a case item's, or the ``target`` fixture's
    parameter), or None for a test without a target."""
    if isinstance(item, CaseItem):
        return item.target_label
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get("target") if callspec is not None else None
    return label if isinstance(label, str) else None


def item_case(item: pytest.Item) -> Case | None:
    """The case a ``define_tests`` test runs, or None for any other test."""
    return item.case if isinstance(item, CaseItem) else None
