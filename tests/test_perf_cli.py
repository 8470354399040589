"""``shipei run --suite performance`` and ``shipei compare``, end to end in subprocesses.

The target is the test-only ``shipei-faulty`` (onnxruntime underneath); its
``fault=slow`` sleeps ``delay_ms`` inside every run, which makes a latency that
a busy CI machine cannot blur: two runs at 2 ms must not differ significantly,
and 2.4 ms (+20 %) must be called a regression.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from harness.perf import samples as samples_io
from harness.results.record_files import load_schema

pytest.importorskip("mlperf_loadgen")

PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}
QUICK = ["--perf-model", "tiny", "--perf-min-duration", "0.5", "--perf-warmup", "0.1",
         "--perf-min-queries", "100"]
METRICS_SCHEMA = json.loads(
    (Path(__file__).parent.parent / "harness/perf/metrics.schema.json").read_text())


def _perf_run(shipei_cli, run_id: str, *targets: str, extra: tuple[str, ...] = ()):
    args = ["run", "--suite", "performance", "--run-id", run_id, *extra]
    for target in targets:
        args += ["--target", target]
    return shipei_cli(*args, "--", *QUICK, env=PLUGINS)


def _records(results: Path, run_id: str) -> list[dict]:
    lines = (results / run_id / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.extended
def test_samples_statistics_report_and_regression_check(shipei_cli):
    base = _perf_run(shipei_cli, "base", "shipei-faulty,fault=slow,delay_ms=2")
    assert base.returncode == 0, base.stdout + base.stderr
    records = _records(base.results, "base")
    assert sorted(r["case"] for r in records) == ["test_offline_tiny", "test_single_stream_tiny"]
    record_schema = load_schema("record")
    run_dir = base.results / "base"
    for record in records:
        jsonschema.validate(record, record_schema)
        metrics = record["metrics"]
        jsonschema.validate(metrics, METRICS_SCHEMA)
        assert record["status"] == "pass" and metrics["loadgen"]["valid"]
        # the statistics in the record, recomputed here from the stored samples
        stored = samples_io.load(run_dir, metrics["samples_file"])
        ordered = np.sort(stored.latency_ns)
        n = ordered.size
        summary = metrics["summary"]
        assert summary["count"] == n
        assert summary["p50_ms"] == ordered[int(n * 0.5)] / 1e6
        assert summary["p99_ms"] == ordered[int(n * 0.99)] / 1e6
        assert summary["max_ms"] == ordered[-1] / 1e6
        assert summary["mean_ms"] == pytest.approx(ordered.mean() / 1e6)
        span_s = (stored.start_ns[-1] + stored.latency_ns[-1]) / 1e9
        per_query = stored.samples_per_query
        assert (n - 1) * per_query < summary["samples"] <= n * per_query
        assert summary["samples_per_s"] == pytest.approx(summary["samples"] / span_s)
        # the injected 2 ms sleep is inside the timing (no upper bound: a busy machine
        # stretches it without limit)
        assert summary["p50_ms"] >= 2.0
        for log in metrics["loadgen_logs"]:
            assert (run_dir / log).stat().st_size > 0
        assert "loadavg_before" in metrics["machine"]
    offline = next(r for r in records if r["case"] == "test_offline_tiny")
    assert offline["metrics"]["batch_size"] == 8
    html = (base.reports / "base" / "performance.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 2  # one latency CDF (one target), one throughput chart
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "性能报告 / Performance report" in html

    same = _perf_run(shipei_cli, "same", "shipei-faulty,fault=slow,delay_ms=2",
                     extra=("-k", "single_stream"))
    slow = _perf_run(shipei_cli, "slow", "shipei-faulty,fault=slow,delay_ms=2.4",
                     extra=("-k", "single_stream"))
    assert same.returncode == 0 and slow.returncode == 0, same.stderr + slow.stderr
    where = ["--results-dir", str(base.results)]
    unchanged = shipei_cli("compare", "base", "same", *where)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "no significant regression beyond 10.0%" in unchanged.stdout
    assert "not compared: shipei-faulty,fault=slow,delay_ms=2 test_offline_tiny" in \
        unchanged.stdout
    regressed = shipei_cli("compare", "base", "slow", *where, "--json")
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    result = json.loads(regressed.stdout)
    (case,) = result["cases"]
    assert case["verdict"] == "regression"
    assert 0.10 < case["ci_low"] <= case["change"] <= case["ci_high"] < 0.40
    lenient = shipei_cli("compare", "base", "slow", *where, "--threshold", "50")
    assert lenient.returncode == 0 and "slower" in lenient.stdout


@pytest.mark.extended
def test_wrong_raising_crashing_and_hanging_targets_are_recorded(shipei_cli):
    result = _perf_run(shipei_cli, "faults", "shipei-faulty,fault=wrong",
                       "shipei-faulty,fault=raise", "shipei-faulty,fault=segfault",
                       "shipei-faulty,fault=hang,hang_s=120", "shipei-faulty,fault=none",
                       extra=("-k", "single_stream", "--case-timeout", "10"))
    assert result.returncode == 1, result.stdout + result.stderr
    status = {r["target"].split(",")[1]: r for r in _records(result.results, "faults")}
    assert status["fault=wrong"]["status"] == "fail"
    assert "not timed" in status["fault=wrong"]["message"]
    assert "samples_file" not in status["fault=wrong"]["metrics"]
    assert status["fault=raise"]["status"] == "error"
    assert "injected failure" in status["fault=raise"]["message"]
    assert status["fault=segfault"]["status"] == "crash"
    assert status["fault=hang"]["status"] == "timeout"
    assert status["fault=none"]["status"] == "pass"  # the run went on to the last target
    assert status["fault=none"]["metrics"]["samples_file"]


def test_cli_usage_errors_are_one_line(shipei_cli, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]):
    from harness.cli.main import main

    def compare(*args: str) -> tuple[int, str]:  # refused before any run: in-process
        code = main(["compare", *args])
        return code, capsys.readouterr().err

    code, err = compare("nope", "nada", "--results-dir", str(tmp_path))
    assert code == 2 and err.strip().splitlines()[-1].startswith("shipei compare: error: no run")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "records.jsonl").write_text("")
    code, err = compare(str(tmp_path / "a"), str(tmp_path / "a"), "--pair", "x")
    assert code == 2 and "BASE=NEW" in err
    code, err = compare(str(tmp_path / "a"), str(tmp_path / "a"))
    assert code == 2 and "share no performance cases" in err
    unknown = shipei_cli("run", "--suite", "performance", "--", "--perf-model", "resnet999")
    assert unknown.returncode == 2 and "unknown model" in unknown.stderr + unknown.stdout


SAID = {"emulated": "under emulation", "simulated": "the chip's simulator"}


def test_an_emulated_or_simulated_target_is_not_timed(shipei_cli):
    """Emulated timings (qemu-user) and an NPU simulator's timings on the host CPU are
    not performance figures: the case is a skip that says so, and no samples are
    stored. (One run, both targets.)"""
    done = _perf_run(shipei_cli, "untimed", *(f"shipei-faulty,{claim}=true" for claim in SAID))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    records = _records(done.results, "untimed")
    for claim, said in SAID.items():
        mine = [r for r in records if r["target"] == f"shipei-faulty,{claim}=true"]
        assert mine and all(r["status"] == "skip" for r in mine), claim
        assert all(said in r["message"] and "samples_file" not in r["metrics"]
                   for r in mine), claim
