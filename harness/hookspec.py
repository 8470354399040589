"""Shipei's own hooks, in pytest's style (pluggy hookspecs).

Plugins implement them with :data:`hookimpl` and register through the
``shipei.plugins`` entry-point group (or ``SHIPEI_PLUGINS`` naming a plugin module or
object with hook implementations). The built-in reports are such a plugin
(:mod:`harness.reporting`). The same manager serves a pytest run and the commands that
work from records alone (``shipei report``, ``shipei merge``), so a report a plugin adds
is written by both.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from harness.case_record import CaseRecord
    from harness.records import RunPaths

PROJECT = "shipei"
PLUGINS_GROUP = "shipei.plugins"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def shipei_case_recorded(record: CaseRecord, paths: RunPaths) -> None:
    """A case record was written to ``records.jsonl`` (called in the controlling process)."""


@hookspec
def shipei_run_finished(paths: RunPaths, run_info: dict[str, Any],
                        records: list[CaseRecord]) -> None:
    """A run ended and its ``run.json`` is final; ``records`` are the effective ones."""


@hookspec
def shipei_write_reports(paths: RunPaths, run_info: dict[str, Any],
                         records: list[dict[str, Any]]) -> list[Path]:
    """Write reports for a run (its effective records as JSON objects); return the files."""


def _plugin_objects() -> list[tuple[str, Any]]:
    from importlib import metadata

    from harness.registry import load_object

    found: list[tuple[str, Any]] = []
    for ep in sorted(metadata.entry_points(group=PLUGINS_GROUP), key=lambda e: e.name):
        found.append((ep.name, ep.load()))
    for reference in filter(None, (p.strip() for p in os.environ.get("SHIPEI_PLUGINS", "")
                                   .split(","))):
        obj = load_object(reference)
        if any(hasattr(obj, name) for name in ("shipei_case_recorded", "shipei_run_finished",
                                                "shipei_write_reports")):
            found.append((reference, obj))
    return found


@lru_cache(maxsize=8)
def _manager(plugins: str) -> pluggy.PluginManager:
    import sys

    from harness import reporting

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(sys.modules[__name__])
    manager.register(reporting.BuiltinReports(), "shipei-reports")
    for name, obj in _plugin_objects():
        manager.register(obj, name)
    return manager


def plugin_manager() -> pluggy.PluginManager:
    """The manager with the built-in plugins and every registered one."""
    return _manager(os.environ.get("SHIPEI_PLUGINS", ""))
