"""Finding suites: the ``shipei.suites`` entry-point group (as ``shipei.targets`` is for
drivers).

A suite distribution declares, in its ``pyproject.toml``::

    [project.entry-points."shipei.suites"]
    mysuite = "mysuite_pkg:SUITE"

where ``SUITE`` is a :class:`SuiteSpec` (or a callable returning one or several). The
built-in suites register exactly this way; a ``SHIPEI_PLUGINS`` entry
``suites=module:SUITE`` adds suites during development, a callable as well as a spec
(:mod:`harness.plugin_entries`; an entry without a group is taken only when it names a
``SuiteSpec`` or a list of them).

A spec says everything the core needs to know about a suite, so adding one that appears
in reports, the gate and certificates touches only the suite's own package and a
certification profile:

- ``package``: the importable pytest package (``suites.operators``) run by ``shipei run
  --suite NAME``;
- ``reports``: report writers (``"module:function"``, called as ``f(paths, run_info,
  records) -> list[Path]``) run when a run holds records of this suite;
- ``certificate_section``: how a certificate shows its records: ``"conformance"`` (pass
  counts), ``"models"`` (the model accuracy table) or ``"performance"`` (latency figures);
- ``gate_markexpr``: whether the gate runs the suite when a profile requires it (``None``:
  not in the gate; ``""``: every case; otherwise the marker expression it selects);
- ``cases_from_user``: its cases come from what the user gives a run (``shipei run
  --model``), so no list of them is known ahead: the center checks no universe of cases
  for it and counts none of its records as the operators' regressions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.plugin_entries import PLUGINS_ENV, entries_for

SUITES_GROUP = "shipei.suites"
SECTIONS = ("conformance", "models", "performance")
#: the gate runs these cases of a suite that has no opinion
NOT_IN_GATE = None


class SuiteRegistryError(Exception):
    """A bad suite declaration; the message is one line."""


@dataclass(frozen=True)
class SuiteSpec:
    """How the core knows a suite (see the module docstring)."""

    name: str
    package: str
    title_zh: str
    title_en: str
    reports: tuple[str, ...] = ()
    certificate_section: str | None = "conformance"
    gate_markexpr: str | None = NOT_IN_GATE
    cases_from_user: bool = False
    origin: str = ""

    def __post_init__(self) -> None:
        if self.certificate_section not in (*SECTIONS, None):
            raise SuiteRegistryError(
                f"suite {self.name!r}: certificate_section must be one of {SECTIONS} or None")

    def path(self) -> Path:
        """The suite's folder (found without importing its test modules)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None:
            raise SuiteRegistryError(f"suite {self.name!r}: package {self.package!r} "
                                     "is not importable")
        if spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        if spec.origin:
            return Path(spec.origin)
        raise SuiteRegistryError(f"suite {self.name!r}: package {self.package!r} has no files")


@dataclass
class SuiteRegistry:
    suites: dict[str, SuiteSpec]
    broken: dict[str, str]  # origin -> reason


def _as_specs(value: Any) -> list[SuiteSpec]:
    if callable(value) and not isinstance(value, SuiteSpec):
        value = value()
    if isinstance(value, SuiteSpec):
        return [value]
    if isinstance(value, Iterable):
        specs = list(value)
        if all(isinstance(s, SuiteSpec) for s in specs):
            return specs
    raise SuiteRegistryError(f"expected a SuiteSpec, got {type(value).__name__}")


def _sources(plugins: str) -> Iterable[tuple[str, Any, bool]]:
    """(origin, loader, named as a suite) for each suite source."""
    for ep in sorted(metadata.entry_points(group=SUITES_GROUP), key=lambda e: e.name):
        yield f"entry point {ep.name!r} ({ep.value})", ep.load, True
    from harness.driver.registry import load_object

    for entry in entries_for("suites", plugins):
        yield (entry.origin, lambda ref=entry.reference: load_object(ref),
               entry.group is not None)


def _older_form(load: Any) -> list[SuiteSpec]:
    """A ``SHIPEI_PLUGINS`` entry without a group counts as suites only when it names a
    ``SuiteSpec`` or a list of them outright (a callable there is a target provider)."""
    try:
        loaded = load()
    except Exception:  # the target registry lists an entry that cannot be loaded
        return []
    if isinstance(loaded, SuiteSpec) or (isinstance(loaded, (list, tuple)) and loaded
                                         and all(isinstance(s, SuiteSpec) for s in loaded)):
        return _as_specs(loaded)
    return []


@lru_cache(maxsize=8)
def _discover(plugins: str) -> SuiteRegistry:
    registry = SuiteRegistry({}, {})
    for origin, load, named in _sources(plugins):
        try:
            specs = _as_specs(load()) if named else _older_form(load)
        except Exception as exc:  # a broken suite package must not break the others
            registry.broken[origin] = f"{type(exc).__name__}: {exc}"
            continue
        for spec in specs:
            if spec.name in registry.suites:
                registry.broken[origin] = (f"suite {spec.name!r} is already registered by "
                                           f"{registry.suites[spec.name].origin}")
                continue
            registry.suites[spec.name] = dataclasses.replace(spec, origin=origin)
    return registry


def discover_suites() -> SuiteRegistry:
    """Every registered suite (cached per value of ``SHIPEI_PLUGINS``)."""
    return _discover(os.environ.get(PLUGINS_ENV, ""))


def suite_paths() -> dict[str, Path]:
    """Every registered suite's folder, by name; a suite whose package cannot be found
    is left out."""
    found: dict[str, Path] = {}
    for name, spec in discover_suites().suites.items():
        try:
            found[name] = spec.path()
        except SuiteRegistryError:
            continue
    return found


def suite_spec(name: str) -> SuiteSpec | None:
    return discover_suites().suites.get(name)


def cases_from_user(name: str) -> bool:
    """Whether a suite's cases come from the user's input (see :class:`SuiteSpec`)."""
    spec = suite_spec(name)
    return bool(spec and spec.cases_from_user)
