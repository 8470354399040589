"""The conditions a measurement ran under: CPU governor and frequency, load, and
whether anything else was using the CPUs.

"Alone" is judged from ``/proc/stat``: the CPU time the whole machine spent busy
during the measurement, minus what the measured worker itself used. Load
averages before and after are recorded as well, but they lag by a minute and
include our own worker, so they are not the verdict.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_ROOT = Path("/sys/devices/system/cpu")
#: share of the machine's CPU time others may use while we still call the run alone
ALONE_THRESHOLD = 0.05


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_frequency(cpu_root: Path = CPU_ROOT, cpuinfo: Path = Path("/proc/cpuinfo")
                  ) -> dict[str, Any]:
    """Governor and current frequency per CPU, with where they were read from."""
    governors, mhz = {}, {}
    for cpufreq in sorted(cpu_root.glob("cpu[0-9]*/cpufreq")):
        cpu = cpufreq.parent.name
        governor = _read(cpufreq / "scaling_governor")
        if governor:
            governors[cpu] = governor
        khz = _read(cpufreq / "scaling_cur_freq")
        if khz and khz.isdigit():
            mhz[cpu] = int(khz) / 1000.0
    source = "cpufreq" if mhz else None
    if not mhz:
        text = _read(cpuinfo) or ""
        values = [float(line.split(":", 1)[1]) for line in text.splitlines()
                  if line.startswith("cpu MHz") and ":" in line]
        mhz = {f"cpu{i}": v for i, v in enumerate(values)}
        source = "/proc/cpuinfo" if mhz else None
    return {
        "governor": sorted(set(governors.values())) or None,
        "governor_readable": bool(governors),
        "frequency_mhz": mhz or None,
        "frequency_source": source,
    }


def _cpu_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs together."""
    text = _read(stat)
    if not text or not text.startswith("cpu "):
        return None
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


@dataclass
class Snapshot:
    wall: float
    loadavg: tuple[float, float, float] | None
    jiffies: tuple[int, int] | None


def snapshot() -> Snapshot:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return Snapshot(time.monotonic(), load, _cpu_jiffies())


def conditions(before: Snapshot, after: Snapshot, own_cpu_s: float | None) -> dict[str, Any]:
    """What ran beside us between two snapshots; ``own_cpu_s`` is the worker's CPU time."""
    cpus = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu_count": cpus,
        "loadavg_before": list(before.loadavg) if before.loadavg else None,
        "loadavg_after": list(after.loadavg) if after.loadavg else None,
        "foreign_cpu_share": None,
        "alone": None,
        "alone_rule": f"CPU time used by other processes < {ALONE_THRESHOLD:.0%} of the "
                      "machine during the measurement (/proc/stat)",
    }
    if before.jiffies and after.jiffies and own_cpu_s is not None:
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy_s = (after.jiffies[0] - before.jiffies[0]) / tick
        capacity_s = (after.jiffies[1] - before.jiffies[1]) / tick
        if capacity_s > 0:
            share = max(busy_s - own_cpu_s, 0.0) / capacity_s
            info["foreign_cpu_share"] = round(share, 4)
            info["alone"] = share < ALONE_THRESHOLD
    return info
