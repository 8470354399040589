"""The reference model suite: every zoo model, judged against its golden, plus task checks."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="models", package="suites.models",
    title_zh="参考模型", title_en="Reference models",
    reports=("harness.modelzoo.report:write_models_report",),
    certificate_section="models")
