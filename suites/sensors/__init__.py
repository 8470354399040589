

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="sensors", package="suites.sensors",
    title_zh="传感器", title_en="Sensors",
    certificate_section="conformance", gate_markexpr="")
