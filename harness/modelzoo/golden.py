"""Golden outputs: what the declared reference computed, stored per model with hashes.

``models/golden/<name>.npz`` holds the reference's outputs (``d<data set>/<output>``);
``<name>.json`` beside it holds the sha256 of the model bytes and of the inputs
they were computed from, the sha256 of the outputs' content and who computed
them. Loading checks all three: a golden of another model version, of inputs
that drifted, or an edited file is refused with the command that fixes it.
Task-level goldens (OCR answers, VAD segments) are JSON in ``golden/tasks/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.modelzoo.inputs import array_digest
from harness.results.record_files import write_json

GOLDEN_SCHEMA_VERSION = 1
REFRESH_HINT = "shipei models golden --refresh"


class GoldenError(Exception):
    """A golden that is missing, stale or corrupt; never judged against."""


@dataclass
class Golden:
    name: str
    model_sha256: str
    inputs_sha256: str
    outputs: list[dict[str, np.ndarray]]  # per data set, by output name
    reference: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs_sha256(self) -> str:
        return outputs_digest(self.outputs)

    def meta(self) -> dict[str, Any]:
        names = list(self.outputs[0]) if self.outputs else []
        return {
            "schema_version": GOLDEN_SCHEMA_VERSION,
            "name": self.name,
            "model_sha256": self.model_sha256,
            "inputs_sha256": self.inputs_sha256,
            "outputs_sha256": self.outputs_sha256,
            "data_sets": len(self.outputs),
            "outputs": {n: {"dtype": str(self.outputs[0][n].dtype),
                            "shapes": [list(d[n].shape) for d in self.outputs]}
                        for n in names},
            "reference": self.reference,
            **self.extra,
        }


def outputs_digest(outputs: Sequence[Mapping[str, np.ndarray]]) -> str:
    return array_digest([(f"d{i}/{name}", np.asarray(value))
                         for i, data in enumerate(outputs) for name, value in data.items()])


def paths(golden_dir: Path, name: str) -> tuple[Path, Path]:
    return golden_dir / f"{name}.npz", golden_dir / f"{name}.json"


def read(golden_dir: Path, name: str) -> Golden:
    """The stored golden, checked against its own recorded hash only."""
    npz_path, meta_path = paths(golden_dir, name)
    if not npz_path.exists() or not meta_path.exists():
        raise GoldenError(f"no golden outputs for {name}; run '{REFRESH_HINT} {name}'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise GoldenError(f"golden of {name} is unreadable ({type(exc).__name__}: {exc}); "
                          f"run '{REFRESH_HINT} {name}'") from None
    outputs: list[dict[str, np.ndarray]] = [{} for _ in range(int(meta.get("data_sets", 0)))]
    for key, value in arrays.items():
        index, _, output = key.partition("/")
        try:
            outputs[int(index[1:])][output] = value
        except (ValueError, IndexError):
            raise GoldenError(f"golden of {name} has a stray entry {key!r}") from None
    golden = Golden(name, meta.get("model_sha256", ""), meta.get("inputs_sha256", ""),
                    outputs, meta.get("reference", {}))
    if golden.outputs_sha256 != meta.get("outputs_sha256"):
        raise GoldenError(f"golden of {name} does not match its recorded sha256 (edited or "
                          f"corrupt); run '{REFRESH_HINT} {name}'")
    return golden


def load(golden_dir: Path, name: str, model_sha256: str, inputs_sha256: str) -> Golden:
    """The stored golden, refused unless it belongs to these model bytes and inputs."""
    golden = read(golden_dir, name)
    if golden.model_sha256 != model_sha256:
        raise GoldenError(f"golden of {name} was computed for model {golden.model_sha256[:12]}, "
                          f"the manifest pins {model_sha256[:12]}; run '{REFRESH_HINT} {name}'")
    if golden.inputs_sha256 != inputs_sha256:
        raise GoldenError(f"the inputs of {name} differ from those its golden was computed from "
                          f"(a changed generator or numpy); run '{REFRESH_HINT} {name}'")
    return golden


def save(golden_dir: Path, golden: Golden) -> None:
    npz_path, meta_path = paths(golden_dir, golden.name)
    golden_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"d{i}/{name}": np.asarray(value)
              for i, data in enumerate(golden.outputs) for name, value in data.items()}
    tmp = npz_path.with_name(f".{npz_path.name}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, npz_path)
    write_json(meta_path, golden.meta())


def describe_changes(old: Golden | None, new: Golden) -> list[str]:
    """One line per output saying whether and how much the refreshed golden moved."""
    if old is None:
        return ["new golden"]
    if old.outputs_sha256 == new.outputs_sha256:
        return ["unchanged"]
    lines = []
    if old.model_sha256 != new.model_sha256:
        lines.append(f"model changed {old.model_sha256[:12]} -> {new.model_sha256[:12]}")
    if old.inputs_sha256 != new.inputs_sha256:
        lines.append("inputs changed")
    if len(old.outputs) != len(new.outputs):
        lines.append(f"data sets {len(old.outputs)} -> {len(new.outputs)}")
    for index, (before, after) in enumerate(zip(old.outputs, new.outputs, strict=False)):
        for name, value in after.items():
            previous = before.get(name)
            where = f"data set {index} {name}"
            if previous is None:
                lines.append(f"{where}: new output")
            elif previous.shape != value.shape or previous.dtype != value.dtype:
                lines.append(f"{where}: {previous.dtype}{list(previous.shape)} -> "
                             f"{value.dtype}{list(value.shape)}")
            elif not np.array_equal(previous, value, equal_nan=True):
                diff = np.abs(previous.astype(np.float64) - value.astype(np.float64))
                lines.append(f"{where}: max abs change {float(np.nanmax(diff)):.3g}")
    return lines or ["reference metadata changed"]


def load_previous(golden_dir: Path, name: str) -> Golden | None:
    """The stored golden whatever it belongs to (for describing a refresh), or None."""
    try:
        return read(golden_dir, name)
    except GoldenError:
        return None


# -- task goldens -------------------------------------------------------------------
def task_path(golden_dir: Path, task: str) -> Path:
    return golden_dir / "tasks" / f"{task}.json"


def load_task(golden_dir: Path, task: str) -> dict[str, Any]:
    path = task_path(golden_dir, task)
    if not path.exists():
        raise GoldenError(f"no task golden {task}; run '{REFRESH_HINT}'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GoldenError(f"task golden {task} is unreadable: {exc}; run '{REFRESH_HINT}'"
                          ) from None
    if data.get("schema_version") != GOLDEN_SCHEMA_VERSION:
        raise GoldenError(f"task golden {task} has schema {data.get('schema_version')!r}; "
                          f"run '{REFRESH_HINT}'")
    return data


def save_task(golden_dir: Path, task: str, data: dict[str, Any]) -> None:
    write_json(task_path(golden_dir, task), {"schema_version": GOLDEN_SCHEMA_VERSION,
                                             "task": task, **data})
