"""The manager of Shipei's hooks (:mod:`harness.hookspec`): the built-in plugins and every
registered one. The same manager serves a pytest run and the commands that work from
records alone (``shipei report``, ``shipei merge``), so a report a plugin adds is written
by both."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import metadata
from typing import Any

import pluggy

from harness import hookspec
from harness.driver.registry import load_object
from harness.plugin_entries import PLUGINS_ENV, PluginEntryError, entries_for
from harness.reports.builtin import BuiltinReports

HOOK_NAMES = ("shipei_case_recorded", "shipei_run_finished", "shipei_write_reports")


def _plugin_objects() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for ep in sorted(metadata.entry_points(group=hookspec.PLUGINS_GROUP), key=lambda e: e.name):
        found.append((ep.name, ep.load()))
    for entry in entries_for("plugins"):
        try:
            obj = load_object(entry.reference)
        except Exception as exc:
            if entry.group is None:
                continue  # without a group: the target registry lists what cannot load
            raise PluginEntryError(f"{entry.origin}: cannot load the hook plugin: "
                                   f"{type(exc).__name__}: {exc}", entry.text) from None
        if entry.group is not None or any(hasattr(obj, name) for name in HOOK_NAMES):
            found.append((entry.reference, obj))
    return found


@lru_cache(maxsize=8)
def _manager(plugins: str) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspec.PROJECT)
    manager.add_hookspecs(hookspec)
    manager.register(BuiltinReports(), "shipei-reports")
    for name, obj in _plugin_objects():
        manager.register(obj, name)
    return manager


def plugin_manager() -> pluggy.PluginManager:
    """The manager with the built-in plugins and every registered one (cached per value
    of ``SHIPEI_PLUGINS``)."""
    return _manager(os.environ.get(PLUGINS_ENV, ""))
