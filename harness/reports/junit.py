"""JUnit XML from run records, written with the ``junit-xml`` package.

One test suite per target x suite. Unexpected results are failures (``fail``)
or errors (``error``, ``crash``, ``timeout``, ``infra_error``); results that
match the target's expectations are reported as skipped with the expectation's
reason, the way pytest reports an xfail.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from junit_xml import TestCase, TestSuite, to_xml_report_string

from harness.results.case_record import RECORDED_STATUSES, Status

#: JUnit errors: the target's failures other than a wrong result, and the harness's own
ERROR_STATUSES = tuple(s.value for s in RECORDED_STATUSES
                       if (s.is_target_failure and s is not Status.FAIL) or s.is_infra)


def _figures(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    keys = ("max_abs_error", "max_rel_error", "mismatched_elements", "rtol", "atol",
            "exit_code", "signal", "timeout_s")
    return ", ".join(f"{k}={metrics[k]}" for k in keys if metrics.get(k) is not None)


def _test_case(record: dict[str, Any]) -> TestCase:
    case = TestCase(
        name=record["case"],
        classname=f"{record['suite']}.{record['target']}",
        elapsed_sec=float(record.get("duration_s") or 0.0),
        status=record["status"],
    )
    status, message = record["status"], record.get("message", "")
    figures = _figures(record)
    output = f"{message}\n{figures}".strip()
    if status == "pass" and record.get("as_expected", True):
        return case
    if record.get("as_expected"):
        case.add_skipped_info(
            message=f"{status} as expected: {record.get('expectation_reason') or message}",
            output=output)
    elif status == "fail":
        case.add_failure_info(message=f"{message} [{figures}]" if figures else message,
                              output=output, failure_type="fail")
    elif status == "pass":
        case.add_failure_info(message=f"unexpected pass (expected "
                                      f"{record.get('expected_status')})",
                              failure_type="unexpected-pass")
    elif status in ERROR_STATUSES:
        case.add_error_info(message=message, output=output, error_type=status)
    elif status == "flaky":  # failed, then passed on a retry: not a pass
        case.add_failure_info(message=message, output=output, failure_type="flaky")
    else:
        case.add_skipped_info(message=message)
    return case


def junit_suites(records: Iterable[dict[str, Any]]) -> list[TestSuite]:
    grouped: dict[tuple[str, str], list[TestCase]] = {}
    for record in records:
        grouped.setdefault((record["target"], record["suite"]), []).append(_test_case(record))
    return [TestSuite(f"{suite}[{target}]", cases, package=suite)
            for (target, suite), cases in sorted(grouped.items())]


def write_junit(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = to_xml_report_string(junit_suites(records), prettyprint=False, encoding="utf-8")
    tree = ElementTree.fromstring(flat)
    ElementTree.indent(tree)  # junit-xml's own pretty printing (minidom) took twice as long
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n'
                    + ElementTree.tostring(tree, encoding="unicode") + "\n", encoding="utf-8")
    return path
