"""Regenerating golden outputs with the reference, and saying what changed.

For a model whose package ships expected outputs (the onnx "light" models), the
reference's outputs must agree with the shipped ones before they are stored:
the golden then rests on two independent computations (onnx's
``ReferenceEvaluator`` made the shipped files; ONNX Runtime makes ours).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from harness.modelzoo import golden as golden_store
from harness.modelzoo import task_checks
from harness.modelzoo.execute import HOST_FAILURES, Deadline, run_outputs
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.reference import Reference
from harness.modelzoo.sources import SourceError, package_file
from harness.modelzoo.tasks import detection_check, speech_check
from harness.modelzoo.zoo import Zoo, ZooEntry
from harness.verdicts.judge import compare_outputs

REFRESH_TIMEOUT = 900.0
#: how onnx's own backend runner judges its model tests (TestCase defaults)
SHIPPED_RTOL, SHIPPED_ATOL = 1e-3, 1e-7


@dataclass
class RefreshResult:
    name: str
    state: str  # new, changed, unchanged, skipped, error
    lines: list[str] = field(default_factory=list)


def shipped_outputs(entry: ZooEntry) -> list[np.ndarray]:
    source = entry.manifest.source
    arrays = []
    for relative in source.expected_outputs:
        tensor = onnx.load_tensor(str(package_file(source, relative)))
        arrays.append(numpy_helper.to_array(tensor))
    return arrays


def check_against_shipped(entry: ZooEntry, outputs: list[dict[str, np.ndarray]]) -> dict:
    """Compare the reference's first data set with the package's expected outputs."""
    names = [spec.name for spec in entry.manifest.outputs]
    expected = shipped_outputs(entry)
    verdict = compare_outputs(expected, outputs[0], names[:len(expected)], SHIPPED_RTOL,
                              SHIPPED_ATOL)
    return {"files": list(entry.manifest.source.expected_outputs), "agrees": verdict.passed,
            "max_abs_error": verdict.max_abs_error, "message": verdict.message}


def refresh_model(entry: ZooEntry, reference: Reference, golden_dir, write: bool
                  ) -> RefreshResult:
    state = entry.status()
    if not state.available:
        return RefreshResult(entry.name, "skipped", [state.reason])
    try:
        model = entry.model_bytes()
        data_sets = entry.data_sets()
    except (SourceError, ManifestError) as exc:
        return RefreshResult(entry.name, "error", [str(exc)])
    key = f"golden::{entry.name}"
    try:
        outputs = run_outputs(reference.host, key, entry.manifest, model, data_sets,
                              Deadline(REFRESH_TIMEOUT), {})
    except HOST_FAILURES as exc:
        return RefreshResult(entry.name, "error", [f"the reference failed: {exc}"])
    finally:
        reference.host.release(key)
    missing = [s.name for s in entry.manifest.outputs if s.name not in outputs[0]]
    if missing:
        return RefreshResult(entry.name, "error", [f"the model has no output(s) {missing}"])
    new = golden_store.Golden(entry.name, entry.manifest.sha256, entry.inputs_digest(),
                              [{k: np.asarray(v) for k, v in o.items()} for o in outputs],
                              reference.summary())
    if entry.manifest.source.expected_outputs:
        shipped = check_against_shipped(entry, outputs)
        if not shipped["agrees"]:
            return RefreshResult(entry.name, "error", [
                f"the reference disagrees with the outputs shipped in "
                f"{entry.manifest.source.package}: {shipped['message']}"])
        new.extra["shipped_outputs_check"] = shipped
    old = golden_store.load_previous(golden_dir, entry.name)
    lines = golden_store.describe_changes(old, new)
    if lines == ["unchanged"]:
        return RefreshResult(entry.name, "unchanged", lines)
    if write:
        golden_store.save(golden_dir, new)
    return RefreshResult(entry.name, "new" if old is None else "changed", lines)


def _task(name: str, run: Callable[[Zoo, Reference, bool], list[str]], zoo: Zoo,
          reference: Reference, write: bool) -> RefreshResult:
    try:
        lines = run(zoo, reference, write)
    except task_checks.TaskUnavailable as exc:
        return RefreshResult(name, "skipped", [str(exc)])
    except (SourceError, ManifestError, ValueError, *HOST_FAILURES) as exc:
        return RefreshResult(name, "error", [f"{type(exc).__name__}: {exc}"])
    state = lines[0].split(":")[0]
    return RefreshResult(name, {"new golden": "new"}.get(state, state), lines)


def task_refreshers() -> dict[str, Callable[[Zoo, Reference, bool], list[str]]]:
    """Every task golden ``shipei models golden --refresh`` knows, by task name."""
    tasks: dict[str, Callable[[Zoo, Reference, bool], list[str]]] = {
        task_checks.OCR_TASK: task_checks.refresh_ocr}
    for task in task_checks.VAD_TASKS:
        tasks[task] = functools.partial(task_checks.refresh_vad, task=task)
    tasks[detection_check.TASK] = detection_check.refresh
    for language, task in speech_check.TASKS.items():
        tasks[task] = functools.partial(speech_check.refresh, language=language)
    return tasks


def refresh(zoo: Zoo, names: Iterable[str] = (), write: bool = True,
            progress: Callable[[RefreshResult], None] | None = None) -> list[RefreshResult]:
    """Refresh the named models' goldens (all when none), then the task goldens."""
    wanted = list(names)
    tasks = task_refreshers()
    entries = [zoo.entry(n) for n in wanted if n not in tasks] if wanted else zoo.entries
    chosen_tasks = [t for t in tasks if not wanted or t in wanted]
    results = []
    with Reference() as reference:
        for entry in entries:
            results.append(refresh_model(entry, reference, zoo.golden_dir, write))
            if progress:
                progress(results[-1])
        for task in chosen_tasks:
            results.append(_task(task, tasks[task], zoo, reference, write))
            if progress:
                progress(results[-1])
    return results
