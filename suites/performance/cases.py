"""The performance suite's cases: every model in both scenarios."""

from __future__ import annotations

import functools

from harness.cases.case import DataSet
from harness.perf.cases import PerfCase, PerfWorkload
from harness.perf.settings import DEFAULTS, OFFLINE, SCENARIOS, ScenarioSettings
from suites.performance.models import MODELS, reference_outputs
from suites.performance.zoo_cases import DEFAULT_ZOO_MODELS, zoo_case, zoo_model_names

SUITE = "performance"
#: generated models the suite times (``tiny`` is for the harness's own tests)
GENERATED_MODELS = ("mlp", "convnet", "encoder")


def suite_models() -> tuple[str, ...]:
    """What the suite times unless ``--perf-model`` says otherwise."""
    zoo = set(zoo_model_names())
    return GENERATED_MODELS + tuple(m for m in DEFAULT_ZOO_MODELS if m in zoo)


def known_models() -> list[str]:
    return [*MODELS, *zoo_model_names()]


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


def case_for(name: str, scenario: str) -> PerfCase:
    """The case of a generated or zoo model by name."""
    return perf_case(name, scenario) if name in MODELS else zoo_case(name, scenario)


def suite_cases() -> list[PerfCase]:
    """Every known model in both scenarios; the conftest keeps :func:`suite_models`
    unless ``--perf-model`` names others."""
    cases = [perf_case(name, scenario) for name in MODELS for scenario in SCENARIOS]
    cases += [zoo_case(name, scenario) for name in zoo_model_names() for scenario in SCENARIOS]
    return cases
