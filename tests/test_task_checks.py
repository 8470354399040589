"""The one skeleton of every task check (:func:`harness.modelzoo.task_checks.run_task_check`):
each way a check can end, on a real target in this process, and every task check of the
zoo and the scenario suite running through it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.cases.case import Outcome
from harness.isolation.host import Host, InlineHost
from harness.modelzoo import task_checks
from harness.modelzoo.execute import Deadline
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.reference import ReferenceUnavailable
from harness.modelzoo.sources import SourceError
from harness.modelzoo.task_checks import TaskUnavailable, run_task_check
from harness.modelzoo.tasks import detection_check, generation_check, speech_check, text_check
from harness.modelzoo.zoo import Zoo
from targets.testing import FaultyTarget

FEEDS = {"x": np.array([-1.5, 2.0], dtype=np.float32)}


def abs_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])], "abs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def run_abs(model: bytes, host: Host, deadline: Deadline) -> dict[str, Any]:
    key = "tests::task_checks::abs"
    try:
        host.compile(key, model, deadline.left())
        return host.run(key, FEEDS, deadline.left())[0]
    finally:
        host.release(key)


def judge_abs(model: bytes, answer: dict[str, Any], expected: dict[str, Any]) -> Outcome:
    agrees = np.array_equal(answer["y"], expected["y"])
    return Outcome("pass" if agrees else "fail", "" if agrees else "y differs",
                   {"y": answer["y"].tolist()})


def check(host: Host, prepare: Callable[[], Any] = abs_model,
          on_target: Callable[[Any, Host, Deadline], Any] = run_abs,
          on_reference: Callable[[Any], Any] = lambda model: {"y": np.abs(FEEDS["x"])},
          judge: Callable[[Any, Any, Any], Outcome] = judge_abs) -> Outcome:
    return run_task_check(host, 60.0, prepare, on_target, on_reference, judge, "widgets")


def raising(exc: Exception) -> Callable[..., Any]:
    def raise_it(*_: Any) -> Any:
        raise exc
    return raise_it


def test_a_target_that_answers_right_passes_with_its_times() -> None:
    outcome = check(InlineHost(FaultyTarget()))
    assert outcome.status == "pass" and outcome.metrics == {"y": [1.5, 2.0]}
    assert 0 < outcome.timings["target_s"] <= outcome.timings["total_s"]


def test_a_target_that_answers_wrong_fails_by_the_judge() -> None:
    outcome = check(InlineHost(FaultyTarget(fault="wrong", offset=0.25)))
    assert (outcome.status, outcome.message) == ("fail", "y differs")


def test_a_missing_package_is_a_skip() -> None:
    outcome = check(InlineHost(FaultyTarget()),
                    prepare=raising(TaskUnavailable("foo is not installed; pip install foo")))
    assert (outcome.status, outcome.message) == ("skip", "foo is not installed; pip install foo")


@pytest.mark.parametrize("exc", [SourceError("sha256 is not the pinned one"),
                                 ManifestError("no [streaming] table"),
                                 ValueError("not a decoder with a KV cache")])
def test_sources_manifests_and_inputs_that_will_not_do_are_the_harness_s(exc: Exception) -> None:
    outcome = check(InlineHost(FaultyTarget()), prepare=raising(exc))
    assert outcome.status == "infra_error"
    assert outcome.message == f"{type(exc).__name__}: {exc}"


def test_a_target_that_raises_is_an_error_of_the_target() -> None:
    outcome = check(InlineHost(FaultyTarget(fault="raise")))
    assert outcome.status == "error" and "injected failure" in outcome.message


@pytest.mark.parametrize("where", ["answering", "judging"])
@pytest.mark.parametrize("exc", [KeyError("y"), IndexError("tuple index out of range"),
                                 TypeError("not a mapping"), ValueError("bad shape")])
def test_outputs_that_cannot_be_read_are_the_target_s_fail(where: str, exc: Exception) -> None:
    if where == "answering":
        outcome = check(InlineHost(FaultyTarget()), on_target=raising(exc))
    else:
        outcome = check(InlineHost(FaultyTarget()), judge=raising(exc))
    assert outcome.status == "fail"
    assert outcome.message == (f"the target's outputs cannot be read as widgets: "
                               f"{type(exc).__name__}: {exc}")


def test_a_reference_that_cannot_run_is_the_harness_s() -> None:
    outcome = check(InlineHost(FaultyTarget()),
                    on_reference=raising(ReferenceUnavailable("onnxruntime is not installed")))
    assert outcome.status == "infra_error"
    assert outcome.message == "the reference could not run: onnxruntime is not installed"


def test_a_reference_that_crashes_is_the_harness_s_not_the_target_s() -> None:
    reference = InlineHost(FaultyTarget(fault="raise"))
    outcome = check(InlineHost(FaultyTarget()),
                    on_reference=lambda model: run_abs(model, reference, Deadline(60)))
    assert outcome.status == "infra_error"
    assert outcome.message.startswith("the reference could not run: ")


def test_task_entries_checks_every_model_s_bytes() -> None:
    zoo = Zoo()
    entries = task_checks.task_entries(zoo, {"target": "tiny_decoder"})
    assert onnx.load_from_string(entries["target"].model_bytes()).graph.node
    with pytest.raises(ManifestError, match="no model 'no_such_model' in the zoo"):
        task_checks.task_entries(zoo, {"target": "no_such_model"})


def test_need_libraries_names_what_to_install_and_why() -> None:
    task_checks.need_libraries("numpy", "onnx")
    with pytest.raises(TaskUnavailable, match=r"^shipei_no_such_module is not installed; "
                                              r"pip install shipei_no_such_module$"):
        task_checks.need_libraries("numpy", "shipei_no_such_module")
    with pytest.raises(TaskUnavailable, match=r"^shipei_no_such_module is not installed \(the "
                                              r"metric\); pip install shipei_no_such_module$"):
        task_checks.need_libraries("shipei_no_such_module", why="the metric")


def test_a_missing_cjk_font_is_a_skip_with_the_hint(tmp_path, monkeypatch) -> None:
    """No font named by SHIPEI's font variable, none of the known paths, no fc-list on the
    PATH: every check that renders text (OCR, detection) skips with the install hint."""
    from harness.modelzoo.tasks import ocr

    monkeypatch.delenv(ocr.FONT_ENV, raising=False)
    monkeypatch.setattr(ocr, "CJK_FONT_CANDIDATES", [])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TaskUnavailable, match=re.escape(f"no CJK font found; {ocr.FONT_HINT}")):
        task_checks.cjk_font()
    outcome = task_checks.check_ocr(Zoo(), InlineHost(FaultyTarget()), 60.0)
    assert outcome.status == "skip" and ocr.FONT_HINT in outcome.message


# -- every task check runs through the skeleton -----------------------------------------------
CHECKS: dict[str, Callable[[Zoo, Host], Outcome]] = {
    "ocr": lambda zoo, host: task_checks.check_ocr(zoo, host, 60.0),
    "vad": lambda zoo, host: task_checks.check_vad(zoo, host, 60.0),
    "detection": lambda zoo, host: detection_check.check_detection(zoo, host, 60.0),
    "asr": lambda zoo, host: speech_check.check_asr(zoo, host, 60.0, "en"),
    "text": lambda zoo, host: text_check.check_text_embedding(zoo, host, "fp32", 60.0),
    "generation": lambda zoo, host: generation_check.check_generation(zoo, host, "fp32", 60.0),
}


@pytest.mark.parametrize("task", sorted(CHECKS))
def test_every_task_check_blames_a_failing_target_on_the_target(task: str) -> None:
    outcome = CHECKS[task](Zoo(), InlineHost(FaultyTarget(fault="raise")))
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    assert outcome.status == "error", outcome.message
    assert "injected failure" in outcome.message
