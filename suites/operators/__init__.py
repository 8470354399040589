"""Operator conformance suite: the ONNX backend node and model test cases."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="operators", package="suites.operators",
    title_zh="算子一致性", title_en="Operator conformance",
    reports=("harness.reports.matrix:write_run_matrix",),
    certificate_section="conformance", gate_markexpr="representative")
