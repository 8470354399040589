"""Functions the contract runs inside a target's worker through ``Host.call``.

Each receives the compiled executable and a payload and returns plain data, so
the measurement happens where the driver lives (its memory, its descriptors,
its threads), not in the pytest process.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from harness.driver.target import Executable, TargetError


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def resource_usage(executable: Executable, payload: Any = None) -> dict[str, Any]:
    """Resident memory, open file descriptors, threads and child processes of this worker."""
    children: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as handle:
                children += [int(pid) for pid in handle.read().split()]
        except OSError:
            continue
    return {
        "pid": os.getpid(),
        "rss_mib": _status_kib("VmRSS") / 1024.0,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "children": sorted(children),
    }


def run_expecting_error(executable: Executable, feeds: dict[str, Any]) -> dict[str, Any]:
    """Run bad inputs; report what was raised (class, whether a TargetError, message)."""
    try:
        outputs = executable.run(feeds)
    except Exception as exc:
        return {"raised": True, "type": type(exc).__name__,
                "target_error": isinstance(exc, TargetError), "message": str(exc)}
    return {"raised": False, "outputs": sorted(outputs)}


def sleep(executable: Executable, seconds: float) -> float:
    """Stand-in for a request that never ends: the harness must cut it off."""
    time.sleep(seconds)
    return seconds


def concurrent_runs(executable: Executable, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one executable from several threads at once and compare every output with a
    single-threaded run of the same input."""
    feeds: list[dict[str, Any]] = payload["feeds"]
    output = payload["output"]
    threads, rounds = int(payload["threads"]), int(payload["rounds"])
    expected = [np.asarray(executable.run(f)[output]) for f in feeds]
    mismatches: list[str] = []
    errors: list[str] = []
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        start.wait()
        for round_ in range(rounds):
            for j in range(len(feeds)):
                which = (j + index + round_) % len(feeds)
                try:
                    got = np.asarray(executable.run(feeds[which])[output])
                except Exception as exc:  # reported, not raised: the other threads go on
                    errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
                    continue
                if got.shape != expected[which].shape or not np.array_equal(got,
                                                                           expected[which]):
                    mismatches.append(f"thread {index}, input {which}")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"runs": threads * rounds * len(feeds), "mismatches": mismatches[:5],
            "mismatch_count": len(mismatches), "errors": errors[:5], "error_count": len(errors)}
