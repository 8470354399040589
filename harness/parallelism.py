"""How many pytest-xdist workers ``shipei run`` uses when ``-n`` is not given.

A driver whose runtime spends most of a case compiling (TVM builds every model
with LLVM) says so with ``Capabilities.extra["compile_bound"] = True``; a run
that selects such a target then compiles on every core (``-n auto``), each
xdist worker with its own target worker, all sharing the driver's on-disk
compile cache. ``-n 0`` keeps one process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from harness.registry import RegistryError, TargetRequest, discover

#: the ``Capabilities.extra`` flag of a target that compiles slowly
COMPILE_BOUND = "compile_bound"


def compile_bound(labels: Iterable[str]) -> list[str]:
    """The labels among ``labels`` whose targets declare themselves compile-bound."""
    registry = discover()
    found = []
    for label in labels:
        try:
            target = registry.build(TargetRequest.parse(label))
            if target.capabilities().extra.get(COMPILE_BOUND):
                found.append(label)
        except (RegistryError, TypeError, ValueError, ImportError):
            continue  # the run itself reports a target it cannot build
    return found


def default_numprocesses(labels: Iterable[str], pytest_args: Iterable[str] = ()
                         ) -> str | None:
    """``"auto"`` when a selected target is compile-bound and pytest-xdist is installed,
    else None (one process, or whatever ``-n`` the pytest arguments already give)."""
    if importlib.util.find_spec("xdist") is None or any(
            a == "-n" or a.startswith(("-n", "--numprocesses")) for a in pytest_args):
        return None
    return "auto" if compile_bound(labels) else None
