"""Performance cases: a model, prepared inputs, a reference to check once, and the
scenario rules to time it by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx

from harness.cases.case import DataSet
from harness.perf.settings import ScenarioSettings


@dataclass
class PerfWorkload:
    model: onnx.ModelProto
    #: prepared before timing: one feed per query (single-stream) or per batch (offline)
    feeds: list[dict[str, Any]]
    #: run once, outside the timed region, and judged against its reference outputs
    check: DataSet
    #: the outputs ``check.outputs`` holds, in order (default: every graph output)
    check_names: list[str] | None = None
    #: samples in each offline feed, when the model fixes it (default: the settings')
    batch_size: int | None = None

    def output_names(self) -> list[str]:
        return self.check_names or [o.name for o in self.model.graph.output]


@dataclass
class PerfCase:
    suite: str
    name: str
    model: str
    settings: ScenarioSettings
    load: Callable[[ScenarioSettings], PerfWorkload]
    rtol: float = 1e-4
    atol: float = 1e-5
    tags: dict[str, Any] = field(default_factory=dict)
