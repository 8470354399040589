"""The scenario task suite (场景任务): real-weight models of the plan's scenarios run as whole
tasks on the target (object detection, speech recognition, text embedding, autoregressive
generation with a KV cache), each judged by its task metric against ground truth made here
and against the reference target. One test module per task family; every case concludes
with ``metrics`` named as the scenario profiles read them (``harness/cert/profiles/
scenario-*.toml``, docs/scenarios.md)."""

from harness.cases.suite_registry import SuiteSpec

SUITE = SuiteSpec(
    name="scenarios", package="suites.scenarios",
    title_zh="场景任务", title_en="Scenario tasks",
    certificate_section="models")
