"""Registers the ``contract`` marker, which ``shipei gate`` selects the suite by."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "contract: the driver contract suite")
