"""Reference-zoo models (``models/``, :mod:`harness.modelzoo`) as performance cases.

Inputs are the zoo's own deterministic data; the one checked run is judged
against the zoo's golden outputs with the model's fp32 policy. A model whose
first input has a ``batch`` dimension runs one sample per query (single-stream)
and ``batch_size`` samples per inference (offline); a model with a fixed batch
runs as it is in both, and its offline record says batch 1.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from harness.cases.case import DataSet
from harness.modelzoo import golden as golden_store
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.metrics import policy_for
from harness.modelzoo.zoo import Zoo, ZooEntry
from harness.perf.cases import PerfCase, PerfWorkload
from harness.perf.settings import DEFAULTS, OFFLINE, ScenarioSettings

SUITE = "performance"
#: zoo models the suite times by default: real weights, a few ms per inference
DEFAULT_ZOO_MODELS = ("ppocr_mobile_cls", "ppocrv4_rec", "light_shufflenet")


@functools.cache
def zoo() -> Zoo | None:
    try:
        return Zoo()
    except ManifestError:
        return None


def timeable(entry: ZooEntry) -> bool:
    """fp32, not streamed (a stateful stream is not a stream of independent queries)."""
    return entry.manifest.precision == "fp32" and entry.manifest.streaming is None


def zoo_model_names() -> list[str]:
    found = zoo()
    return [e.name for e in found.entries if timeable(e)] if found else []


def _batch_axis(entry: ZooEntry) -> int | None:
    shape = entry.manifest.inputs[0].shape
    return shape.index("batch") if "batch" in shape and len(entry.manifest.inputs) == 1 else None


def _resize(data: dict[str, np.ndarray], axis: int, start: int, count: int
            ) -> dict[str, np.ndarray]:
    ((name, value),) = data.items()
    index = [(start + i) % value.shape[axis] for i in range(count)]
    return {name: np.ascontiguousarray(np.take(value, index, axis=axis))}


def workload(name: str, settings: ScenarioSettings) -> PerfWorkload:
    found = zoo()
    if found is None:
        raise ManifestError("the model zoo (models/) is not available")
    entry = found.entry(name)
    model = entry.model_bytes()
    data = entry.data_sets()
    golden = golden_store.load(found.golden_dir, name, entry.manifest.sha256,
                               entry.inputs_digest())
    names = [spec.name for spec in entry.manifest.outputs]
    check = DataSet(data[0], [golden.outputs[0][n] for n in names])
    axis = _batch_axis(entry)
    if axis is None:
        feeds, batch = [data[i % len(data)] for i in range(settings.distinct_inputs)], 1
    else:
        batch = settings.batch_size if settings.scenario == OFFLINE else 1
        feeds = [_resize(data[0], axis, i * batch, batch)
                 for i in range(settings.distinct_inputs)]
    import onnx

    return PerfWorkload(onnx.load_from_string(model), feeds, check, names, batch)


def zoo_case(name: str, scenario: str) -> PerfCase:
    entry = zoo().entry(name)  # type: ignore[union-attr]
    policy = policy_for(entry.manifest.precision, entry.manifest.tolerance, "fp32")
    tags: dict[str, Any] = {"summary": entry.manifest.title, "source": "modelzoo",
                            "task": entry.manifest.task}
    return PerfCase(SUITE, f"test_{scenario}_{name}", name, DEFAULTS[scenario],
                    functools.partial(workload, name), rtol=policy.rtol or 0.0,
                    atol=policy.atol or 0.0, tags=tags)
