"""Options, marker and model selection of the performance suite
(``shipei run --suite performance``)."""

from __future__ import annotations

import pytest

from harness.perf.settings import DEFAULTS
from harness.perf.suite import PERF_MARKER, add_options, settings_for
from suites.performance.cases import known_models, suite_models


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    parser.getgroup("shipei-perf").addoption(
        "--perf-model", action="append", default=[], dest="perf_models", metavar="NAME",
        help=f"time only these models; repeatable (default {', '.join(suite_models())}; "
             f"known: {', '.join(known_models())})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PERF_MARKER}: a timed performance case (excluded from the default "
                   "test run; run with shipei run --suite performance)")
    for base in DEFAULTS.values():  # a bad --perf-* value is a usage error, before any case
        settings_for(config, base)
    unknown = sorted(set(config.getoption("perf_models")) - set(known_models()))
    if unknown:
        raise pytest.UsageError(f"--perf-model: unknown model(s) {unknown}; known: "
                                f"{', '.join(known_models())}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(config.getoption("perf_models") or suite_models())
    keep, drop = [], []
    for item in items:
        case = getattr(getattr(item, "function", None), "shipei_perf_case", None)
        (drop if case is not None and case.model not in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
