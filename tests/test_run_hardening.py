"""Run ids that cannot escape, bad option values refused before any case, a full disk
that ends the run with one clear line and no torn record, and SIGTERM finalizing the
run as Ctrl-C does (issue: security and fault hardening, items 6, 8, 9)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.results.record_files import check_run_id
from tests.conftest import REPO

SMALL = ["--suite", "operators", "-m", "representative", "-k", "abs or relu or neg"]


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "/abs", "..", ".hidden", "x" * 200,
                                    "bad id", "a..b"])
def test_run_ids_that_could_escape_are_refused(run_id: str) -> None:
    with pytest.raises(ValueError, match="run id"):
        check_run_id(run_id)


def test_shipei_run_refuses_an_escaping_run_id_before_writing(shipei_cli, tmp_path: Path
                                                                ) -> None:
    """The run checks its id (with check_run_id, above) before it writes anything."""
    done = shipei_cli("run", *SMALL, "--run-id", "../../x")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "run id" in (done.stdout + done.stderr)
    assert not (tmp_path / "x").exists() and not (tmp_path / "results").exists()


def test_an_existing_run_id_is_not_reopened(shipei_cli, tmp_path: Path) -> None:
    first = shipei_cli("run", *SMALL, "--run-id", "mine", "--case-timeout", "30")
    assert first.returncode == 0, first.stdout + first.stderr
    before = tree_digest(tmp_path / "results")
    again = shipei_cli("run", *SMALL, "--run-id", "mine")
    assert again.returncode == 2 and "already exists" in again.stdout + again.stderr
    assert tree_digest(tmp_path / "results") == before
    resumed = shipei_cli("run", "--resume", "mine")  # continuing it is what --resume is for
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    from harness.run.selection import resumable_pytest_args

    replayed = resumable_pytest_args(tmp_path / "results" / "mine")
    assert float(replayed[replayed.index("--case-timeout") + 1]) == 30  # options replayed
    assert replayed[replayed.index("-k") + 1] == "abs or relu or neg"  # from the selection


def test_a_run_being_written_is_not_written_by_a_second_run(shipei_cli, tmp_path: Path
                                                             ) -> None:
    """Two runs of one run id at once (started together past the 'already exists' check,
    or --resume while the run is live) would interleave their records: the second finds
    the records file locked and stops with one line, writing nothing."""
    from harness.results.record_files import RecordWriter, StorageError

    first = shipei_cli("run", *SMALL, "--run-id", "mine")
    assert first.returncode == 0, first.stdout + first.stderr
    records = tmp_path / "results" / "mine" / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:-1]))  # a case still to run: --resume has work
    live = RecordWriter(records)  # the run still writing
    try:
        with pytest.raises(StorageError, match="being written by another shipei run"):
            RecordWriter(records)
        before = tree_digest(tmp_path / "results")
        second = shipei_cli("run", "--resume", "mine")
        assert second.returncode != 0
        assert "being written by another shipei run" in second.stdout + second.stderr
        assert tree_digest(tmp_path / "results") == before
    finally:
        live.close()
    RecordWriter(records).close()  # free again once the first run ends


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_bad_case_timeouts_are_usage_errors(value: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    from harness.cli.main import main

    with pytest.raises(SystemExit) as exited:  # argparse refuses it: no run starts
        main(["run", *SMALL, "--case-timeout", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--case-timeout" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_results_dir_naming_a_file_is_a_usage_error(shipei_cli, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("keep me")
    done = shipei_cli("run", *SMALL, "--results-dir", str(a_file), locations=False)
    assert done.returncode == 2 and "is a file" in done.stdout + done.stderr
    assert a_file.read_text() == "keep me"


def test_a_bad_expectations_file_is_refused_before_any_case(shipei_cli, tmp_path: Path
                                                            ) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[operators\n")
    done = shipei_cli("run", *SMALL, "--target", "onnxruntime-cpu", "--expectations",
                      str(broken))
    assert done.returncode == 2 and "expectations" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()  # no run was opened


def _limit_file_size(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_writer_on_a_full_disk_keeps_whole_lines(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse writes past a size, as a full disk does."""
    path = tmp_path / "records.jsonl"
    script = f"""
import sys
from pathlib import Path
from harness.results.record_files import RecordWriter, StorageError
writer = RecordWriter(Path({str(path)!r}))
try:
    for i in range(1000):
        writer.write({{"case": f"test_{{i}}", "padding": "x" * 300}})
except StorageError as exc:
    print("STORAGE", writer.count, exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, preexec_fn=_limit_file_size(10_000), timeout=60)
    assert "STORAGE" in done.stdout, done.stdout + done.stderr
    kept = int(done.stdout.split()[1])
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    assert [json.loads(line)["case"] for line in lines[:-1]] == [f"test_{i}" for i in range(kept)]
    assert "shipei run --resume" in done.stdout


def test_a_full_disk_ends_the_run_clearly_and_resume_finishes_it(tmp_path: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    argv = [sys.executable, "-m", "harness", "run", "--suite", "operators", "-m",
            "representative", "--run-id", "full", "--results-dir", str(results),
            "--reports-dir", str(reports)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600,
                          preexec_fn=_limit_file_size(6_000))
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr
    assert "INTERNALERROR" not in done.stdout + done.stderr
    assert "cannot append to" in done.stdout + done.stderr
    run_dir = results / "full"
    data = (run_dir / "records.jsonl").read_bytes()
    assert data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    assert not list(run_dir.glob("*.tmp*"))  # no stray temporary file
    resumed = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", "full",
                              "--results-dir", str(results), "--reports-dir", str(reports)],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["exit_status"] == 0 and info["selection"]["selected"] == sum(
        1 for _ in (run_dir / "records.jsonl").read_text().splitlines())


def test_sigterm_finalizes_the_run(tmp_path: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    argv = [sys.executable, "-m", "harness", "run", "--suite", "operators", "--run-id", "term",
            "--results-dir", str(results), "--reports-dir", str(reports)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    records = results / "term" / "records.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not records.exists() or
                                           records.stat().st_size < 20_000):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    info = json.loads((results / "term" / "run.json").read_text())
    assert info["exit_status"] is not None and info["finished_at"], output[-2000:]
    assert info["exit_status"] == 2  # interrupted, as for Ctrl-C
    assert (reports / "term" / "junit.xml").exists()
    written = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(written) == sum(info["counts"]["onnxruntime-cpu"].get(s, 0) for s in (
        "pass", "fail", "error", "skip", "timeout", "crash", "infra_error"))


def test_a_disk_full_from_the_start_is_a_usage_error_not_an_interruption(tmp_path: Path
                                                                          ) -> None:
    """Not even run.json fits: one clear line and exit 2 (it was 130, as for Ctrl-C)."""
    argv = [sys.executable, "-m", "harness", "run", "-k", "test_abs", "--run-id", "full",
            "--results-dir", str(tmp_path / "results"), "--reports-dir",
            str(tmp_path / "reports")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300,
                          preexec_fn=_limit_file_size(100))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "shipei: error: cannot write" in output


def test_models_the_harness_cannot_feed_keep_a_record_each(tmp_path: Path) -> None:
    """Two models with a rank-65 input (numpy holds at most 64 dimensions) end before
    they record themselves: each gets its own record, with the error's one line."""
    from onnx import TensorProto, helper, save

    shape = [1] * 65
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name in ("deep", "deeper"):
        save(model, str(tmp_path / f"{name}.onnx"))
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--model", str(tmp_path / "deep.onnx"),
         "--model", str(tmp_path / "deeper.onnx"), "--results-dir", str(results),
         "--reports-dir", str(tmp_path / "reports")],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    (records,) = results.glob("*/records.jsonl")
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(r["case"] for r in lines) == ["test_model[deep.onnx]",
                                                "test_model[deeper.onnx]"]
    for record in lines:
        assert record["status"] == "infra_error" and record["attempt"] == 1
        assert "\n" not in record["message"]
        assert "maximum supported dimension" in record["message"]


def test_reports_that_cannot_be_written_at_the_end_keep_the_run(tmp_path: Path) -> None:
    """The reports folder takes files when the run starts but not the run's own folder at
    the end (a file is in its way, as a full or read-only disk would refuse it): one clear
    line, exit 2, and every record kept for shipei report to write them later."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "blocked").write_text("in the way\n")
    argv = [sys.executable, "-m", "harness", "run", "-k", "test_abs", "--run-id", "blocked",
            "--results-dir", str(tmp_path / "results"), "--reports-dir", str(reports)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert f"cannot write reports to {reports / 'blocked'}" in output
    assert "shipei report blocked" in output
    run_dir = tmp_path / "results" / "blocked"
    assert [json.loads(line)["case"] for line in
            (run_dir / "records.jsonl").read_text().splitlines()] == ["test_abs"]
    assert json.loads((run_dir / "run.json").read_text())["finished_at"]
