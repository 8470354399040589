"""The CI gate for a target driver: the contract plus the suites its kind requires,
judged on their own and against a baseline run.

A gate fails on any finding:

- ``contract``: a driver contract check that did not pass (not waivable by expectations);
- ``regression``: a case that passed in the baseline and does not now (also when the
  expectations file was changed to expect it);
- ``unexpected``: a result the target's expectations do not account for;
- ``stale-expectation``: an unexpected pass (the expectations entry must go);
- ``flaky``: a case that failed and then passed on retry;
- ``missing``: a baseline case the same selection no longer runs;
- ``drift``: a case passing in both runs whose max abs error grew beyond the policy;
- ``latency``: a significant latency regression (:func:`harness.perf.compare.compare_runs`);
- ``infrastructure``: the harness's or the machine's failure (``infra_error``),
  reported apart because it is nobody's driver bug.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from junit_xml import TestCase, TestSuite, to_xml_report_string

from harness.results.case_record import NOT_PASSING, REPORTED_STATUSES, RunSelection
from harness.results.record_files import (
    RecordError,
    find_run,
    latest_attempts,
    load_run,
    read_records,
)

GATE_SCHEMA_VERSION = "1.0"
CONTRACT_SUITE = "contract"


def required_suites(kind: str, profile: str | None = None) -> list[tuple[str, str]]:
    """The suites a target of ``kind`` must pass in the gate, each with the marker
    expression that picks its cases (``""``: every case): the suites its certification
    profile (``profile``, a name or TOML path; default the kind's packaged one) measures
    that declare themselves gate suites
    (:attr:`harness.cases.suite_registry.SuiteSpec.gate_markexpr`), the contract first."""
    from harness.cases.suite_registry import discover_suites
    from harness.cert.profile import ProfileError, measured_suites

    suites = discover_suites().suites
    try:
        measured = measured_suites(kind, profile)
    except ProfileError as exc:
        if profile:
            raise GateError(str(exc)) from None
        measured = ()
    return with_contract([(name, suites[name].gate_markexpr or "") for name in measured
                          if name in suites and suites[name].gate_markexpr is not None])


def with_contract(suites: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The gate's ``(suite, marker expression)`` list: the whole contract first, then
    ``suites`` without it, each once."""
    chosen = [(CONTRACT_SUITE, "")]
    for name, mark in suites:
        if all(name != seen for seen, _ in chosen):
            chosen.append((name, mark))
    return chosen


def gate_markexpr(suites: list[tuple[str, str]]) -> str:
    """One pytest ``-m`` expression selecting each suite's gate cases (every test carries
    its suite's name as a marker)."""
    return " or ".join(name if not mark else f"({name} and ({mark}))" for name, mark in suites)


CATEGORIES = {  # category -> (English, 中文) heading
    "contract": ("Contract violations", "驱动契约违规"),
    "regression": ("Regressions against the baseline", "相对基线的回退"),
    "unexpected": ("Unexpected results", "意外结果"),
    "stale-expectation": ("Stale expectations (unexpected passes)", "过期的预期（意外通过）"),
    "flaky": ("Flaky cases", "不稳定用例"),
    "missing": ("Baseline cases no longer run", "基线中有而本次未运行的用例"),
    "drift": ("Accuracy drift", "精度漂移"),
    "latency": ("Latency regressions", "时延回退"),
    "infrastructure": ("Infrastructure failures (not the driver's fault)",
                       "基础设施故障（非驱动责任）"),
}


class GateError(Exception):
    """A gate that cannot be evaluated as asked (a missing or unusable baseline)."""


@dataclass(frozen=True)
class GatePolicy:
    #: a passing case drifts when its max abs error exceeds factor x baseline + floor
    drift_factor: float = 2.0
    #: the floor is the larger of this and the case's own atol
    drift_floor: float = 1e-6
    #: relative latency change counted as a regression (see harness.perf.compare)
    latency_threshold: float = 0.10

    def __post_init__(self) -> None:
        """A threshold that is negative, zero or not a number would let every change
        through or stop every one: ValueError."""
        for name in ("drift_factor", "drift_floor", "latency_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', '-')} must be a positive number, "
                                 f"not {value}")


@dataclass
class Finding:
    category: str
    suite: str
    case: str
    message: str

    @property
    def name(self) -> str:
        return f"{self.suite}::{self.case}" if self.case else self.suite


@dataclass
class Baseline:
    label: str  # what the user named
    target: str  # the target label whose records are compared
    records: dict[tuple[str, str], dict[str, Any]]
    run_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateVerdict:
    target: str
    run_id: str
    identity: dict[str, Any]
    suites: list[str]
    markexpr: str | None
    baseline: str | None
    counts: dict[str, dict[str, int]]
    findings: list[Finding]
    notes: list[str]
    latency: str

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def infrastructure_only(self) -> bool:
        return bool(self.findings) and all(f.category == "infrastructure"
                                           for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(gate_schema_version=GATE_SCHEMA_VERSION, passed=self.passed)
        return data


# -- baselines -----------------------------------------------------------------------------
def load_baseline(reference: str, results_root: Path, target: str) -> Baseline:
    """A baseline from a run id, a run folder or a records file (JSON lines)."""
    path = Path(reference)
    info: dict[str, Any] = {}
    run_dir: Path | None = None
    if path.is_file():
        try:
            records = latest_attempts(read_records(path))
        except (OSError, UnicodeDecodeError, RecordError) as exc:
            raise GateError(f"cannot read baseline {path}: {exc}") from None
    else:
        try:
            run_dir = find_run(results_root, reference)
            info, records = load_run(run_dir)
        except FileNotFoundError as exc:
            raise GateError(f"baseline: {exc}") from None
        except RecordError as exc:
            raise GateError(f"cannot read baseline {reference}: {exc}") from None
    records = [r for r in records if isinstance(r, dict) and {"target", "suite", "case",
                                                              "status"} <= set(r)]
    if not records:
        raise GateError(f"baseline {reference} holds no case records")
    label = _baseline_target(records, target, reference)
    chosen = {(r["suite"], r["case"]): r for r in records if r["target"] == label}
    return Baseline(reference, label, chosen, run_dir, info)


def _baseline_target(records: list[dict[str, Any]], target: str, reference: str) -> str:
    labels = sorted({r["target"] for r in records})
    if target in labels:
        return target
    name = target.split(",")[0].split(":")[0]
    same_name = [label for label in labels if label.split(",")[0].split(":")[0] == name]
    if len(same_name) == 1:
        return same_name[0]
    if len(labels) == 1:
        return labels[0]
    raise GateError(f"baseline {reference} has no records for {target!r}; it has {labels}")


# -- evaluation ----------------------------------------------------------------------------
def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.inf if str(value) in ("inf", "nan") else 0.0
    return math.inf if math.isnan(number) else number


def _drift(record: dict[str, Any], base: dict[str, Any], policy: GatePolicy) -> str | None:
    now = _number((record.get("metrics") or {}).get("max_abs_error"))
    before = _number((base.get("metrics") or {}).get("max_abs_error"))
    floor = max(policy.drift_floor, _number((record.get("metrics") or {}).get("atol")))
    limit = before * policy.drift_factor + floor
    if now > limit:
        return (f"max abs error {before:.3g} -> {now:.3g}, beyond the policy "
                f"({policy.drift_factor:g} x baseline + {floor:.3g} = {limit:.3g})")
    return None


def selection_signature(info: dict[str, Any]) -> tuple[Any, ...] | None:
    """The suites and filters a run selected with (targets aside): its recorded
    :class:`~harness.results.case_record.RunSelection`, or for runs made before schema 1.1, what
    its pytest arguments say."""
    selection = RunSelection.of_run(info)
    if selection is not None:
        return selection.signature()
    args = [str(a) for a in info.get("pytest_args") or []]
    if not args:
        return None
    suites = sorted(Path(a).name for a in args if not a.startswith("-") and (
        "/" in a or a.endswith(".py")))
    flags = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag in ("-m", "-k")}
    return tuple(suites), flags.get("-m"), flags.get("-k"), ()


def case_findings(record: dict[str, Any], base: dict[str, Any] | None, policy: GatePolicy
                  ) -> Finding | None:
    suite, case, status = record["suite"], record["case"], record["status"]
    message = (record.get("message") or "").strip()
    said = f": {message}" if message else ""
    if suite == CONTRACT_SUITE:
        return Finding("contract", suite, case, f"{status}{said}") \
            if status in NOT_PASSING else None
    if status == "infra_error":
        return Finding("infrastructure", suite, case, message or "infra_error")
    if status == "flaky" or record.get("flaky"):
        return Finding("flaky", suite, case, message)
    if base is not None and base.get("status") == "pass" and status != "pass":
        listed = (f" (the expectations now list it: {record.get('expectation_reason')})"
                  if record.get("as_expected") else "")
        return Finding("regression", suite, case, f"pass -> {status}{listed}{said}")
    if not record.get("as_expected", True):
        if status == "pass":
            return Finding("stale-expectation", suite, case,
                           f"passes, but the expectations say {record.get('expected_status')} "
                           f"({record.get('expectation_reason')}); remove the entry")
        return Finding("unexpected", suite, case,
                       f"expected {record.get('expected_status')}, got {status}{said}")
    if base is not None and base.get("status") == "pass" and status == "pass":
        drift = _drift(record, base, policy)
        if drift:
            return Finding("drift", suite, case, drift)
    return None


def evaluate(run_info: dict[str, Any], records: Iterable[dict[str, Any]], target: str,
             suites: list[str], markexpr: str | None, baseline: Baseline | None,
             policy: GatePolicy, run_dir: Path | None = None) -> GateVerdict:
    """Judge one target's effective records of a gate run (see the module docstring)."""
    mine = [r for r in records if r.get("target") == target]
    findings: list[Finding] = []
    notes: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for record in mine:
        per_suite = counts.setdefault(record["suite"], {})
        per_suite[record["status"]] = per_suite.get(record["status"], 0) + 1
        base = baseline.records.get((record["suite"], record["case"])) if baseline else None
        finding = case_findings(record, base, policy)
        if finding:
            findings.append(finding)
    for suite in [CONTRACT_SUITE, *suites]:
        if suite not in counts:
            findings.append(Finding("infrastructure", suite, "",
                                    "no case of this suite ran (check -m and the suite)"))
    if baseline is not None:
        findings += _missing(mine, run_info, baseline, notes)
    latency = _latency(baseline, run_dir, policy, findings)
    identity = {k: v for k, v in ((run_info.get("targets") or {}).get(target) or {}).items()
                if k not in ("capabilities",)}
    return GateVerdict(target, str(run_info.get("run_id")), identity, [CONTRACT_SUITE, *suites],
                       markexpr, baseline.label if baseline else None, counts, findings, notes,
                       latency)


def _missing(mine: list[dict[str, Any]], run_info: dict[str, Any], baseline: Baseline,
             notes: list[str]) -> list[Finding]:
    ran = {(r["suite"], r["case"]) for r in mine}
    gone = sorted(k for k in baseline.records if k not in ran)
    if not gone:
        return []
    same = baseline.info and selection_signature(baseline.info) == selection_signature(run_info)
    if not same:
        notes.append(f"{len(gone)} baseline case(s) were not run this time; the baseline was "
                     "made with another selection, so they are not counted as missing")
        return []
    return [Finding("missing", suite, case,
                    f"{baseline.records[(suite, case)]['status']} in the baseline; not run now")
            for suite, case in gone]


def _latency(baseline: Baseline | None, run_dir: Path | None, policy: GatePolicy,
             findings: list[Finding]) -> str:
    if baseline is None:
        return "latency not compared: no baseline"
    if baseline.run_dir is None or run_dir is None:
        return "latency not compared: the baseline is a records file, not a run folder " \
               "with latency samples"
    from harness.perf.compare import compare_runs

    try:
        result = compare_runs(baseline.run_dir, run_dir, threshold=policy.latency_threshold,
                              pairs={baseline.target: _only_target(run_dir)})
    except Exception as exc:  # a comparison that cannot be made is reported, not fatal
        return f"latency not compared: {type(exc).__name__}: {exc}"
    if not result.cases:
        return "latency not compared: no performance case measured in both runs " \
               "(add --suite performance)"
    for case in result.regressions:
        findings.append(Finding(
            "latency", "performance", case.case,
            f"median {case.baseline_median_ms:.3f} -> {case.new_median_ms:.3f} ms "
            f"({case.change:+.1%}, {result.confidence:.0%} interval "
            f"[{case.ci_low:+.1%}, {case.ci_high:+.1%}], threshold {result.threshold:.0%})"))
    return (f"latency compared on {len(result.cases)} case(s): "
            f"{len(result.regressions)} significant regression(s) beyond "
            f"{result.threshold:.0%}")


def _only_target(run_dir: Path) -> str:
    info, _ = load_run(run_dir)
    return next(iter(info.get("targets") or {"": None}))


# -- output --------------------------------------------------------------------------------
MAX_LISTED = 50


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(verdict: GateVerdict, files: Iterable[str] = ()) -> str:
    """A summary fit for a pull-request comment, in Chinese and English."""
    if verdict.passed:
        head = "✅ PASS 通过"
    elif verdict.infrastructure_only:
        head = "⚠️ INFRASTRUCTURE 基础设施故障"
    else:
        head = "❌ FAIL 未通过"
    ident = verdict.identity
    lines = [
        f"## Shipei gate 适配门禁: {head} — `{verdict.target}`",
        "",
        f"Driver 驱动: `{ident.get('driver_distribution') or '?'}` "
        f"{ident.get('driver_version', '?')} · vendor 厂商: {ident.get('vendor', '?')} · "
        f"runtime 运行时: {ident.get('runtime', '?')} {ident.get('runtime_version', '?')} · "
        f"kind 类型: {ident.get('kind', '?')}",
        "",
        f"Run 运行: `{verdict.run_id}` · suites 套件: {', '.join(verdict.suites)}"
        f"{f' (-m {verdict.markexpr!r} outside the contract)' if verdict.markexpr else ''} · "
        f"baseline 基线: {f'`{verdict.baseline}`' if verdict.baseline else 'none 无'}",
        "",
        "| suite 套件 | " + " | ".join(s.bilingual for s in REPORTED_STATUSES) + " |",
        "|---|" + "---:|" * len(REPORTED_STATUSES),
    ]
    for suite in sorted(verdict.counts):
        row = verdict.counts[suite]
        lines.append(f"| {suite} | " + " | ".join(str(row.get(s, 0)) for s in REPORTED_STATUSES)
                     + " |")
    lines.append("")
    if verdict.passed:
        lines.append("No findings. 无问题。")
    for category, (english, chinese) in CATEGORIES.items():
        found = [f for f in verdict.findings if f.category == category]
        if not found:
            continue
        lines += ["", f"### {english} / {chinese} ({len(found)})", ""]
        lines += [f"- `{f.name}` — {_cell(f.message)[:400]}" for f in found[:MAX_LISTED]]
        if len(found) > MAX_LISTED:
            lines.append(f"- … {len(found) - MAX_LISTED} more (see gate.json)")
    lines += ["", f"Latency 时延: {verdict.latency}"]
    lines += [f"Note 说明: {note}" for note in verdict.notes]
    listed = [f"`{f}`" for f in files]
    if listed:
        lines += ["", "Files 文件: " + " · ".join(listed)]
    return "\n".join(lines) + "\n"


def gate_junit(verdict: GateVerdict, records: Iterable[dict[str, Any]]) -> str:
    """JUnit XML of the gate: one test per case (failed when it has a finding), plus one
    per finding not tied to a recorded case."""
    by_name = {f.name: f for f in verdict.findings}
    cases: list[TestCase] = []
    seen: set[str] = set()
    for record in records:
        if record.get("target") != verdict.target:
            continue
        name = f"{record['suite']}::{record['case']}"
        seen.add(name)
        case = TestCase(record["case"], classname=f"gate.{record['suite']}",
                        elapsed_sec=float(record.get("duration_s") or 0.0))
        finding = by_name.get(name)
        if finding:
            case.add_failure_info(message=f"{finding.category}: {finding.message}"[:1000],
                                  failure_type=finding.category)
        elif record["status"] == "skip":
            case.add_skipped_info(message=record.get("message", ""))
        cases.append(case)
    for finding in verdict.findings:
        if finding.name not in seen:
            case = TestCase(finding.case or finding.category, classname=f"gate.{finding.suite}")
            case.add_failure_info(message=f"{finding.category}: {finding.message}"[:1000],
                                  failure_type=finding.category)
            cases.append(case)
    latency = TestCase("latency", classname="gate.performance")
    if verdict.latency.startswith("latency not compared"):
        latency.add_skipped_info(message=verdict.latency)
    cases.append(latency)
    return to_xml_report_string([TestSuite(f"shipei-gate[{verdict.target}]", cases)],
                                encoding="utf-8")


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def write_outputs(verdict: GateVerdict, records: list[dict[str, Any]], report_dir: Path
                  ) -> str:
    """Write gate.md, gate.json and gate-junit.xml to the run's report folder; return the
    Markdown."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "gate.json").write_text(json.dumps(verdict.to_dict(), ensure_ascii=False,
                                                     indent=2, default=str), encoding="utf-8")
    (report_dir / "gate-junit.xml").write_text(gate_junit(verdict, records), encoding="utf-8")
    listed = [report_dir / name for name in ("gate.md", "gate-junit.xml", "gate.json",
                                             "junit.xml")]
    markdown = render_markdown(verdict, [_shown(p) for p in listed if p.exists() or
                                         p.name == "gate.md"])
    (report_dir / "gate.md").write_text(markdown, encoding="utf-8")
    return markdown
