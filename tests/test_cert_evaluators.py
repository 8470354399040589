"""Evaluator versions and measures: a certificate is recomputed with the evaluator it
names, so evaluation can change without breaking certificates already issued; the
current evaluator folds retried attempts as the gate, merge and reports do; measures are
classes looked up by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cert.evaluate import EVALUATOR_VERSION, EVALUATORS, EvaluationError, evaluate
from harness.cert.measures import MEASURES, DynamicInputs, MetricMeasure, PassRate, StaticForm
from harness.cert.profile import Profile, ProfileError
from harness.cert.verify import VerifyOptions, verify_certificate
from tests.cert_support import LABEL, MINI, RECORDS, Center, write_run


def attempt(case: str, status: str, n: int = 1, as_expected: bool | None = None,
            **extra: object) -> dict:
    expected = status == "pass" if as_expected is None else as_expected
    return {"target": LABEL, "suite": "operators", "case": case, "status": status,
            "attempt": n, "as_expected": expected, "tags": {}, **extra}


#: one case per way a retry can go
RETRIES = [
    attempt("test_once", "pass"),
    attempt("test_infra_then_pass", "infra_error", 1, as_expected=False),
    attempt("test_infra_then_pass", "pass", 2),
    attempt("test_fail_then_pass", "fail", 1),
    attempt("test_fail_then_pass", "pass", 2),
    attempt("test_expected_fail_then_pass", "fail", 1, as_expected=True,
            expected_status="fail"),
    attempt("test_expected_fail_then_pass", "pass", 2),
    {"target": LABEL, "suite": "contract", "case": "test_identity", "status": "pass",
     "as_expected": True, "tags": {}},
]


def ops(version: str) -> dict:
    return evaluate(Profile.from_dict(MINI), "full", RETRIES, version).criteria[0].to_dict()


def test_every_evaluator_version_is_pinned() -> None:
    """Released evaluator versions are frozen: these are their results on fixed records.
    A change that alters one of them needs a new version instead."""
    assert set(EVALUATORS) == {"1", "2"} and EVALUATOR_VERSION == "2"
    v1, v2 = ops("1"), ops("2")
    assert (v1["passed"], v1["measured_cases"], v1["counts"]) == (2, 4, {"fail": 2, "pass": 2})
    assert (v2["passed"], v2["measured_cases"], v2["counts"]) == (
        3, 4, {"flaky": 1, "pass": 3})


def test_current_evaluator_folds_like_the_gate() -> None:
    """infra_error then pass is a pass; an unexpected failure then a pass is flaky, not a
    pass; an expected failure then a pass is a pass (fold_attempts)."""
    from harness.cert.evaluate import fold_v2
    from harness.results.case_record import CaseRecord, fold_attempts

    folded = {r["case"]: r["status"] for r in fold_v2(RETRIES)}
    assert folded == {r.case: str(r.status) for r in fold_attempts(
        CaseRecord.from_dict(x) for x in RETRIES)}
    assert folded["test_infra_then_pass"] == "pass"
    assert folded["test_fail_then_pass"] == "flaky"


def test_unknown_evaluator_and_bad_records_are_one_line() -> None:
    with pytest.raises(EvaluationError, match="evaluator version '9' is not known"):
        evaluate(Profile.from_dict(MINI), "full", RETRIES, "9")
    with pytest.raises(EvaluationError, match="cannot be evaluated"):
        evaluate(Profile.from_dict(MINI), "full", [{"suite": "operators"}])


def _certificate(center: Center, tmp_path: Path, version: str, drop_field: bool) -> Path:
    results = tmp_path / "results"
    citation = write_run(results, f"run-v{version}", RETRIES)
    statement = center.statement(records=RETRIES, runs=[citation], evaluator=version)
    if drop_field:  # as certificates were before evaluator_version existed (schema 1.0)
        predicate = statement["predicate"]
        del predicate["evaluator_version"], predicate["profile"]["origin"]
        predicate["schema_version"] = "1.0"
    return center.write(statement)


def test_a_certificate_issued_with_evaluator_1_still_verifies(tmp_path: Path) -> None:
    center = Center(tmp_path / "center")
    certificate = _certificate(center, tmp_path, "1", drop_field=True)
    options = VerifyOptions(center.public, tmp_path / "results", check_revocation=False)
    lines = verify_certificate(certificate, options)
    assert any(line.startswith("level: recomputed from the records") and "(evaluator 1)"
               in line for line in lines), lines
    # the same certificate recomputed by today's evaluator would not match
    assert ops("1") != ops(EVALUATOR_VERSION)


def test_a_v2_certificate_counts_an_infra_then_pass_retry_as_a_pass(tmp_path: Path) -> None:
    center = Center(tmp_path / "center")
    certificate = _certificate(center, tmp_path, "2", drop_field=False)
    lines = verify_certificate(certificate, VerifyOptions(center.public, tmp_path / "results",
                                                          check_revocation=False))
    assert any("(evaluator 2)" in line for line in lines)
    import json

    from harness.cert.verify import open_certificate

    predicate = open_certificate(certificate.read_bytes(), center.public)["predicate"]
    assert predicate["evaluator_version"] == "2"
    (criterion,) = [c for c in predicate["criteria"] if c["id"] == "ops"]
    assert criterion["counts"] == {"flaky": 1, "pass": 3}
    assert json.dumps(predicate["suites"]["operators"]["counts"]) == '{"flaky": 1, "pass": 3}'


def test_an_unknown_evaluator_version_is_refused_on_verify(tmp_path: Path) -> None:
    from harness.cert.verify import VerificationError, open_certificate

    center = Center(tmp_path / "center")
    statement = center.statement()
    statement["predicate"]["evaluator_version"] = "7"
    with pytest.raises(VerificationError, match="^predicate: evaluator_version '7' is not"):
        open_certificate(center.sign(statement), center.public)


def test_measures_are_classes_looked_up_by_name() -> None:
    from harness.cert.measures import TaskMetric

    assert {"pass_rate": PassRate, "metric": MetricMeasure, "static_form": StaticForm,
            "dynamic_inputs": DynamicInputs, "task_metric": TaskMetric} == MEASURES
    data = dict(MINI, criteria=[
        {**MINI["criteria"][0], "measure": "metric", "metrics": ["summary.p50_ms"],
         "bounds": {"summary.p50_ms": 5}, "flags": ["loadgen.valid"]},
        MINI["criteria"][1]])
    profile = Profile.from_dict(data)
    rule = profile.criteria[0].rule
    assert isinstance(rule, MetricMeasure) and isinstance(profile.criteria[1].rule, PassRate)
    assert rule.render() == "指标 / metrics: summary.p50_ms ≤ 5; loadgen.valid = true"
    good = {"status": "pass", "metrics": {"summary": {"p50_ms": 4.0}, "loadgen": {"valid": True}}}
    assert rule.passes(good)
    assert not rule.passes({**good, "metrics": {"summary": {"p50_ms": 6.0},
                                                "loadgen": {"valid": True}}})
    with pytest.raises(ProfileError, match="flags do\\(es\\) not apply to measure 'pass_rate'"):
        Profile.from_dict(dict(MINI, criteria=[{**MINI["criteria"][0], "flags": ["x"]},
                                               MINI["criteria"][1]]))
    with pytest.raises(ProfileError, match="measure must be one of \\('pass_rate', 'metric', "):
        Profile.from_dict(dict(MINI, criteria=[{**MINI["criteria"][0], "measure": "vibes"}]))




def _bench_specs():  # noqa: ANN202 - SuiteSpec list
    from harness.cases.suite_registry import SuiteSpec

    return [SuiteSpec(name="mybench", package="tests", title_zh="基准", title_en="Bench",
                      certificate_section="performance"),
            SuiteSpec(name="hidden", package="tests", title_zh="隐", title_en="Hidden",
                      certificate_section=None)]


BENCH_SPECS = _bench_specs()


def test_certificate_sections_come_from_suite_specs(monkeypatch) -> None:
    from harness.cert.sections import certificate_section
    from harness.cert.statement import latency_summary, model_rows

    monkeypatch.setenv("SHIPEI_PLUGINS", "tests.test_cert_evaluators:BENCH_SPECS")
    timed = {"status": "pass", "timings": {"run_s": 0.002}, "tags": {}}
    records = [
        {**timed, "suite": "mybench", "case": "test_p",
         "metrics": {"summary": {"p50_ms": 1.5}, "loadgen": {"valid": True}}},
        {**timed, "suite": "models", "case": "test_m", "metrics": {"max_abs_error": 0.0}},
        {**timed, "suite": "hidden", "case": "test_h", "metrics": {}},
        {**timed, "suite": "performance", "case": "test_old_perf", "metrics": {}},
        {**timed, "suite": "unregistered", "case": "test_u", "metrics": {}},
    ]
    assert [certificate_section(s) for s in ("mybench", "models", "hidden", "unregistered")] \
        == ["performance", "models", None, "conformance"]
    latency = latency_summary(records)
    assert [r["case"] for r in latency["performance"]] == ["test_old_perf", "test_p"]
    assert latency["performance"][1]["figures"] == {"p50_ms": 1.5}
    assert set(latency["conformance_run_time"]) == {"models", "unregistered"}
    assert [r["case"] for r in model_rows(records)] == ["test_m"]


def _contract(case: str, status: str) -> dict:
    return {"target": LABEL, "suite": "contract", "case": case, "status": status,
            "as_expected": status == "pass", "tags": {}}


CONTRACT_CASES = ("test_identity_complete", "test_availability_answered",
                  "test_timeout_honoured")


def test_a_thread_safety_check_the_driver_does_not_claim_does_not_apply() -> None:
    """issue 18.3: skipped because the driver does not declare thread_safe, the check is
    not counted (it used to cap the level below 完全兼容); declared and failing, it counts."""
    from harness.cert.profile import load_profile

    profile = load_profile("framework")
    skipped = [_contract(c, "pass") for c in CONTRACT_CASES] + [
        _contract("test_thread_safety_as_declared", "skip")]
    (contract,) = [r for r in evaluate(profile, "full", skipped).criteria
                   if r.criterion.id == "driver_contract"]
    assert (contract.passed, contract.measured, contract.not_applicable) == (3, 3, 1)
    assert contract.meets("full") and contract.to_dict()["not_applicable"] == 1
    failed = skipped[:-1] + [_contract("test_thread_safety_as_declared", "fail")]
    (contract,) = [r for r in evaluate(profile, "full", failed).criteria
                   if r.criterion.id == "driver_contract"]
    assert (contract.passed, contract.measured, contract.not_applicable) == (3, 4, 0)
    assert not contract.meets("full")
    other_skip = skipped[:-1] + [_contract("test_timeout_honoured_twice", "skip")]
    (contract,) = [r for r in evaluate(profile, "full", other_skip).criteria
                   if r.criterion.id == "driver_contract"]
    assert (contract.passed, contract.measured) == (3, 4)  # other skips still count


def _timed(min_queries: object, duration: float = 10.0, status: str = "pass") -> dict:
    return {"target": LABEL, "suite": "performance", "case": "test_p", "status": status,
            "tags": {}, "metrics": {"settings": {"min_queries": min_queries,
                                                 "min_duration_s": duration}}}


def test_recorded_performance_settings_below_the_profile_minimum_are_refused() -> None:
    from harness.cert.evidence import EvidenceError, check_performance_settings
    from harness.cert.profile import load_profile
    from harness.cert.sections import recorded_settings

    minimum = load_profile("framework").performance
    assert minimum == {"min_queries": 64, "min_duration_s": 10.0}
    check_performance_settings([_timed(64), _timed(1024)], minimum)
    assert recorded_settings([_timed(64), _timed(1024)]) == {"min_queries": 64,
                                                             "min_duration_s": 10.0}
    with pytest.raises(EvidenceError, match="performance::test_p was measured with "
                       "min_queries 32; the profile needs at least 64 queries "
                       r"\(re-run with --perf-min-queries 64 or more\)"):
        check_performance_settings([_timed(32)], minimum)
    with pytest.raises(EvidenceError, match="min_duration_s 1; the profile needs at least 10 "
                       "seconds"):
        check_performance_settings([_timed(64, 1.0)], minimum)
    with pytest.raises(EvidenceError, match="recorded no min_queries"):
        check_performance_settings([_timed(None)], minimum)
    check_performance_settings([_timed(1, status="fail")], minimum)  # not a pass: no claim


def test_the_page_says_not_compatible_prominently(tmp_path: Path) -> None:
    from harness.cert.page import render_certificate

    center = Center(tmp_path / "center")
    failing = [dict(r, status="fail", as_expected=False) if r["suite"] == "operators" else r
               for r in RECORDS]
    statement = center.statement(records=failing)
    assert statement["predicate"]["level"]["id"] == "none"
    page = render_certificate(statement, center.keyid)
    assert "This certificate states NOT COMPATIBLE" in page
    assert "why not 基本兼容 / Compatible with limitations" in page
