"""How many pytest-xdist workers ``shipei run`` uses when ``-n`` is not given.

A driver whose runtime spends most of a case compiling (TVM builds every model
with LLVM) says so with ``Capabilities.extra["compile_bound"] = True``; a run
that selects such a target then compiles on every core (``-n auto``) when cores
are idle, each xdist worker with its own target worker, all sharing the driver's
on-disk compile cache. ``-n 0`` keeps one process.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

from harness.driver.registry import RegistryError, TargetRequest, discover

#: the ``Capabilities.extra`` flag of a target that compiles slowly
COMPILE_BOUND = "compile_bound"
#: idle cores below which parallel compiles do not pay
MIN_IDLE_CORES = 2.0


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


def idle_cores() -> float:
    """Cores not busy over the last minute (core count less the load average)."""
    try:
        return (os.cpu_count() or 1) - os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume the cores are ours
        return float(os.cpu_count() or 1)


def default_numprocesses(labels: Iterable[str], pytest_args: Iterable[str] = ()
                         ) -> str | None:
    """``"auto"`` when a selected target is compile-bound, pytest-xdist is installed and
    at least :data:`MIN_IDLE_CORES` cores are idle; else None (one process, or whatever
    ``-n`` the pytest arguments already give). On a busy machine the xdist workers only
    take turns and each pays for collecting the suite (measured slower)."""
    if importlib.util.find_spec("xdist") is None or idle_cores() < MIN_IDLE_CORES or any(
            a == "-n" or a.startswith(("-n", "--numprocesses")) for a in pytest_args):
        return None
    return "auto" if compile_bound(labels) else None
