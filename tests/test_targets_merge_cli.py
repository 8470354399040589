"""``shipei targets`` lists registered names, every configuration and broken providers;
``shipei merge`` exits 1 when the merged run holds an unexpected result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli.main import main

PROVIDERS = '''
from harness.driver.registry import TargetSpec

def twins():
    yield TargetSpec(name="twin-a", factory="targets.testing:FaultyTarget")
    yield TargetSpec(name="twin-b", factory="targets.testing:FaultyTarget",
                     configurations=("default", "fast"))

def duplicate():
    yield TargetSpec(name="twin-a", factory="targets.testing:FaultyTarget")

def explode():
    raise RuntimeError("provider exploded")
'''
FAULTY = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}


@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shipei_test_providers.py").write_text(PROVIDERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHIPEI_PLUGINS", ",".join(
        f"shipei_test_providers:{name}" for name in ("twins", "duplicate", "explode")))


def test_targets_lists_registered_names_configurations_and_broken_providers(
        providers: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("twin-")}
    assert set(rows) == {"twin-a", "twin-b"}  # two names, not one identity name twice
    assert " default " in rows["twin-a"] and " default,fast " in rows["twin-b"]
    assert "identity name 'shipei-faulty' is not the registered name" in rows["twin-a"]
    assert "broken provider SHIPEI_PLUGINS 'shipei_test_providers:explode': " \
           "RuntimeError: provider exploded" in out
    assert "broken provider SHIPEI_PLUGINS 'shipei_test_providers:duplicate': target " \
           "'twin-a' registered twice" in out

    assert main(["targets", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    listed = {t["name"]: t for t in data["targets"]}
    assert listed["twin-b"]["configurations"] == ["default", "fast"]
    assert listed["twin-b"]["identity_name"] == "shipei-faulty"
    assert "provider exploded" in data["broken_providers"][
        "SHIPEI_PLUGINS 'shipei_test_providers:explode'"]


def test_a_driver_that_cannot_be_built_is_listed_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    (tmp_path / "shipei_unbuildable.py").write_text(
        "from harness.driver.registry import TargetSpec\n"
        "def provide():\n"
        "    yield TargetSpec(name='no-such-class', factory='shipei_unbuildable:Missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHIPEI_PLUGINS", "shipei_unbuildable:provide")
    assert main(["targets"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("no-such-class")]
    assert "driver failed to load: AttributeError" in line


def test_merge_exits_1_when_the_merged_run_holds_an_unexpected_result(
        shipei_cli, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = shipei_cli("run", "--target", "shipei-faulty,fault=wrong", "-k", "test_abs",
                       "--run-id", "wrong", env=FAULTY)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    locations = ["--results-dir", str(wrong.results), "--reports-dir", str(wrong.reports)]
    assert main(["merge", "wrong", "--run-id", "merged", "--allow-partial", *locations]) == 1
    out = capsys.readouterr().out
    assert "merged wrong" in out
    merged = [json.loads(line) for line in
              (wrong.results / "merged" / "records.jsonl").read_text().splitlines()]
    assert merged and not all(r["as_expected"] for r in merged)
