"""The operator coverage matrix (``harness.reports.matrix``, ``shipei matrix``), and the
representative operator subset on the OpenVINO and TVM targets end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.reports.matrix import build, html_page, text_lines, write_reports
from harness.results.record_files import RecordWriter, write_json


def _record(target: str, case: str, status: str, op: str | None = None,
            suite: str = "operators", dtypes=("float32",), opset: int = 17) -> dict:
    tags = {"op_type": op, "opset": opset, "dtypes": list(dtypes), "source": "node"} \
        if op else {}
    return {"target": target, "suite": suite, "case": case, "status": status,
            "message": f"{status} on {target}" if status != "pass" else "", "tags": tags,
            "as_expected": status == "pass"}


RUN_A = ({"run_id": "run-a", "targets": {"ort": {"runtime": "onnxruntime",
                                                   "runtime_version": "1.0"}}}, [
    _record("ort", "test_abs", "pass", "Abs"),
    _record("ort", "test_add", "pass", "Add"),
    _record("ort", "test_add_int8", "pass", "Add", dtypes=("int8",)),
    _record("ov", "test_abs", "pass", "Abs"),
    _record("ov", "test_add", "fail", "Add"),
    _record("ov", "test_add_int8", "error", "Add", dtypes=("int8",)),
    _record("ov", "test_lstm", "skip", "LSTM"),
    _record("ort", "test_model<x>", "pass", None, suite="model_file"),
])


def _write_run(results: Path, run_id: str, records: list[dict]) -> Path:
    run_dir = results / run_id
    write_json(run_dir / "run.json", {"run_id": run_id, "targets": {}})
    writer = RecordWriter(run_dir / "records.jsonl")
    for record in records:
        writer.write(dict(record, run_id=run_id))
    writer.close()
    return run_dir


def test_cells_count_passes_of_cases_run_per_operator():
    matrix = build([RUN_A])
    assert matrix.columns == ["ort", "ov"]
    groups = {g.key: g for g in matrix.groups("op")}
    assert groups["Add"].cell("ort") == "2/2" and groups["Add"].cell("ov") == "0/2"
    assert groups["Abs"].cell("ov") == "1/1" and not groups["Abs"].differs(matrix.columns)
    assert groups["LSTM"].cell("ort") == "-" and groups["LSTM"].cell("ov") == "0/1"
    assert groups["[model_file]"].cell("ort") == "1/1"
    assert matrix.totals("ov") == {"pass": 1, "fail": 1, "error": 1, "skip": 1}
    assert matrix.full_ops("ov") == (1, 3)


def test_grouping_by_operator_and_input_dtypes():
    keys = [g.key for g in build([RUN_A]).groups("op-dtype")]
    assert "Add (float32)" in keys and "Add (int8)" in keys
    with pytest.raises(ValueError):
        build([RUN_A]).groups("colour")


def test_same_target_in_two_runs_gets_two_columns():
    later = ({"run_id": "run-b"}, [_record("ov", "test_add", "pass", "Add")])
    matrix = build([RUN_A, later])
    assert matrix.columns == ["ort", "ov@run-a", "ov@run-b"]
    add = next(g for g in matrix.groups("op") if g.key == "Add")
    assert add.cell("ov@run-b") == "1/1"


def test_text_marks_differences_and_prints_totals():
    lines = text_lines(build([RUN_A]))
    add_line = next(line for line in lines if line.startswith("Add "))
    assert add_line.split() == ["Add", "2", "2/2", "0/2", "*"]
    abs_line = next(line for line in lines if line.startswith("Abs "))
    assert "*" not in abs_line
    header = next(line for line in lines if line.startswith("target "))
    assert "ops all-pass" in header
    assert any(line.split()[:5] == ["ov", "1", "1", "1", "1"] for line in lines)
    only = text_lines(build([RUN_A]), only_differences=True)
    assert not any(line.startswith("Abs ") for line in only)
    cases = text_lines(build([RUN_A]), by="case")
    assert any(line.split() == ["test_add_int8", "Add", "pass", "error"] for line in cases)


def test_csv_and_self_contained_bilingual_html(tmp_path):
    files = write_reports(build([RUN_A]), tmp_path)
    assert [f.name for f in files] == ["matrix.csv", "matrix-cases.csv", "matrix.html"]
    with open(tmp_path / "matrix.csv", encoding="utf-8") as handle:
        rows = {r["op_type"]: r for r in csv.DictReader(handle)}
    assert rows["Add"]["ov passed"] == "0" and rows["Add"]["ov ran"] == "2"
    assert rows["Add"]["ov fail"] == "1" and rows["Add"]["ov error"] == "1"
    assert rows["Add"]["dtypes"] == "float32 int8"
    with open(tmp_path / "matrix-cases.csv", encoding="utf-8") as handle:
        cases = {r["case"]: r for r in csv.DictReader(handle)}
    assert cases["test_lstm"]["ort"] == "-" and cases["test_lstm"]["ov"] == "skip"
    page = (tmp_path / "matrix.html").read_text(encoding="utf-8")
    assert "算子覆盖矩阵 / Operator coverage matrix" in page and "按算子 / By operator" in page
    assert "test_model&lt;x&gt;" in page and "test_model<x>" not in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_html_page_links_each_operator_to_its_cases():
    page = html_page(build([RUN_A]))
    assert "href='#op-Add'" in page and "id='op-Add'" in page


def test_cli_matrix_of_two_runs_by_prefix_and_folder(shipei_cli, tmp_path):
    results = tmp_path / "results"
    _write_run(results, "20260101-000000-aaaaaa", RUN_A[1])
    other = _write_run(results, "20260102-000000-bbbbbb",
                       [_record("tvm", "test_add", "pass", "Add")])
    result = shipei_cli("matrix", "20260101", str(other), "--results-dir", str(results),
                        "--reports-dir", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stderr
    assert "ort" in result.stdout and "tvm" in result.stdout
    out_dir = tmp_path / "reports" / "20260101-000000-aaaaaa"
    assert (out_dir / "matrix.html").exists() and (out_dir / "matrix.csv").exists()
    assert f"report:  {out_dir / 'matrix.html'}" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-run"], "no run 'no-such-run'"),
    (["2026"], "ambiguous"),
    (["20260101-000000-aaaaaa", "20260101"], "given twice"),
    (["20260103-000000-cccccc"], "has no records"),
])
def test_cli_matrix_errors_are_one_line(shipei_cli, tmp_path, args, message):
    results = tmp_path / "results"
    _write_run(results, "20260101-000000-aaaaaa", RUN_A[1])
    _write_run(results, "20260102-000000-bbbbbb", RUN_A[1])
    _write_run(results, "20260103-000000-cccccc", [])
    result = shipei_cli("matrix", *args, "--results-dir", str(results))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("shipei matrix: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.extended
def test_representative_subset_on_openvino_and_tvm_then_matrix(shipei_cli, tmp_path):
    """What CI runs per new target: one canonical case per operator, judged against
    the targets' expectations files; then the matrix of that run."""
    pytest.importorskip("openvino")
    pytest.importorskip("tvm")
    # a cold TVM cache (real compiles), but the session's generated cases
    tvm = f"tvm-llvm,cache_dir={tmp_path / 'tvm-cache'}"
    result = shipei_cli("run", "--suite", "operators", "-m", "representative",
                        "--target", "openvino-cpu", "--target", tvm)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    records = result.records()
    by_target = {t: [r for r in records if r["target"] == label]
                 for t, label in (("openvino-cpu", "openvino-cpu"), ("tvm-llvm", tvm))}
    for target, mine in by_target.items():
        assert len(mine) >= 40, target
        passed = [r for r in mine if r["status"] == "pass"]
        assert len(passed) >= len(mine) // 2, target
        for record in passed:  # a pass is a comparison within the case's tolerances
            metrics = record["metrics"]
            assert metrics["compared_elements"] > 0 and metrics["mismatched_elements"] == 0
    assert all(r["placement"]["cache_hit"] is False for r in by_target["tvm-llvm"]
               if r["status"] == "pass")
    run_dir = result.run_dirs()[0]
    run_info = json.loads((run_dir / "run.json").read_text())
    assert set(run_info["target_wall_s"]) == {"openvino-cpu", tvm}
    assert f"wall time on {tvm}" in result.stdout

    matrix = shipei_cli("matrix", run_dir.name, "--results-dir", str(result.results),
                        "--reports-dir", str(result.reports))
    assert matrix.returncode == 0, matrix.stderr
    header = matrix.stdout.splitlines()[0].split()
    assert header[:2] == ["operator", "cases"] and header[2:4] == ["openvino-cpu", tvm]
    assert (result.reports / run_dir.name / "matrix.html").exists()
