"""The center's own description of a target: what its copy of the driver reports here.

Intake compares a bundle's runs with it (same identity), the audit re-runs cases on
it, and certification cites its driver files.
"""

from __future__ import annotations

from typing import Any

from harness import __version__
from harness.cert.evidence import record_paths
from harness.results.fingerprint import fingerprint, git_commit


def describe_center_target(label: str) -> dict[str, Any]:
    """identity, capabilities, driver files, this machine's environment and harness."""
    from harness.cert.certify import describe_target, installed_suites

    request, described, files = describe_target(label)
    suites = installed_suites()

    def paths(names: list[str]) -> list[str]:
        return record_paths([suites[s] for s in names if s in suites], files)

    return {"label": request.label, "described": described, "driver_files": files,
            "identity": {k: v for k, v in described.items()
                         if k not in ("available", "reason", "capabilities")},
            "environment": fingerprint(),
            "harness": {"version": __version__, "git_commit": git_commit()},
            "record_paths": paths}

