"""Each concept is defined once: the status vocabulary and its bilingual labels come from
:class:`harness.results.case_record.Status`; nothing else writes them out."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from harness.results.case_record import (
    NOT_PASSING,
    RECORDED_STATUSES,
    REPORTED_STATUSES,
    TARGET_FAILURES,
    Status,
)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("harness", "suites", "targets")
                 for p in (ROOT / folder).rglob("*.py"))
STATUS_VALUES = {s.value for s in Status}
CJK = re.compile(r"[\u4e00-\u9fff]")


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _parsed(source: str | ast.Module) -> ast.Module:
    return ast.parse(source) if isinstance(source, str) else source


def _strings(nodes: list[ast.expr | None]) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def written_out_statuses(source: str | ast.Module) -> list[str]:
    """Literal lists of two or more statuses, and literal dicts that label statuses in
    Chinese, in one module's source (``line: what``)."""
    found = []
    for node in ast.walk(_parsed(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = _strings(list(node.elts))
            if len(values) >= 2 and len(values) == len(node.elts) \
                    and set(values) <= STATUS_VALUES:
                found.append(f"{node.lineno}: {values}")
        elif isinstance(node, ast.Dict):
            keys = _strings(list(node.keys))
            labels = [v for v in ast.walk(ast.Tuple(elts=list(node.values)))
                      if isinstance(v, ast.Constant) and isinstance(v.value, str)
                      and CJK.search(v.value)]
            if len(keys) >= 2 and len(keys) == len(node.keys) and set(keys) <= STATUS_VALUES \
                    and labels:
                found.append(f"{node.lineno}: labels of {keys}")
    return found


def test_the_finder_finds_a_written_out_list_and_labels() -> None:
    source = ('A = ("pass", "fail", "infra_error")\n'
              'B = {"pass": "通过", "infra_error": "基础设施"}\n'
              'C = ("pass", "not run")\nD = {"pass": "#0f0", "fail": "#f00"}\n')
    assert written_out_statuses(source) == ["1: ['pass', 'fail', 'infra_error']",
                                            "2: labels of ['pass', 'infra_error']"]


def test_no_module_writes_out_the_status_vocabulary() -> None:
    offenders = {str(p.relative_to(ROOT)): found for p in SOURCES
                 if p.name != "case_record.py"
                 and (found := written_out_statuses(_tree(p)))}
    assert not offenders, f"derive these from harness.results.case_record.Status: {offenders}"


def test_every_status_has_one_chinese_name() -> None:
    names = [s.zh for s in Status]
    assert all(CJK.search(n) for n in names)
    assert len(set(names)) == len(names)
    assert Status.INFRA_ERROR.bilingual == "基础设施错误 infra_error"
    assert Status.FAIL.bilingual == "失败 fail"


def test_the_status_lists_are_derived_from_status() -> None:
    from harness.cert import page
    from harness.reports import junit, matrix
    from harness.run import selection
    from harness.verdicts import expectations

    assert tuple(s for s in Status if s is not Status.FLAKY) == RECORDED_STATUSES
    assert tuple(Status) == REPORTED_STATUSES
    assert TARGET_FAILURES == (Status.FAIL, Status.ERROR, Status.TIMEOUT, Status.CRASH)
    assert set(NOT_PASSING) == set(Status) - {Status.PASS, Status.SKIP}
    assert tuple(s.value for s in Status) == page.STATUS_ORDER
    assert tuple(s.value for s in RECORDED_STATUSES) == matrix.STATUS_ORDER
    assert {s.value: s.bilingual for s in RECORDED_STATUSES} == matrix.STATUS_LABELS
    assert set(junit.ERROR_STATUSES) == {"error", "timeout", "crash", "infra_error"}
    assert set(selection.RETRY_STATUSES) == {*TARGET_FAILURES, Status.INFRA_ERROR}
    assert set(expectations.EXPECTABLE) == set(TARGET_FAILURES) | {Status.SKIP}


def test_reports_label_statuses_as_status_does() -> None:
    from harness.gate import GateVerdict, render_markdown
    from harness.modelzoo.report import _badge

    verdict = GateVerdict(target="t", run_id="r", identity={}, suites=["contract"],
                          markexpr=None, baseline=None, counts={"contract": {"pass": 1}},
                          findings=[], notes=[], latency="")
    header = next(line for line in render_markdown(verdict).splitlines()
                  if line.startswith("| suite"))
    assert all(s.bilingual in header for s in Status)
    assert Status.FAIL.zh in _badge("fail", True)
    assert Status.INFRA_ERROR.zh in _badge("infra_error", True)


def test_the_certificate_page_heads_status_counts_in_both_languages() -> None:
    from harness.cert.page import _suites

    table = _suites({"suites": {"operators": {"cases": 1, "counts": {"pass": 1}}}})
    assert all(f"<th>{s.zh}<br>{s.value}</th>" in table for s in Status)


@pytest.mark.parametrize("name", ["STATUSES", "REPORTED_STATUSES", "INFRA_STATUSES"])
def test_cases_module_keeps_no_status_list_of_its_own(name: str) -> None:
    import harness.cases.case as case

    assert not hasattr(case, name)


# -- one percentile ---------------------------------------------------------------------------
#: numpy/statistics functions that compute a percentile (or a median) their own way
OWN_PERCENTILES = {"percentile", "nanpercentile", "quantile", "nanquantile", "median",
                   "nanmedian", "quantiles", "median_low", "median_high"}
#: modules owned elsewhere that still compute their own (see the report of issue 28)
NOT_YET: set[str] = set()


def own_percentiles(source: str | ast.Module) -> list[str]:
    """Calls of ``np.percentile``, ``statistics.median`` and the like (``line: name``)."""
    return [f"{node.lineno}: {node.func.value.id}.{node.func.attr}"
            for node in ast.walk(_parsed(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("np", "numpy", "statistics")
            and node.func.attr in OWN_PERCENTILES]


def test_the_percentile_finder_finds_one() -> None:
    assert own_percentiles("import numpy as np\nx = np.percentile(a, [5, 95])\n"
                           "y = statistics.median(b)\n") == ["2: np.percentile",
                                                             "3: statistics.median"]


def test_one_percentile_rule() -> None:
    """Every percentile is LoadGen's (harness.perf.stats.percentile_of)."""
    offenders = {name: found for p in SOURCES
                 if (name := str(p.relative_to(ROOT))) != "harness/perf/stats.py"
                 and name not in NOT_YET
                 and (found := own_percentiles(_tree(p)))}
    assert not offenders, f"use harness.perf.stats.percentile_of: {offenders}"


def test_certificate_run_times_use_the_one_percentile() -> None:
    from harness.cert.statement import latency_summary
    from harness.perf.stats import percentile_of

    times = [4.0, 1.0, 3.0, 2.0]
    records = [{"suite": "operators", "case": f"c{i}", "status": "pass",
                "timings": {"run_s": t / 1000.0}} for i, t in enumerate(times)]
    row = latency_summary(records)["conformance_run_time"]["operators"]
    assert row["median_ms"] == pytest.approx(float(percentile_of(times, 50))) == 3.0
    assert row["p90_ms"] == pytest.approx(float(percentile_of(times, 90)))


# -- constants and classes declared once -------------------------------------------------------
ONCE = ("IDENTITY_FIELDS", "STATEMENT_TYPE", "PAYLOAD_TYPE", "HOST_FAILURES", "PERFORMANCE_SUITE",
        "PLUGINS_ENV", "PRECISION_ORDER", "LIMITS", "MAX_SHOWN", "CHUNK", "DEFAULT_REPORT_DIR",
        "CONTRACT_SUITE", "REFERENCE_SECONDS")


def module_level_names(source: str | ast.Module) -> set[str]:
    """Names a module assigns or defines (a class, a function) at its top level (imports
    excluded)."""
    found: set[str] = set()
    for node in _parsed(source).body:
        if isinstance(node, ast.Assign):
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found.add(node.name)
    return found


@cache
def _names_of(path: Path) -> frozenset[str]:
    return frozenset(module_level_names(_tree(path)))


def _definers(name: str) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in SOURCES if name in _names_of(p)]


#: class names that meant two things (now distinct names) or one thing twice (now merged)
CLASSES_ONCE = ("AuditError", "RegistryError", "InputSpec", "CaseComparison", "SensorSession",
                "GroundTruth", "Verdict", "TaskUnavailable", "Limit", "GoldenInputs")
#: functions that answered one question twice, differently, or were written out twice
FUNCTIONS_ONCE = ("certificate_section", "run_task_check", "run_task", "check_against_golden",
                  "prepare_golden", "task_entries", "available_entry", "call_task",
                  "need_libraries", "reference_answer", "reference_task_answer",
                  "precision_class", "latency_percentiles_ms", "latency_metrics", "with_contract")


@pytest.mark.parametrize("name", ONCE + CLASSES_ONCE + FUNCTIONS_ONCE)
def test_a_name_is_declared_in_one_module(name: str) -> None:
    definers = _definers(name)
    assert len(definers) <= 1, f"{name} is declared in {definers}: import it from one"


def test_the_sensor_ground_truth_is_the_driver_apis() -> None:
    from harness.driver.sensor import GroundTruth

    groundtruth = pytest.importorskip("targets.serial.groundtruth")
    assert groundtruth.GroundTruth is GroundTruth


def test_identity_fields_are_the_target_identity() -> None:
    from dataclasses import fields

    from harness.cert import evidence
    from harness.driver.target import IDENTITY_FIELDS, TargetIdentity
    from harness.results import merge

    assert tuple(f.name for f in fields(TargetIdentity)) == IDENTITY_FIELDS
    assert merge.IDENTITY_FIELDS is evidence.IDENTITY_FIELDS is IDENTITY_FIELDS


def test_the_center_knows_timed_suites_from_the_registry(tmp_path, monkeypatch) -> None:
    """A third party's timed suite (certificate_section "performance") is timed to the center
    too: re-timed, and left out of the conformance sample; no suite name is hard-coded."""
    from harness.center.audit import draw_sample
    from harness.center.retime import timed_records

    (tmp_path / "latency_suite.py").write_text(
        "from harness.cases.suite_registry import SuiteSpec\n"
        "SUITE = SuiteSpec(name='latency', package='latency_suite', title_zh='时延',\n"
        "                  title_en='Latency', certificate_section='performance')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHIPEI_PLUGINS", "suites=latency_suite:SUITE")
    records = [{"suite": "latency", "case": "a", "status": "pass"},
               {"suite": "operators", "case": "b", "status": "pass"}]
    assert [r["case"] for r in timed_records(records)] == ["a"]
    assert draw_sample([("latency", "a"), ("operators", "b")], 5, 0) == [("operators", "b")]


def test_the_center_knows_user_case_suites_from_the_registry(tmp_path, monkeypatch) -> None:
    """A suite whose cases come from the user's input (SuiteSpec.cases_from_user, like the
    built-in model_file) has no case universe to check and no operator regressions, whatever
    its name; every other suite's operator-tagged cases count, not only the operators
    suite's."""
    from types import SimpleNamespace

    from harness.center.store import _operator_status
    from harness.center.universe import check_complete

    (tmp_path / "own_models.py").write_text(
        "from harness.cases.suite_registry import SuiteSpec\n"
        "SUITE = SuiteSpec(name='own_models', package='own_models', title_zh='自带模型',\n"
        "                  title_en='Own models', cases_from_user=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHIPEI_PLUGINS", "suites=own_models:SUITE")
    check_complete("r1", frozenset(), [{"suite": "own_models", "case": "test_mine"}])
    records = [SimpleNamespace(suite=suite, op_type=op, status=status)
               for suite, op, status in (("operators", "Abs", "pass"),
                                         ("model_file", "Abs", "fail"),
                                         ("own_models", "Abs", "fail"),
                                         ("more_operators", "Relu", "fail"))]
    assert _operator_status(SimpleNamespace(records=records)) == {"Abs": True, "Relu": False}


def test_the_gate_contract_is_the_contract_suite() -> None:
    from harness.gate import CONTRACT_SUITE, with_contract
    from suites.contract import SUITE

    assert SUITE.name == CONTRACT_SUITE
    assert with_contract([("operators", "gate"), (CONTRACT_SUITE, "x"), ("operators", "y")]) \
        == [(CONTRACT_SUITE, ""), ("operators", "gate")]


# -- one task-check skeleton, one scenario test factory --------------------------------------
def task_check_skeletons(source: str | ast.Module) -> list[str]:
    """Functions that turn a ``TaskUnavailable`` into an ``Outcome`` themselves (``line:
    name``): the steps of :func:`harness.modelzoo.task_checks.run_task_check` written out."""
    found = []
    for function in ast.walk(_parsed(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for handler in ast.walk(function):
            if isinstance(handler, ast.ExceptHandler) and handler.type is not None \
                    and any(isinstance(n, (ast.Name, ast.Attribute))
                            and "TaskUnavailable" in (getattr(n, "id", None),
                                                      getattr(n, "attr", None))
                            for n in ast.walk(handler.type)) \
                    and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                            and c.func.id == "Outcome" for c in ast.walk(handler)):
                found.append(f"{function.lineno}: {function.name}")
                break
    return found


def test_the_skeleton_finder_finds_one() -> None:
    source = ("def check(zoo):\n    try:\n        prepare()\n"
              "    except tasks.TaskUnavailable as exc:\n        return Outcome('skip', str(exc))\n"
              "def refresh(zoo):\n    try:\n        prepare()\n"
              "    except TaskUnavailable as exc:\n        return ['skipped', str(exc)]\n")
    assert task_check_skeletons(source) == ["1: check"]


def test_one_task_check_skeleton() -> None:
    found = {str(p.relative_to(ROOT)): [hit.split(": ")[1] for hit in hits] for p in SOURCES
             if (hits := task_check_skeletons(_tree(p)))}
    assert found == {"harness/modelzoo/task_checks.py": ["run_task_check"]}, \
        f"run a task check through harness.modelzoo.task_checks.run_task_check: {found}"


def concluders(source: str | ast.Module) -> list[int]:
    """Lines that call ``<something>.conclude(...)``."""
    return [node.lineno for node in ast.walk(_parsed(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "conclude"]


def test_scenario_cases_are_made_by_one_factory() -> None:
    """Only suites/scenarios/cases.py concludes a scenario case; a task module names its
    cases and hands them to :func:`suites.scenarios.cases.task_test`."""
    folder = ROOT / "suites" / "scenarios"
    found = {p.name: lines for p in sorted(folder.glob("*.py")) if (lines := concluders(_tree(p)))}
    assert set(found) == {"cases.py"}, f"make scenario tests with cases.task_test: {found}"
