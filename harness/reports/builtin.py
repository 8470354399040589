"""The built-in reports: JUnit XML for every run, plus the reports the suites present in a
run declare (:attr:`harness.cases.suite_registry.SuiteSpec.reports`), so a suite's report is
written when the run holds records of that suite. The hook passes typed records; JUnit and
a suite's report writer (``f(paths, run_info, records)``) take them as JSON objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.cases.suite_registry import discover_suites
from harness.driver.registry import load_object
from harness.hookspec import hookimpl
from harness.reports.junit import write_junit
from harness.results.case_record import CaseRecord
from harness.results.record_files import RunPaths


class BuiltinReports:
    """JUnit plus the reports the suites present in a run declare."""

    @hookimpl
    def shipei_write_reports(self, paths: RunPaths, run_info: dict[str, Any],
                             records: list[CaseRecord]) -> list[Path]:
        present = {r.suite for r in records}
        records_json = [r.to_dict() for r in records]
        written = [write_junit(paths.report_dir / "junit.xml", records_json)]
        for name, spec in sorted(discover_suites().suites.items()):
            if name in present:
                for reference in spec.reports:
                    written += load_object(reference)(paths, run_info, records_json)
        return written
