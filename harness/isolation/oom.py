"""Host evidence of out-of-memory kills, read where the host lets us read it.

:func:`snapshot` counts OOM kills seen by this process's memory cgroup (v2
``memory.events``, v1 ``memory.oom_control``) and reads memory pressure
(``/proc/pressure/memory``). :func:`evidence` compares a snapshot taken when a
worker started with one taken after it died, and adds the kernel log's line
about the worker's pid when ``dmesg`` is readable. Every source is optional:
what cannot be read is simply absent.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2
            dirs += [CGROUP_ROOT / relative, CGROUP_ROOT / "unified" / relative, CGROUP_ROOT]
        elif "memory" in controllers.split(","):
            dirs += [CGROUP_ROOT / "memory" / relative, CGROUP_ROOT / "memory"]
    return dirs


def _read_counter(path: Path, field: str) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def oom_kill_count() -> int | None:
    """OOM kills in this process's memory cgroup so far, or None if unreadable."""
    for folder in _own_cgroup_dirs():
        for name in ("memory.events", "memory.oom_control"):
            count = _read_counter(folder / name, "oom_kill")
            if count is not None:
                return count
    return None


def memory_pressure() -> str | None:
    """The ``full`` line of ``/proc/pressure/memory`` (time all tasks stalled on memory)."""
    try:
        for line in Path("/proc/pressure/memory").read_text().splitlines():
            if line.startswith("full"):
                return line
    except OSError:
        return None
    return None


def snapshot() -> dict[str, Any]:
    return {"oom_kills": oom_kill_count()}


def kernel_log_line(pid: int) -> str | None:
    """The kernel's 'Killed process PID' line, if ``dmesg`` is readable here."""
    try:
        result = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=2,
                                check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    pattern = re.compile(rf"(Killed process|oom-kill:.*pid=){pid}\b")
    lines = [line for line in result.stdout.splitlines() if pattern.search(line)]
    return lines[-1].strip() if lines else None


def evidence(before: dict[str, Any], pid: int | None) -> dict[str, Any]:
    """What the host says about a worker that died from a signal nobody in the harness sent."""
    found: dict[str, Any] = {}
    after = oom_kill_count()
    if before.get("oom_kills") is not None and after is not None:
        found["cgroup_oom_kills"] = after - before["oom_kills"]
    pressure = memory_pressure()
    if pressure:
        found["memory_pressure"] = pressure
    line = kernel_log_line(pid) if pid else None
    if line:
        found["kernel_log"] = line
    found["oom_killed"] = bool(found.get("cgroup_oom_kills") or line)
    return found
