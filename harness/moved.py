"""The import paths of modules that moved when ``harness/`` was grouped by stage.

Drivers and suites written against the flat layout import ``harness.target``,
``harness.registry``, ``harness.cases`` and the like. Those paths keep working: each
old name is an alias of the module at its new path (the same module object, so a
monkeypatch through either name is seen by both) and importing it warns once with
:class:`DeprecationWarning` naming the new path. ``docs/architecture.md`` maps the
folders to the stages of a run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module (under ``harness.``) -> its path now (under ``harness.``)
MOVED: dict[str, str] = {
    "target": "driver.target",
    "registry": "driver.registry",
    "sensor": "driver.sensor",
    "probe": "driver.probe",
    "suite": "cases.suite",
    "suite_registry": "cases.suite_registry",
    "modelfile": "cases.model_file",
    "fuzz_models": "cases.fuzz_models",
    "judge": "verdicts.judge",
    "undefined": "verdicts.undefined",
    "expectations": "verdicts.expectations",
    "crash_blame": "verdicts.crash_blame",
    "plugin": "run.plugin",
    "selection": "run.selection",
    "pipeline": "run.pipelined_host",
    "prefetch": "run.look_ahead",
    "case_item": "run.case_item",
    "run_writer": "run.writer",
    "target_pool": "run.target_pool",
    "parallelism": "run.parallelism",
    "worker": "isolation.host",
    "worker_main": "isolation.worker_main",
    "wire": "isolation.wire",
    "tensors": "isolation.tensors",
    "memory_limit": "isolation.memory_limit",
    "process_exit": "isolation.process_exit",
    "oom": "isolation.oom",
    "case_record": "results.case_record",
    "records": "results.record_files",
    "runs": "results.build",
    "merge": "results.merge",
    "environment": "results.fingerprint",
    "junit": "reports.junit",
    "matrix": "reports.matrix",
    "reporting": "reports.writing",
    "builtin_reports": "reports.builtin",
    "env_core": "environments.spec",
    "envs": "environments.target_envs",
    "rootfs": "environments.rootfs",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its new name."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves ``harness.<old>`` to the module at its new path, with a warning."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.partition(".")
        if prefix != "harness" or old not in MOVED:
            return None
        new_name = f"harness.{MOVED[old]}"
        warnings.warn(f"{fullname} moved to {new_name}; import it from there "
                      "(the old path will be removed in a later release)",
                      DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (importing ``harness`` does this)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
