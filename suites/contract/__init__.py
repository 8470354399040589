"""Driver contract suite: what every target driver must honour (run by ``shipei gate``)."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="contract", package="suites.contract",
    title_zh="驱动契约", title_en="Driver contract",
    certificate_section="conformance", gate_markexpr="")
