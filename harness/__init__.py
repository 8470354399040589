"""Shipei (适配): a pytest-driven harness that certifies AI software-hardware compatibility."""

from importlib import metadata

try:
    __version__ = metadata.version("shipei")
except metadata.PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

from harness import moved as _moved

_moved.install()
