"""Certificate measures: what one criterion counts as a passing case.

A criterion names its measure (``measure = "pass_rate"`` in a profile); the class
registered under that name reads the criterion's own keys (:meth:`Measure.parse`),
says which of the criterion's records are the cases it counts (:meth:`Measure.select`,
all of them unless the measure says otherwise), judges each case record
(:meth:`Measure.passes`) and describes itself on the certificate page
(:meth:`Measure.render`). A new measure is one class here, decorated
with :func:`register`; profiles then name it, and nothing else changes.

Measures are the core's on purpose, with no entry-point group: the center's intake
evaluates the profile on the vendor's records itself, so a measure installed only beside
a vendor's driver would give a level no center can check. :func:`register` refuses a
measure defined outside :mod:`harness.cert`.

How a criterion turns passing cases into a pass rate, and what counts as measured, is
:mod:`harness.cert.evaluate`'s; a measure only says whether one measured case passed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: reads a profile value as a tuple of strings (a list, one string, or "@set")
Strings = Callable[[Any, str], tuple[str, ...]]


class MeasureError(ValueError):
    """A criterion whose measure keys are wrong; the message is one line."""


class Measure:
    """One way of judging a case; subclasses are frozen dataclasses."""

    name: ClassVar[str]
    #: criterion keys this measure reads (refused on criteria of other measures)
    keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str, strings: Strings) -> Measure:
        return cls()

    def select(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records (already matched to the criterion) that are the cases counted."""
        return records

    def passes(self, record: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def render(self) -> str:
        """One bilingual line for the certificate page."""
        raise NotImplementedError

    def shortfalls(self, record: Mapping[str, Any]) -> list[str]:
        """Why a counted case did not pass, with its figures (empty: the measure says
        nothing more than the pass rate)."""
        return []


MEASURES: dict[str, type[Measure]] = {}


#: the package whose measures a certificate may rest on (see the module docstring)
CORE_PACKAGE = "harness.cert."


def register(cls: type[Measure]) -> type[Measure]:
    if not cls.__module__.startswith(CORE_PACKAGE):
        raise MeasureError(f"measure {cls.name!r} ({cls.__module__}.{cls.__qualname__}): "
                           "certificate measures are defined in harness.cert only, so the "
                           "center evaluates the same ones as the vendor")
    if cls.name in MEASURES and MEASURES[cls.name] is not cls:
        raise MeasureError(f"measure {cls.name!r} is already defined by "
                           f"{MEASURES[cls.name].__module__}")
    MEASURES[cls.name] = cls
    return cls


def measure_keys() -> set[str]:
    """Every criterion key some measure reads."""
    return {key for cls in MEASURES.values() for key in cls.keys}


def metric(metrics: Mapping[str, Any], path: str) -> Any:
    """``metrics["summary"]["p50_ms"]`` for the dotted path ``summary.p50_ms``."""
    value: Any = metrics
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


@register
@dataclass(frozen=True)
class PassRate(Measure):
    """A case passes when its status is ``pass``."""

    name: ClassVar[str] = "pass_rate"

    def passes(self, record: Mapping[str, Any]) -> bool:
        return record["status"] == "pass"

    def render(self) -> str:
        return "通过率 / pass rate"


@register
@dataclass(frozen=True)
class MetricMeasure(Measure):
    """A case passes when it passed and carries every listed metric as a finite number
    (within its bound, if one is given) and every listed flag is true."""

    name: ClassVar[str] = "metric"
    keys: ClassVar[tuple[str, ...]] = ("metrics", "bounds", "flags")
    metrics: tuple[str, ...] = ()
    bounds: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str, strings: Strings) -> Measure:
        metrics = strings(data.get("metrics", []), f"{where}: metrics")
        if not metrics:
            raise MeasureError(f"{where}: measure 'metric' needs metrics = [...]")
        bounds = data.get("bounds", {})
        if not isinstance(bounds, Mapping) or not all(_finite_number(v)
                                                      for v in bounds.values()):
            raise MeasureError(f"{where}: bounds: must be a table of numbers")
        if set(bounds) - set(metrics):
            raise MeasureError(f"{where}: bounds may only name listed metrics")
        flags = strings(data.get("flags", []), f"{where}: flags")
        return cls(metrics, {k: float(v) for k, v in bounds.items()}, flags)

    def passes(self, record: Mapping[str, Any]) -> bool:
        if record["status"] != "pass":
            return False
        metrics = record.get("metrics") or {}
        for name in self.metrics:
            value = metric(metrics, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                return False
            if name in self.bounds and value > self.bounds[name]:
                return False
        return all(metric(metrics, flag) is True for flag in self.flags)

    def render(self) -> str:
        parts = [f"{m} ≤ {self.bounds[m]:g}" if m in self.bounds else m for m in self.metrics]
        parts += [f"{flag} = true" for flag in self.flags]
        return "指标 / metrics: " + "; ".join(parts)


#: the tag values a folded twin carries (suites.operators.folded): its family, and the
#: base case whose attribute-like graph inputs it holds as initializers
FOLDED_FAMILY, FOLDED_FROM = "folded", "folded_from"


def _tags(record: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = record.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def _is_twin(record: Mapping[str, Any]) -> bool:
    return _tags(record).get("family") == FOLDED_FAMILY


def folded_bases(records: list[dict[str, Any]]) -> set[str]:
    """The cases that have a folded twin among ``records``: those that feed shapes, axes,
    pads and the like as graph inputs."""
    return {str(_tags(r).get(FOLDED_FROM)) for r in records if _is_twin(r)}


@register
@dataclass(frozen=True)
class StaticForm(PassRate):
    """Kernel correctness on the static form: a case that feeds shapes, axes or pads as
    graph inputs is judged by its folded twin (those inputs as initializers, the form a
    compiled model has), so a toolchain that compiles static graphs is judged on its
    kernels, not on whether its frontend takes dynamic inputs. Each case counts once."""

    name: ClassVar[str] = "static_form"

    def select(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bases = folded_bases(records)
        return [r for r in records if _is_twin(r) or r["case"] not in bases]

    def render(self) -> str:
        return ("静态形式通过率：形状、轴等输入为常量的用例按其折叠孪生用例判定 / pass rate on the "
                "static form: a case feeding shapes, axes or pads as graph inputs is judged "
                "by its folded twin")


@register
@dataclass(frozen=True)
class DynamicInputs(PassRate):
    """Dynamic-shape support: the cases that have a folded twin, judged as given, with
    shapes, axes, pads and the like fed as graph inputs at run time."""

    name: ClassVar[str] = "dynamic_inputs"

    def select(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bases = folded_bases(records)
        return [r for r in records if not _is_twin(r) and r["case"] in bases]

    def render(self) -> str:
        return ("动态输入通过率：形状、轴等作为运行时图输入的用例 / pass rate with shapes, axes "
                "and pads fed as graph inputs at run time")


def _bounds(data: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    table = data.get(key, {})
    if not isinstance(table, Mapping) or not all(_finite_number(v) for v in table.values()):
        raise MeasureError(f"{where}: {key}: must be a table of metric -> number")
    return {str(k): float(v) for k, v in table.items()}


def _figure(value: float) -> str:
    return f"{value:.4g}"


@register
@dataclass(frozen=True)
class TaskMetric(Measure):
    """A task case passes when it passed and its figures lie within the scenario's bounds:
    ``at_least`` (floors), ``at_most`` (ceilings), ``at_most_when_recorded`` (ceilings on a
    figure only some configurations record). ``cases`` (name patterns) picks the cases."""

    name: ClassVar[str] = "task_metric"
    keys: ClassVar[tuple[str, ...]] = ("cases", "at_least", "at_most", "at_most_when_recorded")
    cases: tuple[str, ...] = ()
    at_least: dict[str, float] = field(default_factory=dict)
    at_most: dict[str, float] = field(default_factory=dict)
    at_most_when_recorded: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str, strings: Strings) -> Measure:
        cases = strings(data.get("cases", []), f"{where}: cases")
        found = cls(cases, _bounds(data, "at_least", where), _bounds(data, "at_most", where),
                    _bounds(data, "at_most_when_recorded", where))
        if not (found.cases or found.at_least or found.at_most):
            raise MeasureError(f"{where}: measure 'task_metric' needs cases = [...] or a "
                               "bound (at_least, at_most)")
        return found

    def select(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.cases:
            return records
        patterns = [p.lower() for p in self.cases]
        return [r for r in records
                if any(fnmatch.fnmatchcase(r["case"].lower(), p) for p in patterns)]

    def problems(self, record: Mapping[str, Any]) -> list[str]:
        """Why the case misses, each with its figure; empty when it passes."""
        if record["status"] != "pass":
            said = (record.get("message") or "").strip().splitlines()
            return [f"status {record['status']}" + (f": {said[0][:160]}" if said else "")]
        metrics = record.get("metrics") or {}
        found = []
        for name, floor in self.at_least.items():
            value = metric(metrics, name)
            if not _finite_number(value):
                found.append(f"{name} not recorded (floor {_figure(floor)})")
            elif value < floor:
                found.append(f"{name} = {_figure(value)} < floor {_figure(floor)}")
        for name, ceiling in self.at_most.items():
            value = metric(metrics, name)
            if not _finite_number(value):
                found.append(f"{name} not recorded (ceiling {_figure(ceiling)})")
            elif value > ceiling:
                found.append(f"{name} = {_figure(value)} > ceiling {_figure(ceiling)}")
        for name, ceiling in self.at_most_when_recorded.items():
            value = metric(metrics, name)
            if value is not None and (not _finite_number(value) or value > ceiling):
                shown = _figure(value) if _finite_number(value) else repr(value)
                found.append(f"{name} = {shown} > ceiling {_figure(ceiling)}")
        return found

    def passes(self, record: Mapping[str, Any]) -> bool:
        return not self.problems(record)

    def shortfalls(self, record: Mapping[str, Any]) -> list[str]:
        return [f"{record['case']}: {p}" for p in self.problems(record)]

    def render(self) -> str:
        parts = [f"{m} ≥ {v:g}" for m, v in self.at_least.items()]
        parts += [f"{m} ≤ {v:g}" for m, v in self.at_most.items()]
        parts += [f"{m} ≤ {v:g} (若记录 / when recorded)"
                  for m, v in self.at_most_when_recorded.items()]
        chosen = f"（{', '.join(self.cases)}）" if self.cases else ""
        return (f"任务指标{chosen} / task figures: " + ("; ".join(parts) or
                                                       "通过即可 / the case passes"))
