"""Small pieces the serial driver's modules share."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"


def driver_version() -> str:
    try:
        return metadata.version("shipei")
    except metadata.PackageNotFoundError:
        return "0+unknown"
