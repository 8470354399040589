"""Shipei's own hooks, in pytest's style (pluggy hookspecs).

Plugins implement them with :data:`hookimpl` and register through the
``shipei.plugins`` entry-point group (or a ``SHIPEI_PLUGINS`` entry
``plugins=module:object`` naming a plugin module or object with hook implementations,
:mod:`harness.plugin_entries`); :func:`harness.hooks.plugin_manager` loads them. The
built-in reports are such a plugin (:mod:`harness.reports.builtin`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from harness.results.case_record import CaseRecord
    from harness.results.record_files import RunPaths

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
                         records: list[CaseRecord]) -> list[Path]:
    """Write reports for a run from its effective records; return the files. Every hook
    passes typed records (:class:`~harness.results.case_record.CaseRecord`;
    ``record.to_dict()`` is the JSON form ``records.jsonl`` holds)."""
