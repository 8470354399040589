"""A test-only target that degrades answers the way a faulty chip or driver does.

``shipei-degrading`` is onnxruntime on the CPU with one degradation:

* ``mode=drop_cache``: every ``past_key_values.*`` input arrives empty (length 0), and
  the attention mask covers the new tokens only, as with a runtime that loses the KV cache
  between runs: the decoder then sees only the newest token;
* ``mode=truncate``: every ``[batch, seq]`` integer input keeps its first ``keep``
  fraction of tokens (a driver that drops tokens past a length it mishandles);
* ``mode=noise``: seeded Gaussian noise of ``std`` times each float output's own standard
  deviation is added to it (perturbed embeddings or logits);
* ``mode=none``.

The scenario task tests (tests/test_scenario_text.py, tests/test_scenario_generation.py)
show each task failing on it with the figure that shows why. Enabled with
``SHIPEI_PLUGINS=tests.degrading_target:provide_targets``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable, TargetIdentity
from targets.testing import FaultyTarget

PLUGINS = {"SHIPEI_PLUGINS": "tests.degrading_target:provide_targets"}
MODES = ("drop_cache", "truncate", "noise", "none")


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="shipei-degrading", factory="tests.degrading_target:DegradingTarget",
                     summary="test-only: onnxruntime CPU that degrades answers")


class DegradingExecutable(Executable):
    def __init__(self, inner: Executable, target: DegradingTarget) -> None:
        self.inner, self.target = inner, target
        self.rng = np.random.default_rng(target.seed)

    def _feeds(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = dict(inputs)
        if self.target.mode == "drop_cache":
            for name, value in feeds.items():
                if name.startswith("past_key_values."):
                    feeds[name] = np.asarray(value)[:, :, :0]
            if "attention_mask" in feeds and "input_ids" in feeds:  # covers the new tokens only
                new = np.asarray(feeds["input_ids"]).shape[1]
                feeds["attention_mask"] = np.asarray(feeds["attention_mask"])[:, -new:]
        if self.target.mode == "truncate":
            for name, value in feeds.items():
                array = np.asarray(value)
                if array.ndim == 2 and array.dtype.kind == "i" and array.shape[1] > 1:
                    feeds[name] = array[:, :max(1, int(array.shape[1] * self.target.keep))]
        return feeds

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        outputs = self.inner.run(self._feeds(inputs))
        if self.target.mode != "noise":
            return outputs
        noisy = {}
        for name, value in outputs.items():
            array = np.asarray(value)
            if array.dtype.kind == "f" and array.size:
                scale = self.target.std * float(array.astype(np.float64).std())
                array = (array + self.rng.normal(0.0, scale, array.shape)).astype(array.dtype)
            noisy[name] = array
        return noisy

    def placement(self) -> dict[str, Any]:
        return self.inner.placement()

    def close(self) -> None:
        self.inner.close()


class DegradingTarget(FaultyTarget):
    def __init__(self, configuration: str = "default", mode: str = "none", keep: float = 0.5,
                 std: float = 0.3, seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        super().__init__(configuration)
        self.mode, self.keep, self.std, self.seed = mode, float(keep), float(std), int(seed)

    @property
    def identity(self) -> TargetIdentity:
        return dataclasses.replace(super().identity, name="shipei-degrading",
                                   configuration=f"mode={self.mode}")

    def compile(self, model: bytes) -> Executable:
        return DegradingExecutable(self.inner.compile(model), self)
