"""The anti-gaming audits on a real performance run (TEST01-style accuracy inside the
timed run, TEST04-style caching detection) and the audit re-run on the center's own
target: a seeded sample, statuses and figures compared, disagreement blocks."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.center import anti_gaming, audit
from harness.results.record_files import load_run
from tests.center_support import (
    accept,
    build,
    copy_run,
    edit_run,
    make_center,
    shared_run,
    shipei,
)


@pytest.fixture(scope="module")
def perf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two timed cases (single-stream and offline) of the small MLP, shortened."""
    root = tmp_path_factory.mktemp("perf")
    out = shipei("run", "--suite", "performance", "--target", "onnxruntime-cpu",
                 "--results-dir", str(root / "results"), "--reports-dir", str(root / "reports"),
                 "--run-id", "perf", "--", "--perf-model", "mlp", "--perf-min-duration", "0.3",
                 "--perf-min-queries", "64", "--perf-warmup", "0.1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return root / "results" / "perf"


def _loaded(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, bytes], dict[int, str]]:
    _, records = load_run(run_dir)
    files = {f"runs/{run_dir.name}/{p.relative_to(run_dir).as_posix()}": p.read_bytes()
             for p in run_dir.rglob("*") if p.is_file()}
    return records, files, {id(r): run_dir.name for r in records}


def test_honest_timed_run_passes_both_audits(perf_run: Path) -> None:
    """Passed on a quiet machine. Measured while others used the CPUs (the records say
    so), the cache audit may be undecided, saying that; it never refuses an honest run."""
    records, files, run_of = _loaded(perf_run)
    assert len([r for r in records if r["status"] == "pass"]) == 2
    assert "2 timed case(s)" in anti_gaming.check_accuracy_in_performance(records)[0]
    try:
        said = anti_gaming.check_caching(records, files, run_of)
    except anti_gaming.AuditInconclusive as exc:
        assert not all((r["metrics"].get("machine") or {}).get("alone") for r in records), exc
        assert "other processes used" in str(exc) or "cannot say whether" in str(exc)
    else:
        assert "2 timed case(s)" in said[0]


@pytest.mark.parametrize(("edit", "words"), [
    (lambda m: m.pop("output_check"), "recorded no output check"),
    (lambda m: m["output_check"].update(mismatched_elements=4), "differ from the reference"),
])
def test_timed_figures_without_checked_outputs_are_refused(perf_run: Path, edit: Any,
                                                           words: str) -> None:
    records, _, _ = _loaded(perf_run)
    edited = copy.deepcopy(records)
    edit(edited[0]["metrics"])
    with pytest.raises(anti_gaming.AuditError, match=words):
        anti_gaming.check_accuracy_in_performance(edited)


def test_repeated_identical_queries_are_refused(perf_run: Path) -> None:
    records, files, _ = _loaded(perf_run)
    edited = copy.deepcopy(records)
    edited[0]["metrics"]["settings"]["distinct_inputs"] = 1
    with pytest.raises(anti_gaming.AuditError, match="1 distinct input"):
        anti_gaming.check_caching(edited, files, {id(r): perf_run.name for r in edited})


def test_cached_answers_and_edited_summaries_are_refused(perf_run: Path) -> None:
    records, files, _ = _loaded(perf_run)
    record = records[0]
    name = f"runs/{perf_run.name}/{record['metrics']['samples_file']}"
    with np.load(io.BytesIO(files[name])) as npz:
        stored = {k: npz[k] for k in npz.files}
    # one query in ten answered at once (as from a cache), the summary edited to match
    cached = stored["latency_ns"].copy()
    cached[::10] = 100
    buffer = io.BytesIO()
    np.savez(buffer, **(stored | {"latency_ns": cached}))
    edited = copy.deepcopy(records)
    edited[0]["metrics"]["summary"]["p50_ms"] = float(np.median(cached)) / 1e6
    edited_run_of = {id(r): perf_run.name for r in edited}
    with pytest.raises(anti_gaming.AuditError, match="answers look cached"):
        anti_gaming.check_caching(edited, files | {name: buffer.getvalue()}, edited_run_of)
    # a p50 that the stored samples do not give
    claimed = copy.deepcopy(records)
    claimed[0]["metrics"]["summary"]["p50_ms"] /= 2
    with pytest.raises(anti_gaming.AuditError, match="the record claims p50"):
        anti_gaming.check_caching(claimed, files, {id(r): perf_run.name for r in claimed})


def test_sample_is_seeded_and_leaves_out_timed_cases() -> None:
    records = [{"suite": s, "case": f"test_{i}"} for s in ("operators", "performance")
               for i in range(30)]
    cases = [(r["suite"], r["case"]) for r in records]
    first = audit.draw_sample(cases, 5, seed=11)
    assert first == audit.draw_sample(list(reversed(cases)), 5, seed=11)
    assert first != audit.draw_sample(cases, 5, seed=12)
    assert all(suite == "operators" for suite, _ in first)
    assert len(audit.draw_sample(cases, 500, seed=1)) == 30
    with pytest.raises(audit.SampleAuditError):
        audit.draw_sample(cases, 0, seed=1)


def test_comparison_names_status_and_figure_disagreements() -> None:
    vendor = [{"suite": "operators", "case": "test_a", "status": "pass",
               "metrics": {"max_abs_error": 0.0, "atol": 1e-7, "rtol": 1e-3}},
              {"suite": "operators", "case": "test_b", "status": "pass", "metrics": {}},
              {"suite": "models", "case": "test_m", "status": "pass",
               "metrics": {"min_cosine_similarity": 0.99999}}]
    center = [{"suite": "operators", "case": "test_a", "status": "pass",
               "metrics": {"max_abs_error": 0.5}},
              {"suite": "operators", "case": "test_b", "status": "fail", "metrics": {}},
              {"suite": "models", "case": "test_m", "status": "pass",
               "metrics": {"min_cosine_similarity": 0.99998}}]
    found = {c.case: c for c in audit.compare(
        [("operators", "test_a"), ("operators", "test_b"), ("models", "test_m")],
        vendor, center)}
    assert not found["test_a"].agrees and "max_abs_error" in found["test_a"].reason
    assert not found["test_b"].agrees and "pass (vendor) vs fail (center)" in found["test_b"].reason
    assert found["test_m"].agrees


@pytest.mark.extended
def test_audit_rerun_agrees_on_an_honest_bundle_and_blocks_a_doctored_one(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """shipei audit re-runs the sample here through shipei run -k: the honest bundle
    agrees; a bundle whose vendor signed records claiming passes for cases that fail
    here disagrees, exits 1, and certification is then blocked."""
    run_dir = shared_run(tmp_path_factory)
    center = make_center(tmp_path)
    honest = center.root / "honest.tar.gz"
    honest.write_bytes(build([run_dir], center.vendor_key))
    accept(center, honest.read_bytes())
    args = ["--db", center.db, *center.loc(), "--report-dir", str(center.reports / "audit")]
    agreed = shipei("audit", str(honest), "--sample", "3", "--seed", "5", *args)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "3/3 sampled cases agree" in agreed.stdout and "seed 5" in agreed.stdout
    # a doctored run: the vendor says every case of the sample failed; signed, so intake
    # cannot tell - only the re-run can (submitted to another center: to this one it is a
    # replay of the honest bundle's measurements)
    center = make_center(tmp_path / "second")
    args = ["--db", center.db, *center.loc(), "--report-dir", str(center.reports / "audit")]
    doctored = copy_run(run_dir, tmp_path / "vendor", "doctored")
    sample = audit.draw_sample([(r["suite"], r["case"]) for r in load_run(doctored)[1]], 3,
                               seed=5)
    edit_run(doctored, records_edit=lambda records: [
        dict(r, status="fail", as_expected=False, message="vendor says no")
        if (r["suite"], r["case"]) in sample else r for r in records])
    bad = center.root / "doctored.tar.gz"
    bad.write_bytes(build([doctored], center.vendor_key))
    accept(center, bad.read_bytes())
    blocked = shipei("audit", str(bad), "--sample", "3", "--seed", "5", *args)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "0/3 sampled cases agree" in blocked.stdout
    assert "certification blocked" in blocked.stdout
    certify = shipei("db", "certify", str(bad), "--profile", "framework", "--scope",
                     "representative", "--key", str(center.center_key), "--db", center.db,
                     "--results-dir", str(center.results),
                     "--certificates-dir", str(center.reports / "certificates"))
    assert certify.returncode == 2
    assert "certification is blocked" in certify.stderr
    report = json.loads(sorted((center.reports / "audit").glob("*.json"))[-1].read_text())
    assert report["seed"] == 5 and report["sample_size"] == 3 and not report["accepted"]
