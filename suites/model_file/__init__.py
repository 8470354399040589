"""Ad-hoc check of model files given with ``shipei run --model PATH``."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="model_file", package="suites.model_file",
    title_zh="用户模型文件", title_en="User model files",
    certificate_section="models", cases_from_user=True)
