"""reports/<run-id>/performance.html from records and samples alone."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from harness.cases.suite_registry import suite_spec
from harness.perf import samples as samples_io
from harness.perf.report import REPORT_FILE, write_performance_report
from harness.perf.stats import summarize
from harness.results.record_files import RunPaths


def _record(paths: RunPaths, target: str, model: str, scenario: str, latency: np.ndarray,
            alone: bool) -> dict:
    case = f"test_{scenario}_{model}"
    relative, _ = samples_io.save(paths.run_dir, samples_io.file_stem(target, case),
                                  samples_io.Samples(latency, np.cumsum(latency), 1))
    return {"target": target, "case": case, "status": "pass", "message": "",
            "tags": {"scenario": scenario, "model": model},
            "metrics": {"perf_schema_version": "1.0", "scenario": scenario, "model": model,
                        "samples_file": relative, "summary": summarize(latency),
                        "loadgen": {"validity": "VALID"},
                        "machine": {"alone": alone, "foreign_cpu_share": 0.0 if alone else 0.4,
                                    "loadavg_before": [0.1, 0, 0], "loadavg_after": [0.2, 0, 0],
                                    "governor": None, "frequency_mhz": {"cpu0": 2400.0}},
                        "threads": {"declared": {"intra_op_threads": 1}, "process_threads": 3}}}


def test_report_has_tables_and_one_cdf_per_target(tmp_path: Path):
    paths = RunPaths(tmp_path / "results", tmp_path / "reports", "r1")
    rng = np.random.default_rng(0)
    records = [_record(paths, t, m, s, rng.integers(1_000, 9_000, 500), alone=t == "a")
               for t in ("a", "b,x=1") for m in ("mlp", "cnn")
               for s in ("single_stream", "offline")]
    records.append({"target": "a", "case": "test_abs", "status": "pass", "metrics": {},
                    "tags": {}})  # a conformance record is left out
    (written,) = write_performance_report(paths, {"environment": {"cpu_model": "X"}}, records)
    assert written == paths.report_dir / REPORT_FILE
    html = written.read_text(encoding="utf-8")
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 3  # a CDF for each of the two targets, one throughput chart
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert html.count("<tr>") == 1 + 8 + 1 + 8  # results and conditions tables
    assert "test_abs" not in html
    assert "4 measurement(s) shared the machine" in html
    assert "b,x=1" in html and "<script" not in html


def test_no_performance_records_no_report(tmp_path: Path):
    paths = RunPaths(tmp_path, tmp_path, "r2")
    assert write_performance_report(paths, {}, [{"target": "a", "case": "t", "metrics": {},
                                                 "status": "pass"}]) == []
    assert suite_spec("performance").reports == (
        "harness.perf.report:write_performance_report",)
