"""End-to-end runs of the operator suite: records, schema, JUnit, exit codes, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from harness.results.record_files import load_schema, read_records
from tests.conftest import REPO

FAULTY = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}


def _validate(run_dir: Path) -> list[dict]:
    records = list(read_records(run_dir / "records.jsonl"))
    record_schema = load_schema("record")
    for record in records:
        jsonschema.validate(record, record_schema)
    jsonschema.validate(json.loads((run_dir / "run.json").read_text()), load_schema("run"))
    return records


def test_real_cases_pass_with_valid_records_and_junit(shipei_cli) -> None:
    result = shipei_cli("run", "--target", "onnxruntime-cpu", "-k",
                        "test_abs or test_conv_with_strides_padding or test_cast_FLOAT_to_DOUBLE")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = result.run_dirs()
    records = _validate(run_dir)
    assert {r["case"] for r in records} == {"test_abs", "test_conv_with_strides_padding",
                                            "test_cast_FLOAT_to_DOUBLE"}
    assert all(r["status"] == "pass" and r["as_expected"] for r in records)
    assert all(r["metrics"]["compared_elements"] > 0 for r in records)
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["exit_status"] == 0
    assert run_info["targets"]["onnxruntime-cpu"]["runtime"] == "onnxruntime"
    assert run_info["environment"]["runtimes"]["onnxruntime"]
    # provenance: what the run executed, hashed, by paths that mean the same everywhere
    from harness.results.record_files import sha256_file

    suite_file = "suites/operators/test_operators.py"
    assert run_info["suite_files"][suite_file] == sha256_file(REPO / suite_file)
    driver_files = run_info["targets"]["onnxruntime-cpu"]["driver_files"]
    assert driver_files["targets/onnxruntime_target.py"] == sha256_file(
        REPO / "targets/onnxruntime_target.py")
    assert "targets/expectations/onnxruntime-cpu.toml" in driver_files
    assert str(run_dir / "records.jsonl") in result.stdout  # the summary names what it wrote
    junit = ET.parse(result.reports / run_dir.name / "junit.xml").getroot()
    suites = junit.findall("testsuite")
    assert [s.get("name") for s in suites] == ["operators[onnxruntime-cpu]"]
    assert len(suites[0].findall("testcase")) == 3
    assert not junit.findall(".//failure") and not junit.findall(".//error")


@pytest.mark.extended
def test_wrong_output_target_fails_with_the_right_figures(shipei_cli) -> None:
    result = shipei_cli("run", "--target", "shipei-faulty,fault=wrong,offset=0.25",
                        "-k", "test_abs", env=FAULTY)
    assert result.returncode == 1, result.stdout + result.stderr
    (run_dir,) = result.run_dirs()
    (record,) = [r for r in _validate(run_dir) if r["case"] == "test_abs"]
    assert record["status"] == "fail" and not record["as_expected"]
    # figures computed independently from the case's own data
    from onnx.backend.test.case.node import collect_testcases

    (case,) = [c for c in collect_testcases() if c.name == "test_abs"]
    expected = case.data_sets[0][1][0]
    wrong = (expected + np.float32(0.25)).astype(np.float32)
    abs_err = np.abs(wrong.astype(np.float64) - expected)
    assert record["metrics"]["max_abs_error"] == pytest.approx(abs_err.max(), rel=1e-6)
    rel = abs_err / np.abs(expected.astype(np.float64))
    assert record["metrics"]["max_rel_error"] == pytest.approx(rel.max(), rel=1e-6)
    assert record["metrics"]["mismatched_elements"] == expected.size
    failure = ET.parse(result.reports / run_dir.name / "junit.xml").getroot().find(
        ".//testcase[@name='test_abs']/failure")
    assert failure is not None and "max_abs_error=0.25" in failure.get("message")


def test_every_record_lies_inside_the_run_when_describing_the_target_is_slow(shipei_cli
                                                                           ) -> None:
    # run.json is written on the first record; its start is the session's, not the moment
    # the (slow) description of the targets ended, or the center's intake refuses the run
    result = shipei_cli("run", "--target", "shipei-faulty,describe_delay_s=1.5",
                        "-k", "test_abs", env=FAULTY)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = result.run_dirs()
    info = json.loads((run_dir / "run.json").read_text())
    records = _validate(run_dir)
    assert records
    assert all(info["started_at"] <= r["finished_at"] <= info["finished_at"] for r in records)


def test_unexpected_pass_is_reported(shipei_cli, tmp_path: Path) -> None:
    stale = tmp_path / "stale.toml"
    stale.write_text('[operators.test_abs]\nstatus = "fail"\nreason = "was broken once"\n')
    result = shipei_cli("run", "-k", "test_abs", "--expectations", str(stale))
    assert result.returncode == 1
    assert "unexpected pass" in result.stdout
    (record,) = [r for r in result.records() if r["case"] == "test_abs"]
    assert record["status"] == "pass" and record["as_expected"] is False


def test_expected_failure_exits_zero(shipei_cli, tmp_path: Path) -> None:
    known = tmp_path / "known.toml"
    known.write_text('[operators.test_abs]\nstatus = "fail"\nreason = "injected offset"\n')
    result = shipei_cli("run", "--target", "shipei-faulty,fault=wrong", "-k", "test_abs",
                        "--expectations", str(known), env=FAULTY)
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = [r for r in result.records() if r["case"] == "test_abs"]
    assert record["status"] == "fail" and record["as_expected"] is True
    assert record["expectation_reason"] == "injected offset"


@pytest.mark.parametrize("args, message", [
    (["--target", "no-such-target"], "unknown target 'no-such-target'; known targets:"),
    (["--target", "onnxruntime-cuda"], "is not available here"),
    (["--target", "onnxruntime-cpu,no_such_option=1"], "has no option 'no_such_option'"),
    (["--suite", "no-such-suite"], "unknown suite 'no-such-suite'; known suites:"),
    (["--model", "missing.onnx"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before pytest starts, so in-process (the console script's own path is
    covered by the subprocess run below and by test_cli_help)."""
    from harness.cli.main import main

    assert main(["run", *args]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert errors == captured.err.splitlines() and len(errors) == 1, captured.err
    assert message in errors[0]
    assert "Traceback" not in captured.err and not captured.out


def test_a_selection_of_no_cases_is_one_line_exit_2(shipei_cli) -> None:
    result = shipei_cli("run", "-k", "no_case_has_this_name")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert any("no cases were selected" in line for line in errors), result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_model_file_is_a_recorded_error_blamed_on_the_input(shipei_cli,
                                                                    tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not a protobuf\xff\xff")
    result = shipei_cli("run", "--model", str(corrupt))
    assert result.returncode == 1, result.stdout + result.stderr  # recorded, not refused
    (record,) = result.records()
    assert record["status"] == "error" and record["blame"] == "input"
    assert "is not a valid ONNX model" in record["message"] or "empty graph" in \
        record["message"]
    assert "Traceback" not in result.stderr + record["message"]


def test_model_file_runs_on_target(shipei_cli, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    path = tmp_path / "tiny-softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = shipei_cli("run", "--model", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = result.records()
    assert record["suite"] == "model_file" and record["case"] == "test_tiny_softmax"
    assert record["status"] == "pass"


def test_sigkill_mid_run_keeps_finished_records(tmp_path: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    argv = [sys.executable, "-m", "harness", "run", "--results-dir", str(results),
            "--reports-dir", str(reports), "--target", "shipei-faulty,fault=slow,delay_ms=150",
            "-k", "test_abs or test_add or test_sub or test_mul or test_div or test_relu"]
    proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, **FAULTY),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        records_file = None
        while time.monotonic() < deadline:
            found = list(results.glob("*/records.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 4:
                records_file = found[0]
                break
            time.sleep(0.05)
        assert records_file is not None, "the run wrote no records in time"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    run_dir = records_file.parent
    lines = records_file.read_text().splitlines()
    records = _validate(run_dir)
    assert len(records) == len(lines) >= 4  # every finished case is whole and valid
    info = json.loads((run_dir / "run.json").read_text())
    assert info["finished_at"] is None  # the run never finished, and says so
    rebuilt = subprocess.run([sys.executable, "-m", "harness", "report", run_dir.name,
                              "--results-dir", str(results), "--reports-dir", str(reports)],
                             cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr
    junit = ET.parse(reports / run_dir.name / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == len(records)
