"""Evaluator versions and measures: a certificate is recomputed with the evaluator it
names, so evaluation can change without breaking certificates already issued; the
current evaluator folds retried attempts as the gate, merge and reports do; measures are
classes looked up by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cert.evaluate import EVALUATOR_VERSION, EVALUATORS, EvaluationError, evaluate
from harness.cert.measures import MEASURES, MetricMeasure, PassRate
from harness.cert.profile import Profile, ProfileError
from harness.cert.verify import VerifyOptions, verify_certificate
from tests.cert_support import LABEL, MINI, Center, write_run


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
    from harness.case_record import CaseRecord, fold_attempts
    from harness.cert.evaluate import fold_v2

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
    if drop_field:  # as certificates were before evaluator_version existed
        del statement["predicate"]["evaluator_version"]
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
    assert {"pass_rate": PassRate, "metric": MetricMeasure} == MEASURES
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
    with pytest.raises(ProfileError, match="measure must be one of \\('pass_rate', 'metric'\\)"):
        Profile.from_dict(dict(MINI, criteria=[{**MINI["criteria"][0], "measure": "vibes"}]))




def _bench_specs():  # noqa: ANN202 - SuiteSpec list
    from harness.suite_registry import SuiteSpec

    return [SuiteSpec(name="mybench", package="tests", title_zh="基准", title_en="Bench",
                      certificate_section="performance"),
            SuiteSpec(name="hidden", package="tests", title_zh="隐", title_en="Hidden",
                      certificate_section=None)]


BENCH_SPECS = _bench_specs()


def test_certificate_sections_come_from_suite_specs(monkeypatch) -> None:
    from harness.cert.statement import certificate_section, latency_summary, model_rows

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
