"""Shipei's own hooks reach a registered plugin with typed records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.hookspec import hookimpl


class RecordListener:
    """Appends what ``shipei_case_recorded`` receives to the file $LISTENER_OUT names."""

    @hookimpl
    def shipei_case_recorded(self, record: Any, paths: Any) -> None:
        line = {"type": type(record).__name__, "case": record.case, "status": record.status,
                "run_id": paths.run_id}
        with open(os.environ["LISTENER_OUT"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


LISTENER = RecordListener()


def test_a_plugin_listening_for_records_gets_each_as_a_case_record(shipei_cli, tmp_path: Path):
    out = tmp_path / "heard.jsonl"
    result = shipei_cli("run", "--suite", "operators", "-k", "test_abs or test_neg",
                        env={"SHIPEI_PLUGINS": "tests.test_plugin_hooks:LISTENER",
                             "LISTENER_OUT": str(out)})
    assert result.returncode == 0, result.stderr[-2000:]
    heard = [json.loads(line) for line in out.read_text().splitlines()]
    records = result.records()
    assert len(heard) == len(records) > 0
    assert {h["type"] for h in heard} == {"CaseRecord"}
    assert [h["case"] for h in heard] == [r["case"] for r in records]
    assert {h["run_id"] for h in heard} == {records[0]["run_id"]}


class ReportWriter:
    """Keeps what ``shipei_write_reports`` receives; writes one file."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    @hookimpl
    def shipei_write_reports(self, paths: Any, run_info: Any, records: list[Any]) -> list[Path]:
        self.received = list(records)
        target = paths.report_dir / "heard.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(f"{r.case} {r.status}" for r in records))
        return [target]


REPORTER = ReportWriter()


def test_reports_hook_gets_typed_records_from_a_plugins_entry(tmp_path: Path, monkeypatch):
    """A plugin named ``plugins=module:object`` in SHIPEI_PLUGINS is registered, and
    ``shipei_write_reports`` gives it CaseRecords, as every hook does; the built-in reports
    still write JUnit from the same records."""
    from harness.reports.writing import write_reports
    from harness.results.case_record import CaseRecord, Status
    from harness.results.record_files import RunPaths

    monkeypatch.setenv("SHIPEI_PLUGINS", "plugins=tests.test_plugin_hooks:REPORTER")
    record = {"target": "onnxruntime-cpu", "suite": "operators", "case": "test_abs",
              "status": "fail", "as_expected": False, "message": "differs",
              "run_id": "r1", "nodeid": "x"}
    paths = RunPaths(tmp_path / "results", tmp_path / "reports", "r1")
    files = write_reports(paths, {"run_id": "r1"}, [record])
    assert [type(r) for r in REPORTER.received] == [CaseRecord]
    assert REPORTER.received[0].status is Status.FAIL
    assert {f.name for f in files} >= {"heard.txt", "junit.xml"}
    assert "test_abs" in (paths.report_dir / "junit.xml").read_text()
