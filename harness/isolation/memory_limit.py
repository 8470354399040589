"""A ceiling on a worker's memory, so a runaway allocation is the target's own failure.

Without one, a runtime that allocates without bound (MNN on some OneHot graphs) runs
until the kernel's OOM killer ends the worker with SIGKILL, which the harness must
treat as the infrastructure's doing (:data:`harness.isolation.host.EXTERNAL_SIGNALS`). With
one, the allocation fails inside the worker (``std::bad_alloc``, ``MemoryError``, a
NULL from ``malloc``) and the runtime's own reaction, a crash or an error, is recorded
against the target, as any other defect of its.

The ceiling is ``RLIMIT_DATA``: the heap and private writable mappings, which is
what allocators grow. Address-space reservations that are not writable (the .NET
runtime nncase uses reserves hundreds of GiB that way) do not count, so it does not
break runtimes as ``RLIMIT_AS`` would. The worker applies it to itself at start-up
(:func:`apply`); under an emulator that does not pass limits through it may not
take effect, and the worker's facts then say so.
"""

from __future__ import annotations

import os
import re

#: the default ceiling, as a fraction of the machine's physical memory
DEFAULT_FRACTION = 0.75
#: the smallest ceiling accepted (a page): a size that rounds below it is a typo, never a
#: ceiling (0 bytes would be recorded and nothing applied)
MINIMUM = 4096
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_limit() -> int | None:
    """:data:`DEFAULT_FRACTION` of physical memory: one worker past it would have the
    machine swapping or the OOM killer choosing a victim."""
    total = physical_memory()
    return int(total * DEFAULT_FRACTION) if total else None


def parse(text: str) -> int | None:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a byte count; ``"none"`` for no ceiling.
    ValueError for anything else."""
    if text.strip().lower() in ("none", "off", "0"):
        return None
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (use e.g. 8G, 512M or none)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < MINIMUM:
        raise ValueError(f"{text.strip()} is {size} bytes, less than the smallest ceiling "
                         f"({MINIMUM} bytes; none for no ceiling)")
    return size


def describe(limit: int | None) -> str:
    return "none" if limit is None else f"{limit / (1 << 30):.1f} GiB"


def apply(limit: int | None) -> dict[str, object]:
    """Lower this process's ``RLIMIT_DATA`` to ``limit`` bytes (never raise it); what
    took effect, for the worker's facts."""
    if limit is None:
        return {"memory_limit_bytes": None}
    try:
        import resource
    except ImportError:  # not a POSIX system
        return {"memory_limit_bytes": None, "memory_limit_error": "no resource module"}
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        ceiling = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        if soft == resource.RLIM_INFINITY or soft > ceiling:
            resource.setrlimit(resource.RLIMIT_DATA, (ceiling, hard))
        effective = resource.getrlimit(resource.RLIMIT_DATA)[0]
    except (OSError, ValueError) as exc:
        return {"memory_limit_bytes": None, "memory_limit_error": str(exc)}
    return {"memory_limit_bytes": None if effective == resource.RLIM_INFINITY else effective}
