"""The typed record model: one meaning per status. A case retried after an infra_error
passes; a case that failed and then passed is flaky — in the fold itself, the gate, the
certificate evaluator, merge and the reports alike. The JSON schema matches the types,
and 1.0 records stay readable."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.gate import GatePolicy, evaluate
from harness.reports.writing import write_reports
from harness.results.case_record import (
    READABLE_SCHEMA_VERSIONS,
    CaseKey,
    CaseRecord,
    RecordError,
    RunSelection,
    Status,
    fold_attempts,
)
from harness.results.merge import load_parts, merge_runs
from harness.results.record_files import RecordWriter, RunPaths, load_run, load_schema, write_json

TARGET = "onnxruntime-cpu"


def attempt(case: str, status: str, number: int, as_expected: bool | None = None,
            **extra: object) -> dict[str, object]:
    return {"schema_version": "1.1", "run_id": "r", "nodeid": f"x::{case}[{TARGET}]",
            "target": TARGET, "target_name": TARGET, "configuration": "default",
            "suite": "operators", "case": case, "status": status, "expected_status": "pass",
            "as_expected": status == "pass" if as_expected is None else as_expected,
            "message": f"{status} on {number}", "metrics": {}, "duration_s": 0.01,
            "attempt": number, "finished_at": "2026-12-02T00:00:00+00:00", **extra}


#: a case per meaning: infra then pass, fail then pass, fail then fail, never retried
RETRIED = [
    attempt("test_infra_then_pass", "infra_error", 1),
    attempt("test_fail_then_pass", "fail", 1),
    attempt("test_fail_twice", "fail", 1),
    attempt("test_once", "pass", 1),
    attempt("test_infra_then_pass", "pass", 2),
    attempt("test_fail_then_pass", "pass", 2),
    attempt("test_fail_twice", "fail", 2),
]
MEANING = {"test_infra_then_pass": "pass", "test_fail_then_pass": "flaky",
           "test_fail_twice": "fail", "test_once": "pass"}


def test_fold_gives_one_meaning_per_case() -> None:
    folded = {r.case: r for r in fold_attempts(CaseRecord.from_dict(r) for r in RETRIED)}
    assert {case: str(r.status) for case, r in folded.items()} == MEANING
    assert folded["test_infra_then_pass"].as_expected
    assert [a.status for a in folded["test_infra_then_pass"].previous_attempts] == [
        Status.INFRA_ERROR]
    assert not folded["test_fail_then_pass"].as_expected and folded["test_fail_then_pass"].flaky
    assert list(folded) == ["test_infra_then_pass", "test_fail_then_pass", "test_fail_twice",
                            "test_once"]  # first-recorded order


def _run(root: Path, run_id: str, lines: list[dict[str, object]]) -> Path:
    paths = RunPaths(root / "results", root / "reports", run_id)
    writer = RecordWriter(paths.records)
    for line in lines:
        writer.write(dict(line, run_id=run_id))
    writer.close()
    write_json(paths.run_json, {"schema_version": "1.1", "run_id": run_id,
                                "harness_version": "0", "finished_at": "2026-12-02T00:00:01",
                                "exit_status": 1, "targets": {TARGET: {"name": TARGET}},
                                "environment": {"platform_id": "p", "python": "3.11"}})
    return paths.run_dir


def test_gate_reads_the_same_meaning(tmp_path: Path) -> None:
    info, records = load_run(_run(tmp_path, "r1", RETRIED))
    verdict = evaluate(info, records, TARGET, ["operators"], None, None, GatePolicy())
    by_case = {f.case: f.category for f in verdict.findings}
    assert "test_infra_then_pass" not in by_case  # cleared by the retry, not flaky
    assert by_case["test_fail_then_pass"] == "flaky"
    assert by_case["test_fail_twice"] == "unexpected"


def test_certificate_evaluator_reads_the_same_meaning() -> None:
    from harness.cert.evaluate import evaluate as certify_level
    from harness.cert.profile import Profile

    profile = Profile.from_dict({
        "name": "meaning", "version": "1", "kind": "framework", "title_zh": "意", "title_en": "m",
        "scopes": {"full": {"title_zh": "全", "title_en": "full"}},
        "criteria": [{"id": "ops", "title_zh": "算子", "title_en": "ops", "suite": "operators",
                      "thresholds": {"full": 1.0, "limited": 0.1}}]})
    result = certify_level(profile, "full", RETRIED).criteria[0]
    assert (result.passed, result.measured) == (2, 4)  # infra-then-pass and the single pass


def test_merge_and_reports_read_the_same_meaning(tmp_path: Path) -> None:
    _run(tmp_path, "part", RETRIED)
    merged = merge_runs(load_parts(tmp_path / "results", ["part"]), tmp_path / "results",
                        tmp_path / "reports", run_id="merged")
    effective = {r["case"]: r["status"] for r in load_run(merged.paths.run_dir)[1]}
    assert effective == MEANING
    assert merged.info["counts"][TARGET] == {"pass": 2, "flaky": 1, "fail": 1, "unexpected": 2}
    files = write_reports(merged.paths, merged.info, load_run(merged.paths.run_dir)[1])
    junit = ET.parse(next(f for f in files if f.name == "junit.xml"))
    failed = {c.get("name") for c in junit.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None}
    assert "test_infra_then_pass" not in failed and {"test_fail_then_pass",
                                                      "test_fail_twice"} <= failed


def test_schema_describes_the_record_type() -> None:
    schema = load_schema("record")
    fields = {f.name for f in dataclasses.fields(CaseRecord)} - {"extra"}
    assert set(schema["properties"]) == fields
    assert set(schema["properties"]["schema_version"]["enum"]) == set(READABLE_SCHEMA_VERSIONS)
    recorded = set(schema["properties"]["status"]["enum"])
    assert recorded == {str(s) for s in Status} - {"flaky"}


def test_old_records_stay_readable_and_round_trip() -> None:
    old = {"schema_version": "1.0", "run_id": "r", "target": TARGET, "suite": "operators",
           "case": "test_abs", "status": "pass", "expected_status": "pass",
           "as_expected": True, "message": "", "metrics": {"max_abs_error": 0.0},
           "duration_s": 0.1, "finished_at": "2025-01-01T00:00:00+00:00", "custom": 7}
    record = CaseRecord.from_dict(old)
    assert record.key == CaseKey(TARGET, "operators", "test_abs") and record.passed
    assert record.to_dict()["custom"] == 7  # unknown fields are kept
    assert CaseRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize("bad", [[], "text", {"target": TARGET}, dict(attempt("t", "pass", 1),
                                                                     status="great")])
def test_a_line_that_is_not_a_record_is_refused(bad: object) -> None:
    with pytest.raises(RecordError):
        CaseRecord.from_dict(bad)  # type: ignore[arg-type]


def test_selection_round_trips() -> None:
    selection = RunSelection(("operators",), (TARGET,), "representative", "abs", "1/2")
    assert RunSelection.from_dict(selection.to_dict()) == selection
    assert RunSelection.of_run({"selection": {"request": selection.to_dict()}}) == selection
    assert RunSelection.of_run({"selection": None}) is None
