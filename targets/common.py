"""What the built-in drivers share: their expectations folder and their version."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

EXPECTATIONS_DIR = Path(__file__).resolve().parent / "expectations"


def driver_version() -> str:
    """The built-in drivers ship with the harness, so their version is shipei's."""
    try:
        return metadata.version("shipei")
    except metadata.PackageNotFoundError:
        return "0+unknown"
