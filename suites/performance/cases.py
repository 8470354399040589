"""The performance suite's cases: every model in both scenarios."""

from __future__ import annotations

import functools

from harness.cases import DataSet
from harness.perf.cases import PerfCase, PerfWorkload
from harness.perf.settings import DEFAULTS, OFFLINE, SCENARIOS, ScenarioSettings
from suites.performance.models import MODELS, reference_outputs

SUITE = "performance"
#: models the suite times (``tiny`` is for the harness's own tests)
SUITE_MODELS = ("mlp", "convnet", "encoder")


def workload(model_name: str, settings: ScenarioSettings) -> PerfWorkload:
    """Inputs for the scenario, prepared up front; the first is checked once."""
    model = MODELS[model_name]
    batch = settings.batch_size if settings.scenario == OFFLINE else 1
    feeds = model.inputs(settings.distinct_inputs, batch=batch)
    check = DataSet(feeds[0], reference_outputs(model_name, feeds[0]))
    return PerfWorkload(model.model(), feeds, check)


def perf_case(model_name: str, scenario: str, settings: ScenarioSettings | None = None
              ) -> PerfCase:
    model = MODELS[model_name]
    return PerfCase(
        suite=SUITE, name=f"test_{scenario}_{model_name}", model=model_name,
        settings=settings or DEFAULTS[scenario],
        load=functools.partial(workload, model_name),
        rtol=model.rtol, atol=model.atol,
        tags={"summary": model.summary, "source": "generated"},
    )


def suite_cases() -> list[PerfCase]:
    """Every model in both scenarios; the conftest keeps ``SUITE_MODELS`` unless
    ``--perf-model`` names others."""
    return [perf_case(name, scenario) for name in MODELS for scenario in SCENARIOS]
