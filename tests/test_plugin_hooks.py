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
