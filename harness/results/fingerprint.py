"""The environment fingerprint recorded with every run (and cited by certificates)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions a fingerprint records when installed
RUNTIME_DISTRIBUTIONS = (
    "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "apache-tvm", "numpy",
    "pyserial", "pytest", "mlcommons-loadgen",
)

#: os-release IDs of the domestic (信创) distributions, with their display names
DOMESTIC_OS = {
    "kylin": "Kylin (麒麟)",
    "uos": "UOS (统信)",
    "openeuler": "openEuler (欧拉)",
    "deepin": "Deepin (深度)",
}


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def os_info(os_release: Path = Path("/etc/os-release")) -> dict[str, Any]:
    try:
        values = parse_os_release(os_release.read_text())
    except OSError:
        values = {}
    os_id = values.get("ID", platform.system().lower())
    ids = {os_id, *values.get("ID_LIKE", "").split()}
    name_lower = values.get("NAME", "").lower()
    family = next((label for key, label in DOMESTIC_OS.items()
                   if key in ids or key in name_lower), None)
    return {
        "id": os_id,
        "name": values.get("NAME", platform.system()),
        "version": values.get("VERSION_ID", platform.release()),
        "pretty_name": values.get("PRETTY_NAME", platform.platform()),
        "domestic_distribution": family,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def runtime_versions() -> dict[str, str]:
    versions = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the harness checkout, when running from one."""
    where = path or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def fingerprint() -> dict[str, Any]:
    uname = platform.uname()
    data = {
        "os": os_info(),
        "kernel": uname.release,
        "machine": uname.machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "runtimes": runtime_versions(),
    }
    data["platform_id"] = platform_digest(data)
    return data


def platform_digest(env: dict[str, Any]) -> str:
    """sha256 over what identifies the hardware and OS (not the runtime versions)."""
    stable = {k: env.get(k) for k in ("os", "kernel", "machine", "cpu_model", "cpu_count",
                                       "memory_bytes")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
