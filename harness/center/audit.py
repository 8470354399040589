"""Audit re-run: a seeded random sample of a bundle's cases, run again on the center's own
copy of the target, compared with what the vendor recorded.

The sample is drawn from the case universe of the bundle's runs as the center derives it
(:mod:`harness.center.universe`: what the center's own copy of the suites selects for
the target and the scope intake accepted the bundle for), not from the records the
vendor sent: a case left out of the bundle can be drawn, and then disagrees. Every suite
but the performance suite (whose timings belong to the vendor's machine) is drawn from,
the cases sorted by (suite, case) and picked with ``random.Random(seed)``, so the seed
and the bundle give the same sample anywhere. The re-run goes through ``shipei run``
with ``-k`` naming the sampled cases (records of other cases the expression also matches
are ignored). A case agrees when its status is the vendor's and its accuracy figures are
within the slack below; the audit passes when the share that agrees reaches
``--min-agreement``, else a profile's ``[audit] min_agreement`` (a table profiles do not accept
yet), else 1.0: every sampled case. Timed cases are audited apart (``--retime``,
:mod:`harness.center.retime`): a re-timing that shows the vendor's figures impossible on
the same hardware fails the audit; one the center cannot compare fairly is inconclusive.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.center import universe
from harness.center.bundle import RUNS_DIR, OpenedBundle
from harness.center.bundle_shape import ShapeError, load_runs
from harness.center.retime import TimingComparison, draw_timed, retime
from harness.center.timing_audit import REFUSED
from harness.cert.sections import is_timed
from harness.results.record_files import latest_attempts, load_run

DEFAULT_MIN_AGREEMENT = 1.0
#: error figures: the absolute difference allowed is the case's atol + rtol
ERROR_FIGURES = ("max_abs_error", "max_rel_error")
#: similarity figures (1.0 is perfect): the absolute difference allowed
SIMILARITY_FIGURES = {"min_cosine_similarity": 1e-3, "cosine_similarity": 1e-3,
                      "top1_agreement": 0.0, "top5_overlap": 0.0}
DEFAULT_ERROR_SLACK = 1e-5


class SampleAuditError(Exception):
    """An audit that cannot be made (one line)."""


@dataclass
class AuditedCase:
    suite: str
    case: str
    vendor_status: str
    center_status: str | None
    agrees: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "case": self.case, "vendor_status": self.vendor_status,
                "center_status": self.center_status, "agrees": self.agrees,
                "reason": self.reason}


@dataclass
class AuditResult:
    seed: int
    sample: list[tuple[str, str]]
    comparisons: list[AuditedCase]
    min_agreement: float
    run_id: str
    notes: list[str] = field(default_factory=list)
    #: the re-timed cases (:mod:`harness.center.retime`); one refused fails the audit
    timings: list[TimingComparison] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        if not self.comparisons:
            return 0.0
        return sum(c.agrees for c in self.comparisons) / len(self.comparisons)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and self.agreement >= self.min_agreement \
            and not any(t.status == REFUSED for t in self.timings)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "seed": self.seed, "sample_size": len(self.sample),
                "agreement": round(self.agreement, 6), "min_agreement": self.min_agreement,
                "center_run": self.run_id,
                "sample": [{"suite": s, "case": c} for s, c in self.sample],
                "cases": [c.to_dict() for c in self.comparisons],
                "timings": [t.to_dict() for t in self.timings]}


def vendor_records(bundle: OpenedBundle, target: str) -> list[dict[str, Any]]:
    """The target's effective records over every run in the bundle."""
    records: list[dict[str, Any]] = []
    for run_id in bundle.run_ids():
        raw = bundle.files[f"{RUNS_DIR}/{run_id}/records.jsonl"].decode("utf-8")
        attempts = [r for r in _json_lines(raw) if r.get("target") == target]
        records += latest_attempts(attempts)
    return records


def _json_lines(text: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def case_universe(bundle: OpenedBundle, target: str, markexpr: str | None
                  ) -> list[tuple[str, str]]:
    """Every case the center's copy of the suites selects for the bundle's runs."""
    try:
        infos, attempts = load_runs(bundle.files, bundle.run_ids())
    except ShapeError as exc:
        raise SampleAuditError(str(exc)) from None
    cases: set[tuple[str, str]] = set()
    for run_id, info in infos.items():
        mine = [r for r in attempts[run_id] if r["target"] == target]
        try:
            cases |= universe.expected_cases(universe.run_suites(info, mine), target, markexpr)
        except universe.UniverseError as exc:
            raise SampleAuditError(str(exc)) from None
    return sorted(cases)


def draw_sample(population: list[tuple[str, str]], size: int, seed: int
                ) -> list[tuple[str, str]]:
    """``size`` (suite, case) keys of ``population`` (performance cases left out)."""
    cases = sorted({key for key in population if not is_timed(key[0])})
    if size < 1:
        raise SampleAuditError("--sample must be at least 1")
    if not cases:
        raise SampleAuditError("the bundle's suites have no conformance cases to sample")
    return sorted(random.Random(seed).sample(cases, min(size, len(cases))))


def new_seed() -> int:
    return secrets.randbelow(2**31)


def _figures_agree(vendor: dict[str, Any], center: dict[str, Any]) -> str:
    """'' when the accuracy figures agree, else which one differs and by how much."""
    slack = (_number(vendor.get("atol")) or 0.0) + (_number(vendor.get("rtol")) or 0.0) \
        or DEFAULT_ERROR_SLACK
    limits = {name: slack for name in ERROR_FIGURES} | SIMILARITY_FIGURES
    for name, limit in limits.items():
        a, b = _number(vendor.get(name)), _number(center.get(name))
        if a is None or b is None:
            continue
        if abs(a - b) > limit:
            return f"{name} {a:.3g} (vendor) vs {b:.3g} (center), allowed difference {limit:.3g}"
    return ""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def compare(sample: list[tuple[str, str]], vendor: list[dict[str, Any]],
            center: list[dict[str, Any]]) -> list[AuditedCase]:
    theirs = {(r["suite"], r["case"]): r for r in vendor}
    ours = {(r["suite"], r["case"]): r for r in center}
    found = []
    for key in sample:
        v, c = theirs.get(key), ours.get(key)
        if v is None:
            found.append(AuditedCase(*key, "missing", c["status"] if c else None, False,
                                        "the vendor's bundle has no record of this case"))
            continue
        if c is None:
            found.append(AuditedCase(*key, v["status"], None, False,
                                        "the center's re-run did not record this case"))
            continue
        if c["status"] == "infra_error":
            found.append(AuditedCase(*key, v["status"], c["status"], False,
                                        f"the center could not run it: {c.get('message', '')}"
                                        [:300]))
            continue
        if c["status"] != v["status"]:
            found.append(AuditedCase(*key, v["status"], c["status"], False,
                                        f"status {v['status']} (vendor) vs {c['status']} "
                                        "(center)"))
            continue
        differs = _figures_agree(v.get("metrics") or {}, c.get("metrics") or {})
        found.append(AuditedCase(*key, v["status"], c["status"], not differs, differs))
    return found


def keyword_expression(sample: list[tuple[str, str]]) -> str:
    """``-k`` for the sampled case names, leaving out longer names that start with one
    (``test_add`` alone, not ``test_add_bcast``)."""
    return " or ".join(f"({case} and not {case}_)" for case in sorted({c for _, c in sample}))


def rerun(sample: list[tuple[str, str]], target: str, results_dir: Path, reports_dir: Path,
          run_id: str, case_timeout: float | None = None, pytest_args: list[str] | None = None
          ) -> list[dict[str, Any]]:
    """Run the sampled cases on the center's target; return the records of the sample.
    ``pytest_args`` go after ``--`` (the vendor's timing settings, for a re-timing)."""
    suites = sorted({suite for suite, _ in sample})
    argv = [sys.executable, "-m", "harness", "run", "--target", target,
            "--results-dir", str(results_dir), "--reports-dir", str(reports_dir),
            "--run-id", run_id, "-k", keyword_expression(sample)]
    for suite in suites:
        argv += ["--suite", suite]
    if case_timeout is not None:
        argv += ["--case-timeout", str(case_timeout)]
    if pytest_args:
        argv += ["--", *pytest_args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    run_dir = results_dir / run_id
    if done.returncode not in (0, 1) or not (run_dir / "records.jsonl").exists():
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines()
                or ["no output"])[-1]
        raise SampleAuditError(f"the center's re-run failed (exit status {done.returncode}): "
                               f"{tail}")
    _, records = load_run(run_dir)
    wanted = set(sample)
    return [r for r in records if r.get("target") == target
            and (r["suite"], r["case"]) in wanted]


def min_agreement(profile_definition: dict[str, Any]) -> float:
    audit = profile_definition.get("audit") if isinstance(profile_definition, dict) else None
    value = (audit or {}).get("min_agreement", DEFAULT_MIN_AGREEMENT)
    return float(value)


def audit_bundle(bundle: OpenedBundle, target: str, size: int, seed: int, threshold: float,
                 results_dir: Path, reports_dir: Path, run_id: str,
                 case_timeout: float | None = None, markexpr: str | None = None,
                 retimed: int = 0) -> AuditResult:
    """Draw the sample from the universe of the bundle's runs (``markexpr``: the scope the
    bundle was accepted for), re-run it here and compare with the vendor's records; then
    time ``retimed`` of the bundle's timed cases again here (same seed) and compare."""
    records = vendor_records(bundle, target)
    sample = draw_sample(case_universe(bundle, target, markexpr), size, seed)
    center = rerun(sample, target, results_dir, reports_dir, run_id, case_timeout)
    comparisons = compare(sample, records, center)
    timings = retime(bundle, draw_timed(records, retimed, seed),
                     lambda keys, own_run, args: rerun(keys, target, results_dir, reports_dir,
                                                       own_run, case_timeout, args),
                     results_dir, run_id)
    return AuditResult(seed, sample, comparisons, threshold, run_id, timings=timings)
