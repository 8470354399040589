"""Running a stateful model over a whole signal, chunk by chunk, carrying its state.

This is how a streaming model (Silero VAD) is used in practice: each step feeds
``context`` samples of the previous step followed by the next ``chunk`` samples
(the last chunk zero-padded), the carried inputs take the previous step's
outputs, and the ``collect`` outputs are stacked over the steps. The carried
outputs' final values are returned too.

:func:`run_in_worker` is what ``Host.call`` runs inside a target's worker, so a
whole signal is one request (one timeout) instead of a round trip per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from harness.driver.target import Executable
from harness.modelzoo.manifest import Streaming

WORKER_FUNCTION = "harness.modelzoo.streaming:run_in_worker"


def stream(run: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           feeds: Mapping[str, np.ndarray], spec: Streaming) -> dict[str, np.ndarray]:
    signal = np.asarray(feeds[spec.chunk_input]).reshape(-1)
    steps = -(-signal.size // spec.chunk)
    padded = np.zeros(steps * spec.chunk + spec.context, dtype=signal.dtype)
    padded[spec.context:spec.context + signal.size] = signal
    state = {name: value for name, value in feeds.items() if name != spec.chunk_input}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in spec.collect}
    outputs: Mapping[str, Any] = {}
    for step in range(steps):
        window = padded[step * spec.chunk: (step + 1) * spec.chunk + spec.context]
        outputs = run({**state, spec.chunk_input: window[None, :]})
        for name in spec.collect:
            collected[name].append(np.asarray(outputs[name]))
        for input_name, output_name in spec.carry.items():
            state[input_name] = np.asarray(outputs[output_name])
    result = {name: np.stack(values) for name, values in collected.items()}
    for output_name in spec.carry.values():
        result[output_name] = np.asarray(outputs[output_name])
    return result


def run_in_worker(executable: Executable, payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return stream(executable.run, payload["feeds"], Streaming(**payload["streaming"]))


def worker_payload(feeds: Mapping[str, np.ndarray], spec: Streaming) -> dict[str, Any]:
    data = asdict(spec)
    data["carry"] = dict(spec.carry)
    data["collect"] = tuple(spec.collect)
    return {"feeds": dict(feeds), "streaming": data}
