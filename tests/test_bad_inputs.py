"""Bad input to any command: exit 2, one line on stderr, no traceback, nothing lost.

One table of bad inputs across the commands. Every row runs on its own copy of a
results folder holding a real run (``good``) and corrupt ones: a run.json that is
not JSON (``badjson``) or not an object (``arrjson``), a records.jsonl with a
non-object line (``nonobj``), an empty folder (``emptydir``). The folder's files are
hashed before and after: a refused command changes none of them.

Every row runs in this process (``harness.cli.main.main``: the same code, without an
interpreter start per row); ``run`` and ``gate`` refuse these inputs before any case
runs, in their own argument checks or in pytest's configuration (a nested pytest
session, as pytester runs one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli.main import main


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    message: str  # what the one stderr line must contain


def row(*args: str, message: str, marks: pytest.MarkDecorator | tuple = (), id: str
        ) -> object:
    return pytest.param(Row(args, message), marks=marks, id=id)


EXPECT = ("expectations", "update")
TARGET = ("--target", "onnxruntime-cpu")
CERTIFY = ("certify", *TARGET, "--profile", "framework", "--key", "{keys}/center.key")
RUN = ("run", "-k", "test_abs")
#: the commands that read or write run folders (given --results-dir/--reports-dir)
LOCATED = ("report", "matrix", "merge", "expectations", "compare", "certify", "gate", "run")

#: chmod does not stop root from writing: a read-only folder is tested as anyone else
AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root writes to read-only folders")

ROWS = [
    # report / matrix / merge / expectations / compare / certify on corrupt runs
    row("report", "badjson", message="run.json is not valid JSON", id="report-runjson-garbled"),
    row("report", "arrjson", message="run.json is not a JSON object", id="report-runjson-array"),
    row("report", "nonobj", message="line 2 is not a JSON object", id="report-records-nonobject"),
    row("report", "", message="empty run id", id="report-empty-id"),
    row("report", "emptydir", message="is not a run folder", id="report-empty-folder"),
    row("report", "missing", message="no run 'missing'", id="report-missing"),
    row("report", "good", "--reports-dir", "{dir}/afile", message="cannot write reports",
        id="report-reports-dir-is-file"),
    row("matrix", "badjson", message="run.json is not valid JSON", id="matrix-runjson-garbled"),
    row("matrix", "good", "nonobj", message="line 2 is not a JSON object",
        id="matrix-records-nonobject"),
    row("matrix", "good", "good", message="given twice", id="matrix-run-twice"),
    row("matrix", "good", "--output-dir", "{dir}/afile", message="cannot write the matrix",
        id="matrix-output-dir-is-file"),
    row("matrix", "good", "--by", "nope", message="invalid choice",
        id="matrix-bad-choice"),
    row("merge", "badjson", "good", message="run.json is not valid JSON",
        id="merge-runjson-garbled"),
    row("merge", "nonobj", message="line 2 is not a JSON object", id="merge-records-nonobject"),
    row("merge", "good", "--run-id", "../escape", "--allow-partial", message="run id '../escape'",
        id="merge-run-id-escapes"),
    row("merge", "good", "--run-id", "good", message="already exists", id="merge-run-id-exists"),
    row("merge", "missing", message="no run 'missing'", id="merge-missing"),
    row(*EXPECT, "badjson", *TARGET, "-o", "{dir}/x.toml", message="run.json is not valid JSON",
        id="expectations-runjson-garbled"),
    row(*EXPECT, "nonobj", *TARGET, "-o", "{dir}/x.toml", message="line 2 is not a JSON object",
        id="expectations-records-nonobject"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/nodir/x.toml", message="does not exist",
        id="expectations-output-folder-missing"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/afile/x.toml", message="is not a folder",
        id="expectations-output-folder-is-file"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}", message="is a folder",
        id="expectations-output-is-folder"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/malformed.toml",
        message="not TOML", id="expectations-previous-malformed"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/invalid.toml",
        message="status must be one of", id="expectations-previous-bad-status"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/noreason.toml",
        message="a reason", id="expectations-previous-no-reason"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/numreason.toml",
        message="reason must be text", id="expectations-previous-reason-not-text"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/binary.toml",
        message="not TOML", id="expectations-previous-binary"),
    row(*EXPECT, "good", *TARGET, "-o", "{dir}/x.toml", "--previous", "{dir}/missing.toml",
        message="cannot read expectations", id="expectations-previous-missing"),
    row(*EXPECT, "good", "--target", "nope", "-o", "{dir}/x.toml", message="no records for",
        id="expectations-unknown-target"),
    row("compare", "badjson", "good", message="run.json is not valid JSON",
        id="compare-runjson-garbled"),
    row("compare", "nonobj", "good", message="line 2 is not a JSON object",
        id="compare-records-nonobject"),
    row("compare", "good", "good", "--threshold", "nan", message="--threshold must be a finite",
        id="compare-threshold-nan"),
    row("compare", "good", "good", "--confidence", "150", message="confidence must be between",
        id="compare-confidence-150"),
    row("compare", "good", "good", "--resamples", "5", message="--resamples must be at least",
        id="compare-resamples-5"),
    row("compare", "good", "good", "--pair", "x", message="is not BASE=NEW", id="compare-pair"),
    row("compare", "", "good", message="empty run id", id="compare-empty-id"),
    row(*CERTIFY, "--runs", "badjson", message="is not valid JSON", id="certify-runjson-garbled"),
    row(*CERTIFY, "--runs", "nonobj", message="line 2 is not a JSON object",
        id="certify-records-nonobject"),
    row("certify", *TARGET, "--profile", "{dir}/missing.toml", "--runs", "good",
        "--key", "{keys}/center.key", message="cannot read profile", id="certify-profile-missing"),
    row(*CERTIFY[:-1], "{dir}/missing.key", "--runs", "good", message="does not exist",
        id="certify-key-missing"),
    row("models", "golden", "no_such_model", message="no model 'no_such_model'",
        id="models-unknown"),
    row("no-such-command", message="invalid choice", id="unknown-command"),
    # shipei run and gate: options validated before any case runs
    row(*RUN, "--case-timeout", "0", message="--case-timeout: must be a positive",
        id="run-case-timeout-0"),
    row(*RUN, "--case-timeout", "-1", message="--case-timeout: must be a positive",
        id="run-case-timeout-negative"),
    row(*RUN, "--case-timeout", "nan", message="--case-timeout: must be a positive",
        id="run-case-timeout-nan"),
    row(*RUN, "--results-dir", "{dir}/afile", message="--results-dir",
        id="run-results-dir-is-file"),
    row(*RUN, "--expectations", "{dir}/malformed.toml", message="malformed.toml",
        id="run-expectations-malformed"),
    row(*RUN, "--expectations", "{dir}/invalid.toml", message="status must be one of",
        id="run-expectations-invalid"),
    row(*RUN, "--expectations", "{dir}/missing.toml", message="missing.toml",
        id="run-expectations-missing"),
    row("run", "--resume", "badjson", message="run.json is not valid JSON",
        id="run-resume-runjson-garbled"),
    row("run", "--resume", "nonobj", message="line 2 is not a JSON object",
        id="run-resume-records-nonobject"),
    row(*RUN, "--run-id", "../x", message="run id '../x'", id="run-run-id-escapes"),
    # issue 27 item 12: run's bad inputs that gave a traceback, a hang or a wrong exit code
    row(*RUN, "-n", "99999999999999999999", message="argument -n: at most",
        id="run-n-huge"),
    row(*RUN, "--results-dir", "/proc/self", message="--results-dir /proc/self cannot be "
        "written to", id="run-results-dir-proc"),
    row(*RUN, "--reports-dir", "/proc/self", message="--reports-dir /proc/self cannot be "
        "written to", id="run-reports-dir-proc"),
    row(*RUN, "--results-dir", "{dir}/readonly/results", message="cannot be written to",
        marks=AS_ROOT, id="run-results-dir-read-only"),
    row(*RUN, "--reports-dir", "{dir}/readonly", message="cannot be written to",
        marks=AS_ROOT, id="run-reports-dir-read-only"),
    row(*RUN, "--shard", "1/99999999999999", message="at most 10000 shards",
        id="run-shard-huge"),
    row(*RUN, "--worker-memory-limit", "0.0000001K", message="less than the smallest ceiling",
        id="run-worker-memory-limit-zero"),
    row(*RUN, "--target", "onnxruntime-cpu,intra_op_threads=-4",
        message="intra_op_threads must be 0", id="run-intra-op-threads-negative"),
    row("run", "--resume", "good", "--retry-failed", "good", message="cannot be combined",
        id="run-resume-and-retry-failed"),
    row("gate", *TARGET, "--drift-factor", "-1", message="--drift-factor must be a positive",
        id="gate-drift-factor-negative"),
    row("gate", *TARGET, "--drift-factor", "nan", message="--drift-factor must be a positive",
        id="gate-drift-factor-nan"),
    row("gate", *TARGET, "--latency-threshold", "-0.5",
        message="--latency-threshold must be a positive",
        id="gate-latency-threshold-negative"),
    row("gate", *TARGET, "--baseline", "nonobj", message="line 2 is not a JSON object",
        id="gate-baseline-records-nonobject"),
    row("gate", *TARGET, "--case-timeout", "nan", message="--case-timeout",
        id="gate-case-timeout-nan"),
]

FILES = {
    "afile": b"not a folder\n",
    "malformed.toml": b"[operators\n",
    "invalid.toml": b'[operators.test_abs]\nstatus = "bogus"\nreason = "x"\n',
    "noreason.toml": b'[operators.test_abs]\nstatus = "fail"\n',
    "numreason.toml": b'[operators.test_abs]\nstatus = "fail"\nreason = 5\n',
    "binary.toml": b"\xff\xfe\x00\x01",
}


@dataclass
class Outcome:
    code: int
    stderr: str


def _corrupt_copies(results: Path) -> None:
    good = results / "good"
    for name in ("badjson", "arrjson", "nonobj"):
        shutil.copytree(good, results / name)
    (results / "badjson" / "run.json").write_text('{"run_id": "badjson", ')
    (results / "arrjson" / "run.json").write_text("[1, 2]\n")
    lines = (good / "records.jsonl").read_text().splitlines(keepends=True)
    (results / "nonobj" / "records.jsonl").write_text(lines[0] + "[1, 2]\n" + "".join(lines[1:]))
    (results / "emptydir").mkdir()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with results/ (a real run and corrupt copies), keys/ and bad files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    made = subprocess.run(
        [sys.executable, "-m", "harness", "run", "-k", "test_abs or test_relu", "--run-id",
         "good", "--results-dir", str(root / "results"), "--reports-dir",
         str(root / "reports")], capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    _corrupt_copies(root / "results")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    assert _in_process(["keys", "init", "--dir", str(root / "keys")]).code == 0
    return root


def _in_process(argv: list[str]) -> Outcome:
    import contextlib
    import io

    stderr = io.StringIO()
    previous = signal.getsignal(signal.SIGPIPE)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        signal.signal(signal.SIGPIPE, previous)
    return Outcome(code, stderr.getvalue())


def _argv(spec: Row, directory: Path) -> list[str]:
    """The row's arguments, with results/ and reports/ in ``directory`` unless it names
    its own (before any '--' of ``run``, after the positional run ids elsewhere)."""
    argv = [a.format(dir=directory, keys=directory / "keys") for a in spec.args]
    if argv[0] not in LOCATED:
        return argv
    locations = [item for option in ("--results-dir", "--reports-dir") if option not in argv
                 for item in (option, str(directory / option[2:-4]))]
    return argv[:1] + locations + argv[1:] if argv[0] == "run" else argv + locations


def digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        total.update(path.relative_to(folder).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def _run_row(spec: Row, directory: Path) -> tuple[Outcome, str, str]:
    before = digest(directory / "results")
    argv = _argv(spec, directory)
    outcome = _in_process(argv)
    return outcome, before, digest(directory / "results")


@pytest.mark.parametrize("spec", ROWS)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
        spec: Row, base: Path, tmp_path: Path) -> None:
    directory = tmp_path / "work"
    shutil.copytree(base, directory)
    outcome, before, after = _run_row(spec, directory)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == 2, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    assert spec.message in lines[0], lines[0]
    assert after == before, "the command changed the results folder"


def test_the_table_covers_the_issue_and_forty_inputs() -> None:
    ids = {p.id for p in ROWS}
    assert len(ids) == len(ROWS) >= 40
    for required in ("report-runjson-garbled", "report-records-nonobject",
                     "matrix-records-nonobject", "merge-records-nonobject",
                     "certify-records-nonobject", "run-resume-records-nonobject",
                     "run-results-dir-is-file", "expectations-output-folder-missing",
                     "run-case-timeout-0", "run-case-timeout-negative", "run-case-timeout-nan",
                     "run-expectations-malformed", "run-expectations-invalid",
                     "run-expectations-missing",
                     # issue 27 item 12
                     "run-n-huge", "run-results-dir-proc", "run-reports-dir-proc",
                     "run-results-dir-read-only", "run-reports-dir-read-only",
                     "run-shard-huge", "run-worker-memory-limit-zero",
                     "run-intra-op-threads-negative", "run-resume-and-retry-failed",
                     "gate-drift-factor-negative", "gate-drift-factor-nan",
                     "gate-latency-threshold-negative"):
        assert required in ids


def test_a_good_merge_still_works_after_the_refusals(base: Path, tmp_path: Path) -> None:
    """The fixture's real run merges and reports: the refusals above are not refusals of
    everything."""
    directory = tmp_path / "work"
    shutil.copytree(base, directory)
    argv = ["--results-dir", str(directory / "results"), "--reports-dir",
            str(directory / "reports")]
    assert _in_process(["report", "good", *argv]).code == 0
    assert _in_process(["merge", "good", "--run-id", "merged", "--allow-partial", *argv]
                       ).code == 0
    info = json.loads((directory / "results" / "merged" / "run.json").read_text())
    assert info["merged_from"][0]["run_id"] == "good"
