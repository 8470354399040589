"""Performance suite: MLPerf-style single-stream and offline scenarios per model and target."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="performance", package="suites.performance",
    title_zh="性能", title_en="Performance",
    reports=("harness.perf.report:write_performance_report",),
    certificate_section="performance")
