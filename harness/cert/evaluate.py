"""Computing a certification level from run records and a profile.

The same function runs when a certificate is issued and when ``shipei cert
verify --records`` recomputes it, so a certificate's level is exactly what its
records say. A certificate names the evaluator version it was computed with
(``evaluator_version`` in its predicate, absent = ``"1"``), and verification uses
that version: each entry of :data:`EVALUATORS` is frozen once released, so a change
to evaluation is a new version and certificates issued before it still verify.
A test pins every version's results on fixed records. Rules:

- records are per case; a case recorded more than once (a retry) is folded into one
  outcome. Version ``"2"`` (current) folds with :func:`harness.results.case_record.fold_attempts`,
  as the gate, merge and reports do: an ``infra_error`` attempt is cleared by a later
  one, and an unexpected failure followed by a pass is ``flaky`` (not a pass). Version
  ``"1"`` counted a case as a pass only if every attempt that was not an
  ``infra_error`` passed;
- ``infra_error`` is the harness's failure: it never counts against the target,
  but a criterion with such a case is *not measured* until it is re-run;
- a criterion's measure says which of its matched records are the cases counted
  (:meth:`harness.cert.measures.Measure.select`): ``static_form`` judges a case that has
  a folded twin by the twin, ``dynamic_inputs`` counts only such cases, as given;
- a skipped case matching a criterion's ``not_applicable`` patterns does not count
  at all (the check does not apply to the target);
- a criterion is *not measured* when its suite has no records, too few cases were
  measured, or (in a complete scope) a value its ``coverage`` names has no case;
- a level is awarded when every criterion it requires is measured and every
  measured criterion reaches its threshold for that level; a scope may cap it. A
  criterion without thresholds is reported and never bars a level.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from harness.cert.measures import metric  # noqa: F401 - re-exported for older callers
from harness.cert.profile import GRADED_LEVELS, Criterion, Profile, Scope
from harness.results.case_record import CaseRecord, RecordError, fold_attempts

NOT_MEASURED = "not measured"
#: per-case shortfalls a criterion keeps on the certificate
MAX_SHORT = 20


@dataclass
class CriterionResult:
    criterion: Criterion
    selected: int = 0
    measured: int = 0
    passed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # why it is not measured; empty when measured
    missing: list[str] = field(default_factory=list)
    not_applicable: int = 0  # skipped cases that do not apply (criterion.not_applicable)
    #: why counted cases missed, with their figures, where the measure says (task_metric)
    shortfalls: list[str] = field(default_factory=list)

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
            # only where the profile uses it, so certificates without it recompute alike
            **({"not_applicable": self.not_applicable} if c.not_applicable else {}),
            **({"shortfalls": list(self.shortfalls)} if self.shortfalls else {}),
        }


@dataclass
class Evaluation:
    level: str
    issuable: bool
    scope: Scope
    criteria: list[CriterionResult]
    blockers: dict[str, list[str]]  # level -> why it was not awarded
    suites: dict[str, dict[str, Any]]
    evaluator_version: str = "1"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "scope": self.scope.name,
                "evaluator_version": self.evaluator_version,
                "criteria": [r.to_dict() for r in self.criteria],
                "blockers": self.blockers, "suites": self.suites}


def case_outcomes(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Evaluator 1 (frozen): one record per (suite, case); a retried case passes only if
    every attempt that was not an ``infra_error`` passed."""
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


def fold_v1(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(case_outcomes(records).values())


def fold_v2(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluator 2: the effective record of each case by :func:`fold_attempts`, the rule
    the gate, merge and reports use. Raises :class:`RecordError` on a record that is not
    one."""
    typed = [CaseRecord.from_dict(r) for r in records]
    return [dict(r.to_dict(), attempts=1 + len(r.previous_attempts))
            for r in fold_attempts(typed)]


#: evaluator version -> how attempts fold into one outcome per case; frozen once released
EVALUATORS: dict[str, Callable[[Iterable[dict[str, Any]]], list[dict[str, Any]]]] = {
    "1": fold_v1,
    "2": fold_v2,
}
#: the version new certificates are computed with
EVALUATOR_VERSION = "2"


class EvaluationError(ValueError):
    """Records or an evaluator version that cannot be evaluated; one-line message."""


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


def _does_not_apply(record: dict[str, Any], criterion: Criterion) -> bool:
    case = record["case"].lower()
    return record["status"] == "skip" and any(
        fnmatch.fnmatchcase(case, p.lower()) for p in criterion.not_applicable)


def measure(criterion: Criterion, outcomes: list[dict[str, Any]], scope: Scope,
            suites_present: set[str]) -> CriterionResult:
    result = CriterionResult(criterion)
    chosen = criterion.rule.select([r for r in outcomes if _matches(r, criterion)])
    if criterion.not_applicable:
        applicable = [r for r in chosen if not _does_not_apply(r, criterion)]
        result.not_applicable = len(chosen) - len(applicable)
        chosen = applicable
    result.selected = len(chosen)
    result.counts = dict(Counter(r["status"] for r in chosen))
    counted = [r for r in chosen if r["status"] != "infra_error"
               and not (criterion.skips == "unmeasured" and r["status"] == "skip")]
    result.measured = len(counted)
    result.passed = sum(1 for r in counted if criterion.rule.passes(r))
    result.shortfalls = [s for r in counted for s in criterion.rule.shortfalls(r)][:MAX_SHORT]
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
    detail = f" ({'; '.join(result.shortfalls[:3])})" if result.shortfalls else ""
    return (f"{result.criterion.id}: {result.passed}/{result.measured} = "
            f"{result.value:.2%} below {threshold:.0%}{detail}")


def evaluate(profile: Profile, scope_name: str, records: Iterable[dict[str, Any]],
             version: str = EVALUATOR_VERSION) -> Evaluation:
    """The level ``records`` (one target's, from the cited runs) earn under ``profile``,
    computed by evaluator ``version``; raise :class:`EvaluationError` for an unknown
    version or records that are not records."""
    scope = profile.scope(scope_name)
    if version not in EVALUATORS:
        raise EvaluationError(f"evaluator version {version!r} is not known to this shipei "
                              f"(known: {', '.join(EVALUATORS)})")
    try:
        outcomes = EVALUATORS[version](records)
    except (RecordError, KeyError, TypeError, AttributeError) as exc:
        raise EvaluationError(f"the records cannot be evaluated ({type(exc).__name__}: "
                              f"{exc})") from None
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
    return Evaluation(level, issuable, scope, results, blockers, suite_summaries(outcomes),
                      version)
