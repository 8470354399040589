"""Latency regression check between two runs, on their stored samples.

For every case measured in both runs the statistic is the relative change of the
median inference time (the p50 the records hold, LoadGen's rule:
:func:`harness.perf.stats.percentile_of`), ``new / baseline - 1``. Its confidence interval comes
from a circular block bootstrap of each run's samples (blocks of consecutive
samples keep the time-correlated noise of a busy machine in the interval
instead of pretending every sample is independent).

Verdicts, with ``threshold`` t and interval [lo, hi]:

- ``regression``: lo > t - slower by more than the threshold, with confidence;
- ``improvement``: hi < -t;
- ``slower`` / ``faster``: the interval excludes 0 but not the threshold band;
- ``no change``: the interval contains 0.

Only ``regression`` fails the check. Run-to-run drift (another job on the
machine, a process that landed on a slower memory layout) is not sampling noise:
give each side several runs of its build and the bootstrap resamples the runs
too, so their spread widens the interval; the threshold absorbs what remains
(see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.perf import samples as samples_io
from harness.perf.stats import percentile_of
from harness.results.record_files import load_run

DEFAULT_THRESHOLD = 0.10
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
_CHUNK = 50


@dataclass
class CaseComparison:
    baseline_target: str
    new_target: str
    case: str
    scenario: str
    baseline_median_ms: float
    new_median_ms: float
    change: float
    ci_low: float
    ci_high: float
    baseline_count: int
    new_count: int
    baseline_runs: int
    new_runs: int
    p99_change: float
    verdict: str


@dataclass
class Comparison:
    baseline_run: str
    new_run: str
    threshold: float
    confidence: float
    cases: list[CaseComparison] = field(default_factory=list)
    #: "target case: why" for every case that could not be compared
    not_compared: list[str] = field(default_factory=list)
    pairs: dict[str, str] = field(default_factory=dict)
    #: "target case: run R: why" for every compared case a side measured while other
    #: processes used the machine (its record's ``machine.alone`` is false)
    contended: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CaseComparison]:
        return [c for c in self.cases if c.verdict == "regression"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["regression_count"] = len(self.regressions)
        return data


def block_bootstrap_medians(samples: np.ndarray, resamples: int, rng: np.random.Generator,
                            block: int | None = None) -> np.ndarray:
    """Medians of ``resamples`` circular block-bootstrap resamples of ``samples``."""
    values = np.asarray(samples, dtype=np.float64)
    n = values.size
    length = block or max(1, round(n ** (1 / 3)))
    blocks = -(-n // length)
    extended = np.concatenate([values, values[:length]])
    offsets = np.arange(length)
    medians = np.empty(resamples)
    for first in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - first)
        starts = rng.integers(0, n, size=(count, blocks))
        index = (starts[:, :, None] + offsets).reshape(count, -1)[:, :n]
        medians[first:first + count] = percentile_of(extended[index], 50, axis=1)
    return medians


def change_interval(baseline: np.ndarray | Sequence[np.ndarray],
                    new: np.ndarray | Sequence[np.ndarray],
                    confidence: float = DEFAULT_CONFIDENCE,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                    ) -> tuple[float, float, float]:
    """(change, low, high): relative change of the median and its bootstrap interval.

    Each side is one run's samples or several runs' (repeats of the same build).
    With several, the bootstrap is hierarchical: runs are resampled, then blocks
    within each run, so run-to-run spread widens the interval. A side's statistic
    is the mean of its runs' medians.
    """
    rng = np.random.default_rng(seed)
    base_runs, new_runs = _runs(baseline), _runs(new)
    base_boot = _side_bootstrap(base_runs, resamples, rng)
    new_boot = _side_bootstrap(new_runs, resamples, rng)
    ratios = new_boot / base_boot - 1.0
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = percentile_of(ratios, tail), percentile_of(ratios, 100.0 - tail)
    change = _side_median(new_runs) / _side_median(base_runs) - 1.0
    return change, float(low), float(high)


def _runs(side: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(side, np.ndarray):
        return [side]
    if not side:
        raise ValueError("no samples")
    return list(side)


def _side_median(runs: list[np.ndarray]) -> float:
    return float(np.mean([percentile_of(r, 50) for r in runs]))


def _side_bootstrap(runs: list[np.ndarray], resamples: int, rng: np.random.Generator
                    ) -> np.ndarray:
    medians = np.stack([block_bootstrap_medians(r, resamples, rng) for r in runs])
    if len(runs) == 1:
        return medians[0]
    chosen = rng.integers(0, len(runs), size=(resamples, len(runs)))
    return medians[chosen, np.arange(resamples)[:, None]].mean(axis=1)


def verdict(low: float, high: float, threshold: float) -> str:
    if low > threshold:
        return "regression"
    if high < -threshold:
        return "improvement"
    if low > 0:
        return "slower"
    if high < 0:
        return "faster"
    return "no change"


def _measured(run_dir: Path) -> tuple[str, dict[tuple[str, str], dict[str, Any]], list[str]]:
    info, records = load_run(run_dir)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    unusable = []
    for record in records:
        if "perf_schema_version" not in record.get("metrics", {}):
            continue
        key = (record["target"], record["case"])
        if record["status"] == "pass" and record["metrics"].get("samples_file"):
            found[key] = record
        else:
            found.pop(key, None)
            unusable.append(f"{record['target']} {record['case']}: {record['status']} "
                            f"in run {info.get('run_id', run_dir.name)}")
    return str(info.get("run_id", run_dir.name)), found, unusable


def pair_targets(baseline: set[str], new: set[str], pairs: Mapping[str, str] | None
                 ) -> dict[str, str]:
    """Baseline label -> new label: explicit pairs, else equal labels, else the only two."""
    if pairs:
        return dict(pairs)
    common = {label: label for label in sorted(baseline & new)}
    if not common and len(baseline) == 1 and len(new) == 1:
        return {next(iter(baseline)): next(iter(new))}
    return common


def compare_runs(baseline: Path | Sequence[Path], new: Path | Sequence[Path],
                 threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE,
                 pairs: Mapping[str, str] | None = None,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Comparison:
    """Compare every performance case the two sides share; see the module docstring.

    Each side is a run folder or several (repeats of one build, whose spread then
    counts in the interval).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if threshold < 0:
        raise ValueError(f"threshold must not be negative, not {threshold}")
    base_side, new_side = _side(baseline), _side(new)
    result = Comparison("+".join(r.run_id for r in base_side),
                        "+".join(r.run_id for r in new_side), threshold, confidence,
                        not_compared=[why for r in base_side + new_side for why in r.unusable])
    base_labels = {t for r in base_side for t, _ in r.cases}
    result.pairs = pair_targets(base_labels, {t for r in new_side for t, _ in r.cases}, pairs)
    for target, case in sorted({key for r in base_side for key in r.cases}):
        other = result.pairs.get(target)
        try:
            base_s, record = _samples(base_side, target, case)
            new_s, _ = _samples(new_side, str(other), case) if other else ([], None)
        except samples_io.SamplesError as exc:
            result.not_compared.append(f"{target} {case}: {exc}")
            continue
        if not new_s:
            result.not_compared.append(f"{target} {case}: not measured in run "
                                       f"{result.new_run}")
            continue
        sizes = {s.samples_per_query for s in base_s + new_s}
        if len(sizes) > 1:
            result.not_compared.append(f"{target} {case}: batch sizes {sorted(sizes)} differ")
            continue
        result.cases.append(_compare_case(target, str(other), case, record, base_s, new_s,
                                          threshold, confidence, resamples, seed))
        result.contended += contention(base_side, target, case) + \
            contention(new_side, str(other), case)
    return result


def contention(side: list[_Run], target: str, case: str) -> list[str]:
    """Each run of ``side`` that measured ``case`` on ``target`` while not alone on its
    machine, as "target case: run R: why" (its figures then say more about the others)."""
    found = []
    for run in side:
        record = run.cases.get((target, case))
        machine = (record or {}).get("metrics", {}).get("machine") or {}
        if machine.get("alone") is False:
            share = machine.get("foreign_cpu_share")
            why = (f"other processes used {share:.0%} of the CPU time"
                   if isinstance(share, (int, float)) else "other processes used the CPUs")
            found.append(f"{target} {case}: run {run.run_id}: {why}")
    return found


@dataclass
class _Run:
    run_id: str
    folder: Path
    cases: dict[tuple[str, str], dict[str, Any]]
    unusable: list[str]


def _side(folders: Path | Sequence[Path]) -> list[_Run]:
    listed = [folders] if isinstance(folders, (str, Path)) else list(folders)
    if not listed:
        raise ValueError("no run to compare")
    runs = []
    for folder in map(Path, listed):
        run_id, cases, unusable = _measured(folder)
        runs.append(_Run(run_id, folder, cases, unusable))
    return runs


def _samples(side: list[_Run], target: str, case: str
             ) -> tuple[list[samples_io.Samples], dict[str, Any] | None]:
    found, record = [], None
    for run in side:
        if (target, case) in run.cases:
            record = run.cases[(target, case)]
            found.append(samples_io.load(run.folder, record["metrics"]["samples_file"]))
    return found, record


def _compare_case(base_target: str, new_target: str, case: str, record: dict[str, Any] | None,
                  base: list[samples_io.Samples], new: list[samples_io.Samples],
                  threshold: float, confidence: float, resamples: int, seed: int
                  ) -> CaseComparison:
    base_ns, new_ns = [s.latency_ns for s in base], [s.latency_ns for s in new]
    change, low, high = change_interval(base_ns, new_ns, confidence, resamples, seed)
    p99 = (np.mean([percentile_of(x, 99) for x in new_ns])
           / np.mean([percentile_of(x, 99) for x in base_ns]))
    return CaseComparison(
        baseline_target=base_target, new_target=new_target, case=case,
        scenario=str((record or {}).get("metrics", {}).get("scenario", "")),
        baseline_median_ms=_side_median(base_ns) / 1e6,
        new_median_ms=_side_median(new_ns) / 1e6,
        change=change, ci_low=low, ci_high=high,
        baseline_count=sum(x.size for x in base_ns), new_count=sum(x.size for x in new_ns),
        baseline_runs=len(base_ns), new_runs=len(new_ns),
        p99_change=float(p99) - 1.0, verdict=verdict(low, high, threshold))


def format_table(result: Comparison) -> list[str]:
    """Human-readable lines: one per case, then what was not compared, then the verdict."""
    level = f"{result.confidence:.0%}"
    lines = [f"baseline {result.baseline_run}  ->  new {result.new_run}   "
             f"(threshold {result.threshold:.1%}, {level} block-bootstrap interval)"]
    for base, new in sorted(result.pairs.items()):
        if base != new:
            lines.append(f"comparing target {base} (baseline) with {new} (new)")
    header = ("case", "target", "base p50 ms", "new p50 ms", "change", f"{level} interval",
              "p99 change", "verdict")
    if any(c.baseline_runs > 1 or c.new_runs > 1 for c in result.cases):
        lines.append("p50 ms: the mean of the runs' p50s; runs per side: "
                     + ", ".join(sorted({f"{c.baseline_runs} vs {c.new_runs}"
                                         for c in result.cases})))
    rows = [(c.case, c.new_target, f"{c.baseline_median_ms:.4f}", f"{c.new_median_ms:.4f}",
             f"{c.change:+.1%}", f"[{c.ci_low:+.1%}, {c.ci_high:+.1%}]",
             f"{c.p99_change:+.1%}", c.verdict.upper() if c.verdict == "regression"
             else c.verdict) for c in result.cases]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    lines += [f"not compared: {why}" for why in result.not_compared]
    if result.contended:
        lines.append(f"measured under contention ({len(result.contended)}; its change says "
                     "as much about the other processes; re-run on a quiet machine):")
        lines += [f"  {why}" for why in result.contended]
    count = len(result.regressions)
    lines.append(f"{count} significant regression(s) beyond {result.threshold:.1%}"
                 if count else f"no significant regression beyond {result.threshold:.1%} "
                 f"in {len(result.cases)} compared case(s)")
    return lines
