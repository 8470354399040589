"""``shipei gate``: the example vendor driver installed apart passes it, its broken variant
fails naming each problem, latency regressions are caught through the performance
suite, and the verdict logic holds on hand-made records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from harness.gate import (
    Baseline,
    GateError,
    GatePolicy,
    evaluate,
    gate_junit,
    load_baseline,
    render_markdown,
)
from tests.conftest import REPO

VENDOR = "examplevendor-cpu"
BROKEN = f"{VENDOR},fault_wrong_op=Abs,fault_leak_mb=4,fault_hang_op=Sigmoid"
PLUGINS = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}


# -- the example vendor driver, installed into a virtual environment of its own ---------------
@pytest.fixture(scope="module")
def vendor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv layered on this one (for the harness and the runtimes), into which the
    example driver is pip-installed (not editable: the package data must ship)."""
    root = tmp_path_factory.mktemp("vendor")
    source = root / "vendor-driver"
    shutil.copytree(REPO / "examples" / "vendor-driver", source,
                    ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    base = sysconfig.get_paths()["purelib"]  # this environment's packages, .pth files included
    Path(purelib, "_shipei_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps",
                              "--no-build-isolation", "--no-index", str(source)],
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def vendor_shipei(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "harness", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def gate_json(reports: Path, run_id: str) -> dict:
    return json.loads((reports / run_id / "gate.json").read_text())


def test_vendor_driver_is_a_separate_install_found_through_its_entry_point(
        vendor_python: Path, tmp_path: Path) -> None:
    here = {ep.name for ep in metadata.entry_points(group="shipei.targets")}
    assert "examplevendor" not in here  # not installed in the harness's own environment
    listed = vendor_shipei(vendor_python, tmp_path, "targets", "--json")
    assert listed.returncode == 0, listed.stderr
    (target,) = [t for t in json.loads(listed.stdout)["targets"] if t["name"] == VENDOR]
    assert target["available"] and target["origin"].endswith("(shipei-examplevendor 0.1.0)")
    assert target["vendor"] == "ExampleVendor (示例厂商)"


def test_vendor_driver_passes_the_gate_and_its_broken_variant_fails_naming_each_problem(
        vendor_python: Path, tmp_path: Path) -> None:
    where = ["--results-dir", str(tmp_path / "results"), "--reports-dir",
             str(tmp_path / "reports")]
    good = vendor_shipei(vendor_python, tmp_path, "gate", "--target", VENDOR, "--run-id", "ok",
                         *where)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS 通过" in good.stdout
    verdict = gate_json(tmp_path / "reports", "ok")
    assert verdict["passed"] and verdict["findings"] == []
    assert verdict["counts"]["contract"] == {"pass": 11}  # the declared-dtypes probe too
    assert verdict["counts"]["operators"]["error"] == 1  # LSTM: refused, as its file expects
    records = [json.loads(line) for line in
               (tmp_path / "results" / "ok" / "records.jsonl").read_text().splitlines()]
    (lstm,) = [r for r in records if r["case"] == "test_lstm_reverse"]
    assert lstm["as_expected"] and "UnsupportedModelError" in lstm["message"]
    assert lstm["expectation_reason"].startswith("ExampleVendor kernels have no LSTM")
    for name in ("gate.md", "gate-junit.xml", "junit.xml"):
        assert (tmp_path / "reports" / "ok" / name).exists()

    bad = vendor_shipei(vendor_python, tmp_path, "gate", "--target", BROKEN, "--baseline", "ok",
                        "--case-timeout", "10", "--run-id", "broken", *where)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    found = {(f["category"], f["suite"], f["case"]): f["message"]
             for f in gate_json(tmp_path / "reports", "broken")["findings"]}
    assert set(found) == {("contract", "contract", "test_resources_released"),
                          ("regression", "operators", "test_abs"),
                          ("regression", "operators", "test_sigmoid")}
    assert "memory grew" in found[("contract", "contract", "test_resources_released")]
    assert found[("regression", "operators", "test_abs")].startswith("pass -> fail")
    assert found[("regression", "operators", "test_sigmoid")].startswith("pass -> timeout")
    markdown = (tmp_path / "reports" / "broken" / "gate.md").read_text()
    assert markdown == bad.stdout[bad.stdout.index("## Shipei gate"):].rstrip("\n") + "\n"
    for words in ("FAIL 未通过", "驱动契约违规", "相对基线的回退", "`operators::test_abs`",
                  "`operators::test_sigmoid`", "`contract::test_resources_released`"):
        assert words in markdown
    junit = ET.parse(tmp_path / "reports" / "broken" / "gate-junit.xml").getroot()
    failed = {c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None}
    assert failed == {"test_resources_released", "test_abs", "test_sigmoid"}


# -- latency through the performance suite -----------------------------------------------------
PERF_QUICK = ["--perf-model", "tiny", "--perf-min-duration", "0.5", "--perf-warmup", "0.1",
              "--perf-min-queries", "100"]


@pytest.mark.extended
def test_gate_fails_on_a_significant_latency_regression(shipei_cli, tmp_path: Path) -> None:
    pytest.importorskip("mlperf_loadgen")
    where = ["--results-dir", str(tmp_path / "results"), "--reports-dir",
             str(tmp_path / "reports"), "--suite", "performance", "-m", "all"]
    base = shipei_cli("gate", "--target", "shipei-faulty,fault=slow,delay_ms=2", "--run-id",
                      "fast", *where, "--", *PERF_QUICK, env=PLUGINS)
    assert base.returncode == 0, base.stdout + base.stderr
    slow = shipei_cli("gate", "--target", "shipei-faulty,fault=slow,delay_ms=4",
                      "--baseline", "fast", "--run-id", "slow", *where, "--", *PERF_QUICK,
                      env=PLUGINS)
    assert slow.returncode == 1, slow.stdout + slow.stderr
    verdict = gate_json(tmp_path / "reports", "slow")
    assert {(f["category"], f["case"]) for f in verdict["findings"]} == {
        ("latency", "test_single_stream_tiny"), ("latency", "test_offline_tiny")}
    assert verdict["latency"].startswith("latency compared on 2 case(s): 2 significant")


# -- usage errors --------------------------------------------------------------------------------
def test_gate_usage_errors_are_one_line(tmp_path: Path, capsys) -> None:
    """Refused before the gate's run starts: in-process."""
    from harness.cli.main import main

    where = ["--results-dir", str(tmp_path / "results"), "--reports-dir",
             str(tmp_path / "reports")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    for args, message in [
        (["--target", "no-such-target"], "unknown target 'no-such-target'"),
        (["--target", "onnxruntime-cpu", "--baseline", "nosuch"], "baseline: no run 'nosuch'"),
        (["--target", "onnxruntime-cpu", "--baseline", str(empty)], "holds no case records"),
        (["--target", "onnxruntime-cpu", "--suite", "nosuch"], "unknown suite 'nosuch'"),
    ]:
        code = main(["gate", *args, *where])
        out, err = capsys.readouterr()
        assert code == 2, out + err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0], err
        assert "Traceback" not in err


# -- the verdict on hand-made records ------------------------------------------------------------
def record(case: str, status: str = "pass", suite: str = "operators", **extra) -> dict:
    return {"target": "t", "suite": suite, "case": case, "status": status,
            "as_expected": status == "pass", "expected_status": "pass",
            "expectation_reason": "", "message": "" if status == "pass" else "it broke",
            "metrics": {"max_abs_error": 0.0, "atol": 1e-7}, "duration_s": 0.01, **extra}


def verdict_for(records: list[dict], base: list[dict] | None = None,
                run_args: list[str] | None = None, base_args: list[str] | None = None,
                policy: GatePolicy | None = None):
    info = {"run_id": "now", "pytest_args": run_args or [], "targets": {"t": {"name": "t"}}}
    baseline = Baseline("base", "t", {(r["suite"], r["case"]): r for r in base},
                        info={"pytest_args": base_args or []}) if base is not None else None
    contract = [record("test_identity_complete", suite="contract")]
    return evaluate(info, contract + records, "t", ["operators"], "representative", baseline,
                    policy or GatePolicy())


def categories(verdict) -> list[tuple[str, str]]:
    return [(f.category, f.case) for f in verdict.findings]


def test_a_regression_stays_one_when_the_expectations_are_edited_to_hide_it() -> None:
    hidden = record("test_a", "fail", as_expected=True, expected_status="fail",
                    expectation_reason="added in this PR")
    verdict = verdict_for([hidden], base=[record("test_a")])
    assert categories(verdict) == [("regression", "test_a")]
    assert "the expectations now list it: added in this PR" in verdict.findings[0].message


def test_unexpected_results_and_stale_expectations_fail_without_a_baseline() -> None:
    stale = record("test_b", as_expected=False, expected_status="fail",
                   expectation_reason="old bug")
    verdict = verdict_for([record("test_a", "error"), stale])
    assert categories(verdict) == [("unexpected", "test_a"), ("stale-expectation", "test_b")]
    assert not verdict.passed and not verdict.infrastructure_only


def test_contract_violations_are_not_waivable() -> None:
    waived = record("test_resources_released", "fail", suite="contract", as_expected=True)
    verdict = verdict_for([waived, record("test_a")])
    assert categories(verdict) == [("contract", "test_resources_released")]


def test_accuracy_drift_follows_the_policy() -> None:
    before = record("test_a", metrics={"max_abs_error": 1e-6, "atol": 1e-7})
    within = record("test_a", metrics={"max_abs_error": 2.9e-6, "atol": 1e-7})
    beyond = record("test_a", metrics={"max_abs_error": 3.1e-6, "atol": 1e-7})
    assert verdict_for([within], base=[before]).passed  # 2 x 1e-6 + 1e-6 = 3e-6
    assert categories(verdict_for([beyond], base=[before])) == [("drift", "test_a")]
    loose = GatePolicy(drift_factor=4.0)
    assert verdict_for([beyond], base=[before], policy=loose).passed


def test_missing_cases_count_only_under_the_same_selection() -> None:
    args = ["/x/suites/contract", "/x/suites/operators", "-m", "contract or (representative)"]
    base = [record("test_a"), record("test_gone")]
    same = verdict_for([record("test_a")], base=base, run_args=args, base_args=args)
    assert categories(same) == [("missing", "test_gone")]
    other = verdict_for([record("test_a")], base=base, run_args=args,
                        base_args=["/x/suites/operators"])
    assert other.passed and "not counted as missing" in other.notes[0]


def test_infrastructure_failures_are_blamed_apart() -> None:
    verdict = verdict_for([record("test_a", "infra_error", message="worker did not start")])
    assert categories(verdict) == [("infrastructure", "test_a")]
    assert verdict.infrastructure_only
    assert "INFRASTRUCTURE 基础设施故障" in render_markdown(verdict)


def test_a_suite_with_no_cases_fails_the_gate() -> None:
    info = {"run_id": "now", "targets": {}}
    verdict = evaluate(info, [record("test_a")], "t", ["operators"], None, None, GatePolicy())
    assert categories(verdict) == [("infrastructure", "")]
    assert verdict.findings[0].suite == "contract"


def test_markdown_and_junit_of_a_failing_gate() -> None:
    verdict = verdict_for([record("test_a", "fail")], base=[record("test_a")])
    markdown = render_markdown(verdict, ["reports/now/gate.md"])
    assert markdown.startswith("## Shipei gate 适配门禁: ❌ FAIL 未通过 — `t`")
    assert "| operators | 0 | 1 |" in markdown and "`reports/now/gate.md`" in markdown
    assert "latency not compared: the baseline is a records file" in markdown
    root = ET.fromstring(gate_junit(verdict, [record("test_a", "fail")]))
    (failure,) = root.iter("failure")
    assert failure.get("type") == "regression"


def test_baseline_from_a_records_file_picks_the_target(tmp_path: Path) -> None:
    path = tmp_path / "baseline.jsonl"
    rows = [dict(record("test_a"), target="vendor-cpu,threads=2"),
            dict(record("test_a"), target="other-cpu")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    chosen = load_baseline(str(path), tmp_path, "vendor-cpu,fault_wrong_op=Abs")
    assert chosen.target == "vendor-cpu,threads=2" and chosen.run_dir is None
    with pytest.raises(GateError, match="has no records for 'third-cpu'"):
        load_baseline(str(path), tmp_path, "third-cpu")


def test_ci_workflows_run_the_gate_and_the_sharded_suite() -> None:
    yaml = pytest.importorskip("yaml")
    example = REPO / "examples" / "vendor-driver"
    github = yaml.safe_load((example / ".github/workflows/shipei-gate.yml").read_text())
    jobs = github["jobs"]
    gate_steps = " ".join(step.get("run", "") for step in jobs["gate"]["steps"])
    assert 'shipei gate --target "$TARGET" $BASELINE' in gate_steps
    assert jobs["full-suite"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert "--shard ${{ matrix.shard }}/4" in " ".join(
        step.get("run", "") for step in jobs["full-suite"]["steps"])
    assert "shipei merge full-${{ github.run_id }}-{1,2,3,4}" in " ".join(
        step.get("run", "") for step in jobs["merge"]["steps"])
    gitlab = yaml.safe_load((example / ".gitlab-ci.yml").read_text())
    assert any("shipei gate" in line for line in gitlab["gate"]["script"])
    assert gitlab["gate"]["artifacts"]["reports"]["junit"].endswith("gate-junit.xml")
    assert gitlab["full-suite"]["parallel"] == 4
    assert "--shard \"$CI_NODE_INDEX/$CI_NODE_TOTAL\"" in gitlab["full-suite"]["script"][0]
    assert gitlab["merge"]["script"][0].startswith("shipei merge")


@pytest.mark.parametrize("changes", [{"drift_factor": -1.0}, {"drift_factor": float("nan")},
                                     {"latency_threshold": -0.5}, {"latency_threshold": 0.0},
                                     {"drift_floor": float("inf")}])
def test_thresholds_that_pass_or_stop_everything_are_refused(changes):
    with pytest.raises(ValueError, match="must be a positive number"):
        GatePolicy(**changes)
