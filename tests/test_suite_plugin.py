"""Adding a suite touches only the suite's own package and a profile TOML: a small suite
defined in the test's tmp dir and registered through ``SHIPEI_PLUGINS`` runs with
``shipei run``, writes the report it declares, is required by ``shipei gate`` through the
profile, and is certified (it appears in the certificate's suites)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

SUITE_INIT = '''
from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(name="smoke", package="smokesuite", title_zh="冒烟", title_en="Smoke",
                  reports=("smokesuite.report:write",), certificate_section="conformance",
                  gate_markexpr="")
'''
SUITE_REPORT = '''
def write(paths, run_info, records):
    mine = [r for r in records if r["suite"] == "smoke"]
    path = paths.report_dir / "smoke.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{len(mine)} smoke case(s)\\n", encoding="utf-8")
    return [path]
'''
SUITE_TESTS = '''
import numpy as np
import onnx
from onnx import TensorProto, helper

from harness.cases.case import Case, DataSet, LoadedCase
from harness.cases.suite import define_tests


def unary(op):
    def load():
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"])], op,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = np.array([-2.0, -0.5, 0.0, 3.0], dtype=np.float32)
        expected = {"Abs": np.abs(x), "Neg": -x}[op]
        return LoadedCase(model, [DataSet({"x": x}, [expected])])
    return Case("smoke", f"test_smoke_{op.lower()}", load, tags={"op_type": op})


define_tests(globals(), [unary("Abs"), unary("Neg")])
'''
PROFILE = '''
name = "smoke-profile"
version = "1.0"
kind = "framework"
title_zh = "冒烟认证"
title_en = "Smoke certification"

[scopes.full]
title_zh = "完整范围"
title_en = "Full scope"

[[criteria]]
id = "smoke_cases"
title_zh = "冒烟用例"
title_en = "Smoke cases"
suite = "smoke"
thresholds = { full = 1.0, limited = 0.5 }
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite-plugin")
    package = root / "smokesuite"
    package.mkdir()
    (package / "__init__.py").write_text(SUITE_INIT, encoding="utf-8")
    (package / "report.py").write_text(SUITE_REPORT, encoding="utf-8")
    (package / "test_smoke.py").write_text(textwrap.dedent(SUITE_TESTS), encoding="utf-8")
    (root / "profile.toml").write_text(PROFILE, encoding="utf-8")
    return root


def shipei(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SHIPEI_PLUGINS="smokesuite:SUITE",
               PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_suite_runs_and_writes_its_report(workspace: Path) -> None:
    done = shipei(workspace, "run", "--suite", "smoke", "--run-id", "smoke-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (workspace / "reports" / "smoke-run" / "smoke.txt").read_text() == \
        "2 smoke case(s)\n"
    info = json.loads((workspace / "results" / "smoke-run" / "run.json").read_text())
    assert info["selection"]["request"]["suites"] == ["smoke"]
    listed = shipei(workspace, "run", "--help").stdout
    assert "smoke" in listed


def test_the_gate_requires_it_through_the_profile(workspace: Path) -> None:
    done = shipei(workspace, "gate", "--target", "onnxruntime-cpu", "--profile",
                  "profile.toml", "--run-id", "smoke-gate")
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads((workspace / "reports" / "smoke-gate" / "gate.json").read_text())
    assert verdict["suites"] == ["contract", "smoke"]
    assert verdict["counts"]["smoke"] == {"pass": 2}


def test_a_certificate_rests_on_it(workspace: Path) -> None:
    assert (workspace / "results" / "smoke-run").is_dir(), "runs after the run test"
    keys = shipei(workspace, "keys", "init", "--name", "Smoke test center")
    assert keys.returncode == 0, keys.stderr
    done = shipei(workspace, "certify", "--target", "onnxruntime-cpu", "--profile",
                  "profile.toml", "--runs", "smoke-run")
    assert done.returncode == 0, done.stdout + done.stderr
    (certificate,) = (workspace / "reports" / "certificates").glob("SP-*.dsse.json")
    envelope = json.loads(certificate.read_text())
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert list(predicate["suites"]) == ["smoke"]
    assert predicate["level"]["id"] == "full"


def test_certify_cites_the_expectations_it_was_given(workspace: Path) -> None:
    """``certify --expectations FILE``: an out-of-tree expectations file is what the
    certificate cites among the driver's files (and what a certify run judges by)."""
    assert (workspace / "results" / "smoke-run").is_dir(), "runs after the run test"
    (workspace / "mine.toml").write_text("[smoke]\n", encoding="utf-8")
    done = shipei(workspace, "certify", "--target", "onnxruntime-cpu", "--profile",
                  "profile.toml", "--runs", "smoke-run", "--expectations", "mine.toml",
                  "--certificates-dir", "certs-mine")
    assert done.returncode == 0, done.stdout + done.stderr
    (certificate,) = (workspace / "certs-mine").glob("SP-*.dsse.json")
    predicate = json.loads(base64.b64decode(json.loads(certificate.read_text())["payload"])
                           )["predicate"]
    cited = [f.get("path", "") for f in predicate["files"]["driver"]]
    assert any(path.endswith("mine.toml") for path in cited), cited
    assert not any(path.endswith("onnxruntime-cpu.toml") for path in cited), cited
    missing = shipei(workspace, "certify", "--target", "onnxruntime-cpu", "--profile",
                     "profile.toml", "--runs", "smoke-run", "--expectations", "nope.toml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
