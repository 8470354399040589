"""The built-in reports: JUnit XML for every run, plus the reports the suites present in a
run declare (:attr:`harness.cases.suite_registry.SuiteSpec.reports`), so a suite's report is
written when the run holds records of that suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.hookspec import hookimpl
from harness.reports.junit import write_junit
from harness.results.record_files import RunPaths
from harness.driver.registry import load_object
from harness.cases.suite_registry import discover_suites


class BuiltinReports:
    """JUnit plus the reports the suites present in a run declare."""

    @hookimpl
    def shipei_write_reports(self, paths: RunPaths, run_info: dict[str, Any],
                             records: list[dict[str, Any]]) -> list[Path]:
        written = [write_junit(paths.report_dir / "junit.xml", records)]
        present = {r.get("suite") for r in records}
        for name, spec in sorted(discover_suites().suites.items()):
            if name in present:
                for reference in spec.reports:
                    written += load_object(reference)(paths, run_info, records)
        return written
