"""Computing a certification level from run records and a profile.

The same function runs when a certificate is issued and when ``shipei cert
verify --records`` recomputes it, so a certificate's level is exactly what its
records say. Rules:

- records are per case; a case recorded more than once (a retry) counts as a
  pass only if every attempt that was not an ``infra_error`` passed;
- ``infra_error`` is the harness's failure: it never counts against the target,
  but a criterion with such a case is *not measured* until it is re-run;
- a criterion is *not measured* when its suite has no records, too few cases were
  measured, or (in a complete scope) a value its ``coverage`` names has no case;
- a level is awarded when every criterion it requires is measured and every
  measured criterion reaches its threshold for that level; a scope may cap it.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from harness.cert.profile import GRADED_LEVELS, Criterion, Profile, Scope

NOT_MEASURED = "not measured"


@dataclass
class CriterionResult:
    criterion: Criterion
    selected: int = 0
    measured: int = 0
    passed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # why it is not measured; empty when measured
    missing: list[str] = field(default_factory=list)

    @property
    def is_measured(self) -> bool:
        return not self.reason

    @property
    def value(self) -> float | None:
        return self.passed / self.measured if self.is_measured and self.measured else None

    def meets(self, level: str) -> bool:
        threshold = self.criterion.thresholds.get(level)
        if threshold is None:
            return True
        return self.is_measured and Fraction(self.passed) >= Fraction(str(threshold)) * \
            self.measured

    def to_dict(self) -> dict[str, Any]:
        c = self.criterion
        return {
            "id": c.id, "title_zh": c.title_zh, "title_en": c.title_en, "suite": c.suite,
            "measure": c.measure, "thresholds": dict(c.thresholds), "required": c.required,
            "measured": self.is_measured, "value": self.value, "passed": self.passed,
            "measured_cases": self.measured, "selected_cases": self.selected,
            "counts": dict(sorted(self.counts.items())), "reason": self.reason,
            "missing": list(self.missing),
            "met": {level: self.meets(level) for level in c.thresholds},
        }


@dataclass
class Evaluation:
    level: str
    issuable: bool
    scope: Scope
    criteria: list[CriterionResult]
    blockers: dict[str, list[str]]  # level -> why it was not awarded
    suites: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "scope": self.scope.name,
                "criteria": [r.to_dict() for r in self.criteria],
                "blockers": self.blockers, "suites": self.suites}


def case_outcomes(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """One record per (suite, case), its status folded over retries as the module says."""
    attempts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        attempts.setdefault((record["suite"], record["case"]), []).append(record)
    folded = {}
    for key, tries in attempts.items():
        real = [r for r in tries if r["status"] != "infra_error"] or tries
        bad = next((r for r in real if r["status"] != "pass"), None)
        chosen = bad or real[-1]
        folded[key] = dict(chosen, attempts=len(tries))
    return folded


def _matches(record: dict[str, Any], criterion: Criterion) -> bool:
    if record["suite"] != criterion.suite:
        return False
    tags = record.get("tags") or {}
    for key, allowed in criterion.match.items():
        value = tags.get(key)
        if isinstance(value, list):
            if not value or any(v not in allowed for v in value):
                return False
        elif value not in allowed:
            return False
    case = record["case"].lower()
    return not any(fnmatch.fnmatchcase(case, p.lower()) for p in criterion.exclude_cases)


def metric(metrics: dict[str, Any], path: str) -> Any:
    """``metrics["summary"]["p50_ms"]`` for the dotted path ``summary.p50_ms``."""
    value: Any = metrics
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _passes(record: dict[str, Any], criterion: Criterion) -> bool:
    if record["status"] != "pass":
        return False
    if criterion.measure == "pass_rate":
        return True
    metrics = record.get("metrics") or {}
    for name in criterion.metrics:
        value = metric(metrics, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            return False
        if name in criterion.bounds and value > criterion.bounds[name]:
            return False
    return all(metric(metrics, flag) is True for flag in criterion.flags)


def measure(criterion: Criterion, outcomes: list[dict[str, Any]], scope: Scope,
            suites_present: set[str]) -> CriterionResult:
    result = CriterionResult(criterion)
    chosen = [r for r in outcomes if _matches(r, criterion)]
    result.selected = len(chosen)
    result.counts = dict(Counter(r["status"] for r in chosen))
    counted = [r for r in chosen if r["status"] != "infra_error"
               and not (criterion.skips == "unmeasured" and r["status"] == "skip")]
    result.measured = len(counted)
    result.passed = sum(1 for r in counted if _passes(r, criterion))
    infra = result.counts.get("infra_error", 0)
    if criterion.suite not in suites_present:
        result.reason = f"suite {criterion.suite!r} has no records"
    elif not chosen:
        result.reason = f"no case of suite {criterion.suite!r} matches this criterion"
    elif infra:
        result.reason = (f"{infra} case(s) ended in infra_error (a harness failure, "
                         "not the target's); re-run them")
    elif result.measured < criterion.min_cases:
        result.reason = (f"{result.measured} measured case(s); at least "
                         f"{criterion.min_cases} needed")
    if criterion.coverage:
        seen = {(r.get("tags") or {}).get(criterion.coverage) for r in counted}
        result.missing = [v for v in criterion.match[criterion.coverage] if v not in seen]
        if result.missing and scope.complete and not result.reason:
            shown = ", ".join(result.missing[:8]) + (" ..." if len(result.missing) > 8 else "")
            result.reason = (f"{len(result.missing)} {criterion.coverage} value(s) have no "
                             f"measured case: {shown}")
    return result


def suite_summaries(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summaries: dict[str, dict[str, Any]] = {}
    for record in outcomes:
        summary = summaries.setdefault(record["suite"], {"cases": 0, "counts": {},
                                                         "retried_cases": 0})
        summary["cases"] += 1
        summary["counts"][record["status"]] = summary["counts"].get(record["status"], 0) + 1
        if record.get("attempts", 1) > 1:
            summary["retried_cases"] += 1
    for summary in summaries.values():
        summary["counts"] = dict(sorted(summary["counts"].items()))
    return dict(sorted(summaries.items()))


def _describe_shortfall(result: CriterionResult, level: str) -> str:
    threshold = result.criterion.thresholds[level]
    return (f"{result.criterion.id}: {result.passed}/{result.measured} = "
            f"{result.value:.2%} below {threshold:.0%}")


def evaluate(profile: Profile, scope_name: str, records: Iterable[dict[str, Any]]
             ) -> Evaluation:
    """The level ``records`` (one target's, from the cited runs) earn under ``profile``."""
    scope = profile.scope(scope_name)
    outcomes = list(case_outcomes(records).values())
    present = {r["suite"] for r in outcomes}
    results = [measure(c, outcomes, scope, present) for c in profile.criteria]
    blockers: dict[str, list[str]] = {}
    level, issuable = "none", False
    for candidate in GRADED_LEVELS:
        reasons = []
        if GRADED_LEVELS.index(candidate) < GRADED_LEVELS.index(scope.max_level):
            reasons.append(f"scope {scope.name!r} is capped at {scope.max_level!r}")
        for result in results:
            if not result.is_measured:
                if result.criterion.required_for(candidate):
                    reasons.append(f"{result.criterion.id}: {NOT_MEASURED} ({result.reason})")
            elif not result.meets(candidate):
                reasons.append(_describe_shortfall(result, candidate))
        blockers[candidate] = reasons
        if not reasons:
            level, issuable = candidate, True
            break
    if level == "none":
        lowest = GRADED_LEVELS[-1]
        issuable = any(r.is_measured and not r.meets(lowest) for r in results)
    return Evaluation(level, issuable, scope, results, blockers, suite_summaries(outcomes))
