"""What a newcomer meets first: commands whose extra is not installed, and target options
the driver does not take, each answered with one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import harness.cli.cmd_db as cmd_db
import harness.cli.cmd_serve as cmd_serve
from harness.cli.main import main


@pytest.mark.parametrize("command", ["db", "serve"])
def test_a_command_without_its_extra_names_the_extra_even_for_help(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in (cmd_db, cmd_serve):  # as on the base install: the center's packages absent
        monkeypatch.setattr(module, "REQUIRES", ("shipei_absent_package",))
    assert main([command, "--help"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == (f"shipei {command}: error: this command needs shipei_absent_package, "
                   "not installed: pip install 'shipei[center]'")


def test_an_unknown_target_option_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    code = main(["run", "--target", "onnxruntime-cpu,bogus=1", "-k", "nothing"])
    err = capsys.readouterr().err
    assert code == 2
    assert "has no option 'bogus'" in err and "intra_op_threads" in err
    assert "__init__" not in err and "keyword argument" not in err


def test_a_bad_option_value_is_the_drivers_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--target", "onnxruntime-cpu,intra_op_threads=-5", "-k", "nothing"])
    err = capsys.readouterr().err
    assert code == 2 and "intra_op_threads must be 0" in err and "its options:" in err


def test_compare_says_which_runs_were_measured_under_contention(tmp_path: Path) -> None:
    import json

    from harness.perf import compare
    from tests.test_perf_stats import _write_run

    latency = np.array([1_000_000 + 1000 * i for i in range(200)], dtype=np.int64)
    base = _write_run(tmp_path, "base", {"test_a": latency})
    new = _write_run(tmp_path, "new", {"test_a": latency})
    quiet = compare.compare_runs(base, new, resamples=100)
    assert quiet.contended == [] and "contention" not in "\n".join(compare.format_table(quiet))

    records = new / "records.jsonl"
    (record,) = [json.loads(line) for line in records.read_text().splitlines()]
    record["metrics"]["machine"] = {"alone": False, "foreign_cpu_share": 0.42}
    records.write_text(json.dumps(record) + "\n")
    busy = compare.compare_runs(base, new, resamples=100)
    assert busy.contended == ["onnxruntime-cpu test_a: run new: other processes used 42% of "
                              "the CPU time"]
    table = "\n".join(compare.format_table(busy))
    assert "measured under contention (1;" in table and "run new: other processes" in table


def _record(target: str, case: str, seconds: float) -> dict:
    return {"target": target, "suite": "s", "case": case, "status": "pass",
            "as_expected": True, "duration_s": seconds}


def test_the_summary_says_not_timed_instead_of_zero_seconds(tmp_path: Path) -> None:
    from harness.reports.writing import terminal_summary
    from harness.results.record_files import RunPaths

    records = [_record("serial-imu", "test_a", 0.0), _record("onnxruntime-cpu", "test_b", 1.5)]
    info = {"target_wall_s": {"serial-imu": 0.0, "onnxruntime-cpu": 1.5},
            "finished_at": "2026-12-06T00:00:00+00:00", "selection": {"selected": 2}}
    text = "\n".join(terminal_summary(records, info, RunPaths(tmp_path, tmp_path, "r"), []))
    assert "wall time on serial-imu: not timed" in text
    assert "wall time on onnxruntime-cpu: 1.5 s" in text
    assert "0.000 s" not in text and "slowest 1 cases:" in text
    assert "INCOMPLETE" not in text


def test_the_summary_of_a_killed_run_says_cases_are_missing(tmp_path: Path) -> None:
    from harness.reports.writing import missing_cases

    records = [_record("t", "test_a", 1.0), _record("t", "test_a", 1.0)]  # a retry: one case
    assert missing_cases(records, {"finished_at": None, "selection": {"selected": 5}},
                         "r1")[0].startswith("INCOMPLETE: 4 of 5 selected cases have no record "
                                             "(the run did not finish); shipei run --resume r1")
    assert "did not finish" in missing_cases(records, {"finished_at": None}, "r1")[0]
    assert missing_cases(records, {"finished_at": "x", "selection": {"selected": 1}}, "r1") == []


def test_intake_and_audit_pages_are_styled() -> None:
    from harness.center.report import render_html

    check = {"id": "signature", "title_zh": "签名", "title_en": "signature", "state": "fail",
             "detail": "bad"}
    page = render_html({"accepted": False, "failed_check": "signature", "checks": [check]},
                       "入库审查报告", "Intake report")
    assert "<style>" in page and ".verdict.refused{" in page
    assert "<p class='verdict refused'>" in page and "<tr class='fail'>" in page
    accepted = render_html({"accepted": True, "checks": [{**check, "state": "pass"}]}, "a", "b")
    assert "<p class='verdict accepted'>" in accepted
