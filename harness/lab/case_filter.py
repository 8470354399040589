"""A pytest plugin the farm loads into each child run (``-p harness.lab.case_filter``):
``--farm-skip FILE`` leaves out the cases FILE lists (one ``suite<TAB>case`` a line).

A place lost mid-run leaves part of its shard unfinished; the farm runs that shard again
on another place with the cases already finished listed here. The filter runs after
Shipei's own selection (``--shard``, ``-k``, ``-m``), so the shard is split exactly as
before and only then thinned, and it keys cases by suite and case, not by the target
label (which names the place's URL and differs from place to place).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from harness.run.selection import item_key

OPTION = "--farm-skip"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("shipei").addoption(
        OPTION, dest="shipei_farm_skip", default=None, metavar="FILE",
        help="leave out the cases FILE lists, one 'suite<TAB>case' a line (the farm's "
             "re-queued shards)")


def write_case_list(path: Path, keys: Iterable[tuple[str, str]]) -> None:
    """Write (suite, case) pairs in the form :func:`read_case_list` reads."""
    path.write_text("".join(f"{suite}\t{case}\n" for suite, case in sorted(set(keys))),
                    encoding="utf-8")


def read_case_list(path: Path) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        suite, sep, case = line.partition("\t")
        if not sep or not suite or not case:
            raise pytest.UsageError(f"{OPTION} {path}: line {number} is not 'suite<TAB>case'")
        keys.add((suite, case))
    return keys


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Any:
    result = yield  # Shipei's selection (shard, resume) has chosen its cases first
    path = config.getoption("shipei_farm_skip")
    if path:
        skip = read_case_list(Path(path))
        kept, dropped = [], []
        for item in items:
            key = item_key(item)
            (dropped if key is not None and (key[1], key[2]) in skip else kept).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    return result
