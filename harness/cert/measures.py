"""Certificate measures: what one criterion counts as a passing case.

A criterion names its measure (``measure = "pass_rate"`` in a profile); the class
registered under that name reads the criterion's own keys (:meth:`Measure.parse`),
judges each case record (:meth:`Measure.passes`) and describes itself on the
certificate page (:meth:`Measure.render`). A new measure is one class here, decorated
with :func:`register`; profiles then name it, and nothing else changes.

How a criterion turns passing cases into a pass rate, and what counts as measured, is
:mod:`harness.cert.evaluate`'s; a measure only says whether one measured case passed.
"""

from __future__ import annotations

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

    def passes(self, record: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def render(self) -> str:
        """One bilingual line for the certificate page."""
        raise NotImplementedError


MEASURES: dict[str, type[Measure]] = {}


def register(cls: type[Measure]) -> type[Measure]:
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
