"""Parallel, sharded, merged, killed-and-resumed and retried runs against one serial run.

Every run here executes the representative operator cases (46) on the test-only
``shipei-faulty`` target with an injected 60 ms per run, so runs last long enough
to be killed halfway, and compares its cases with one uninterrupted serial run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from harness.gate import GatePolicy, evaluate
from harness.results.record_files import load_run, load_schema, read_records
from harness.run.selection import SelectionError, Shard, split
from tests.conftest import REPO

PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}
SLOW = "shipei-faulty,fault=slow,delay_ms=60,trigger_op=*"
SELECT = ["-m", "representative", "--target", SLOW]
REPRESENTATIVE_CASES = 46


def shipei(root: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "harness", *args]
    if args[0] in ("run", "merge", "report"):
        argv += ["--results-dir", str(root / "results"), "--reports-dir", str(root / "reports")]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", **PLUGINS, **(env or {})),
                          check=False)


def merge(capsys: pytest.CaptureFixture[str], root: Path, *args: str
          ) -> subprocess.CompletedProcess[str]:
    """``shipei merge`` in this process (it starts no pytest: the same code without an
    interpreter start), answered like :func:`shipei`."""
    from harness.cli.main import main

    capsys.readouterr()
    code = main(["merge", *args, "--results-dir", str(root / "results"), "--reports-dir",
                 str(root / "reports")])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["shipei", "merge", *args], code, out, err)


def outcomes(run_dir: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    """(suite, case) -> (status, as_expected) over a run's effective records."""
    _, records = load_run(run_dir)
    return {(r["suite"], r["case"]): (r["status"], r["as_expected"]) for r in records}


def raw_keys(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(r["target"], r["suite"], r["case"])
            for r in read_records(run_dir / "records.jsonl")]


def junit_cases(root: Path, run_id: str) -> int:
    return len(ET.parse(root / "reports" / run_id / "junit.xml").getroot().findall(".//testcase"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def reference(root: Path) -> Path:
    """One uninterrupted serial run: what every other way of running must reproduce."""
    done = shipei(root, "run", *SELECT, "--run-id", "reference")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = root / "results" / "reference"
    assert len(outcomes(run_dir)) == REPRESENTATIVE_CASES
    return run_dir


@pytest.fixture(scope="module")
def shards(root: Path, reference: Path) -> list[str]:
    ids = []
    for index in range(1, 5):
        run_id = f"shard-{index}"
        done = shipei(root, "run", *SELECT, "--shard", f"{index}/4", "--durations-from",
                      "reference", "--run-id", run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        ids.append(run_id)
    return ids


# -- splitting -------------------------------------------------------------------------------
def test_split_is_deterministic_even_and_complete() -> None:
    names = [f"case_{i:03d}" for i in range(103)]
    parts = split(names, 4)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert sorted(n for p in parts for n in p) == names
    assert split(list(reversed(names)), 4) == parts  # input order does not matter


def test_split_balances_recorded_durations() -> None:
    weights = {"heavy": 10.0, **{f"light_{i:02d}": 1.0 for i in range(30)}}
    parts = split(list(weights), 4, weights)
    loads = [sum(weights[n] for n in p) for p in parts]
    assert loads == [10.0, 10.0, 10.0, 10.0]
    assert ["heavy"] in parts  # the heavy case gets a shard of its own


def test_cases_without_a_recorded_duration_weigh_the_median() -> None:
    weights = {"a": 4.0, "b": 4.0, "c": 1.0}
    parts = split(["a", "b", "c", "new"], 2, weights)  # "new" weighs 4.0 (the median)
    assert sorted(sum(weights.get(n, 4.0) for n in p) for p in parts) == [5.0, 8.0]


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "3", "1/0"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(SelectionError):
        Shard.parse(text)


@pytest.mark.parametrize("args, message", [
    (["--shard", "5/4"], "need 1 <= I <= N"),
    (["--shard", "two"], "--shard must be I/N"),
    (["--shard", "1/2", "--durations-from", "nosuch"], "--durations-from: no run 'nosuch'"),
    (["--durations-from", "nosuch"], "--durations-from only applies with --shard"),
    (["--resume", "nosuch"], "--resume: no run 'nosuch'"),
    (["--retry-failed", "nosuch", "-k", "test_abs"], "--retry-failed: no run 'nosuch'"),
])
def test_selection_usage_errors_are_one_line(shipei_cli, args: list[str], message: str) -> None:
    result = shipei_cli("run", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


# -- shards and merge --------------------------------------------------------------------------
@pytest.mark.extended
def test_four_shards_merged_equal_the_unsharded_run(root: Path, reference: Path,
                                                     shards: list[str], capsys) -> None:
    recorded = {r["case"]: r["duration_s"] for r in read_records(reference / "records.jsonl")}
    sizes, loads = [], []
    for run_id in shards:
        info = json.loads((root / "results" / run_id / "run.json").read_text())
        assert info["selection"]["durations_from"] == "reference"
        assert info["selection"]["collected"] == REPRESENTATIVE_CASES
        cases = [case for _, _, case in raw_keys(root / "results" / run_id)]
        assert len(cases) == info["selection"]["selected"]
        sizes.append(len(cases))
        loads.append(sum(recorded[c] for c in cases))
    assert sum(sizes) == REPRESENTATIVE_CASES
    # balanced by the reference's durations: no shard heavier than another by more
    # than the longest single case
    assert max(loads) - min(loads) <= max(recorded.values()) + 1e-9
    done = merge(capsys, root, *shards, "--run-id", "merged")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "merged shard-3 shard 3/4" in done.stdout
    merged = root / "results" / "merged"
    assert outcomes(merged) == outcomes(reference)
    assert len(raw_keys(merged)) == len(set(raw_keys(merged))) == REPRESENTATIVE_CASES
    info = json.loads((merged / "run.json").read_text())
    jsonschema.validate(info, load_schema("run"))
    for record in read_records(merged / "records.jsonl"):
        jsonschema.validate(record, load_schema("record"))
    assert info["selection"]["merged_shards"] == "4/4"
    assert info["selection"]["selected"] == REPRESENTATIVE_CASES
    assert [p["run_id"] for p in info["merged_from"]] == shards
    assert info["counts"] == json.loads((reference / "run.json").read_text())["counts"]
    assert junit_cases(root, "merged") == junit_cases(root, "reference")


def test_merge_refuses_incomplete_or_mixed_shards(root: Path, shards: list[str],
                                                  capsys) -> None:
    missing = merge(capsys, root, *shards[:3])
    assert missing.returncode == 2 and "shard(s) 4/4 missing" in missing.stderr
    partial = merge(capsys, root, *shards[:3], "--allow-partial", "--run-id", "partial")
    assert partial.returncode == 0, partial.stderr

    other = root / "results" / "shard-4-elsewhere"
    shutil.copytree(root / "results" / shards[3], other)
    info = json.loads((other / "run.json").read_text())
    info["environment"]["runtimes"]["onnxruntime"] = "0.0.1"
    (other / "run.json").write_text(json.dumps(info))
    mixed = merge(capsys, root, *shards[:3], other.name)
    assert mixed.returncode == 2
    assert "different runtime versions (onnxruntime" in mixed.stderr
    allowed = merge(capsys, root, *shards[:3], other.name, "--allow-mixed", "--run-id", "mix")
    assert allowed.returncode == 0, allowed.stderr
    assert set(json.loads((root / "results" / "mix" / "run.json").read_text())
               ["environments"]) == {*shards[:3], other.name}

    killed = root / "results" / "shard-4-killed"
    shutil.copytree(root / "results" / shards[3], killed)
    info = json.loads((killed / "run.json").read_text())
    info["finished_at"] = None
    (killed / "run.json").write_text(json.dumps(info))
    unfinished = merge(capsys, root, *shards[:3], killed.name)
    assert unfinished.returncode == 2
    assert "never finished" in unfinished.stderr and "--resume shard-4-killed" in unfinished.stderr

    twice = merge(capsys, root, shards[0], shards[0])
    assert twice.returncode == 2 and "given twice" in twice.stderr


# -- xdist -------------------------------------------------------------------------------------
@pytest.mark.extended
def test_xdist_run_equals_the_serial_run(root: Path, reference: Path, capsys) -> None:
    done = shipei(root, "run", *SELECT, "-n", "2", "--run-id", "xdist")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = root / "results" / "xdist"
    assert outcomes(run_dir) == outcomes(reference)
    keys = raw_keys(run_dir)
    assert len(keys) == len(set(keys)) == REPRESENTATIVE_CASES  # no loss, no duplicates
    info = json.loads((run_dir / "run.json").read_text())
    assert info["selection"]["collected"] == REPRESENTATIVE_CASES  # reported by the workers
    assert junit_cases(root, "xdist") == REPRESENTATIVE_CASES

    overlap = merge(capsys, root, "reference", "xdist")
    assert overlap.returncode == 2 and "is in both reference and xdist" in overlap.stderr
    kept = merge(capsys, root, "reference", "xdist", "--allow-overlap", "--run-id", "both")
    assert kept.returncode == 0, kept.stderr
    assert len(raw_keys(root / "results" / "both")) == REPRESENTATIVE_CASES


# -- kill and resume ---------------------------------------------------------------------------
def test_killed_run_resumed_equals_the_uninterrupted_run(root: Path, reference: Path) -> None:
    run_dir = root / "results" / "killed"
    argv = [sys.executable, "-m", "harness", "run", *SELECT, "--run-id", "killed",
            "--results-dir", str(root / "results"), "--reports-dir", str(root / "reports")]
    process = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, **PLUGINS),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    records = run_dir / "records.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if records.exists() and len(records.read_bytes().splitlines()) >= 12:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its target worker, mid-case
    process.wait(30)
    before = len(raw_keys(run_dir))
    assert 12 <= before < REPRESENTATIVE_CASES, "the run was not interrupted halfway"
    assert json.loads((run_dir / "run.json").read_text())["finished_at"] is None
    with open(records, "ab") as handle:  # a line torn by the kill
        handle.write(b'{"torn": ')
    report = shipei(root, "report", "killed")  # the report on the killed run says so
    assert report.returncode == 0, report.stderr
    assert f"INCOMPLETE: {REPRESENTATIVE_CASES - before} of {REPRESENTATIVE_CASES} selected " \
        "cases have no record (the run did not finish)" in report.stdout

    done = shipei(root, "run", "--resume", "killed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert outcomes(run_dir) == outcomes(reference)
    lines = records.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn tail was cut, nothing merged
    keys = raw_keys(run_dir)
    assert len(keys) == len(set(keys)) == REPRESENTATIVE_CASES
    info = json.loads((run_dir / "run.json").read_text())
    assert info["finished_at"] and info["exit_status"] == 0
    (continuation,) = info["continuations"]
    assert continuation["left_alone"] == before
    assert continuation["to_run"] == REPRESENTATIVE_CASES - before
    assert sum(info["counts"][SLOW].get(s, 0) for s in ("pass", "skip")) == REPRESENTATIVE_CASES
    assert junit_cases(root, "killed") == REPRESENTATIVE_CASES

    again = shipei(root, "run", "--resume", "killed")
    assert again.returncode == 0 and "nothing left to resume in run killed" in again.stdout
    other = shipei(root, "run", "--resume", "killed", "-k", "test_abs", "--target", SLOW)
    assert other.returncode == 2 and "are not the ones run killed selected" in other.stderr


# -- retry ---------------------------------------------------------------------------------------
def test_retry_records_both_attempts_and_reports_flaky(shipei_cli, tmp_path: Path) -> None:
    target = f"shipei-faulty,fault=flaky,trigger_op=Abs,flaky_marker={tmp_path / 'marker'}"
    first = shipei_cli("run", "--target", target, "-k", "test_abs or test_erf", "--run-id",
                       "flaky", env=PLUGINS)
    assert first.returncode == 1, first.stdout + first.stderr
    retry = shipei_cli("run", "--retry-failed", "flaky", env=PLUGINS)
    assert retry.returncode == 1, retry.stdout + retry.stderr  # flaky is not a clean run
    run_dir = first.results / "flaky"
    raw = list(read_records(run_dir / "records.jsonl"))
    assert sorted((r["case"], r["attempt"], r["status"]) for r in raw) == [
        ("test_abs", 1, "error"), ("test_abs", 2, "pass"), ("test_erf", 1, "pass")]
    info, effective = load_run(run_dir)
    by_case = {r["case"]: r for r in effective}
    assert by_case["test_abs"]["status"] == "flaky" and not by_case["test_abs"]["as_expected"]
    assert "error on attempt 1" in by_case["test_abs"]["message"]
    assert by_case["test_abs"]["previous_attempts"][0]["status"] == "error"
    assert by_case["test_erf"]["status"] == "pass"
    assert info["counts"][target] == {"pass": 1, "flaky": 1, "unexpected": 1}
    assert info["continuations"][0]["mode"] == ["retry-failed"]
    verdict = evaluate(info, effective, target, ["operators"], None, None, GatePolicy())
    found = {(f.category, f.suite, f.case) for f in verdict.findings}
    # the gate names the flaky case (and that no contract case ran in this plain run)
    assert found == {("flaky", "operators", "test_abs"), ("infrastructure", "contract", "")}


def test_a_case_failing_on_every_attempt_is_not_flaky(shipei_cli) -> None:
    target = "shipei-faulty,fault=raise,trigger_op=Abs"
    first = shipei_cli("run", "--target", target, "-k", "test_abs", "--run-id", "broken",
                       env=PLUGINS)
    assert first.returncode == 1
    retry = shipei_cli("run", "--retry-failed", "broken", env=PLUGINS)
    assert retry.returncode == 1, retry.stdout + retry.stderr
    _, (record,) = load_run(first.results / "broken")
    assert record["status"] == "error" and record["attempt"] == 2
    assert [a["status"] for a in record["previous_attempts"]] == ["error"]
    assert "flaky" not in record
