"""Environment specs of the built-in drivers whose SDKs need an interpreter of their own.

Each ``*.toml`` here declares one environment (see :mod:`harness.environments.target_envs`);
``shipei env create NAME`` builds it.
"""

from __future__ import annotations

from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent


def provide_environments() -> list[Path]:
    """Entry point (``shipei.environments``) of the built-in drivers' environments."""
    return sorted(SPEC_DIR.glob("*.toml"))
