"""Scenario profiles (场景适配认证): each scenario of the plan has a packaged profile that
the certification machinery evaluates; a target whose task figures miss a floor or a
ceiling is refused that fit with the figure named, on the certificate's blockers and its
page (场景适配等级); a certificate for a scenario signs and verifies against its records.

The records here follow the scenario suite's metrics contract (docs/scenarios.md); the
real task records come from ``suites/scenarios``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.cert.evaluate import evaluate
from harness.cert.measures import TaskMetric
from harness.cert.page import render_certificate
from harness.cert.profile import ProfileError, available_profiles, load_profile
from harness.cert.scenario_fit import SCENARIOS, scenario_of
from harness.cert.verify import VerifyOptions, verify_certificate
from tests.cert_support import LABEL, Center, write_run

NAMES = [s.profile for s in SCENARIOS.values()]

#: one passing record per task family, with figures inside every scenario's bounds
TASKS: dict[str, dict[str, Any]] = {
    "test_detection_yolo": {"map50": 0.82, "map50_95": 0.61, "map50_vs_reference": 1.0,
                            "latency_p50_ms": 21.0, "latency_p99_ms": 30.5},
    "test_asr_zh": {"cer": 0.08, "cer_vs_reference": 0.0, "latency_p50_ms": 120.0,
                    "latency_p99_ms": 150.0},
    "test_asr_en": {"wer": 0.1, "wer_vs_reference": 0.0, "latency_p50_ms": 110.0,
                    "latency_p99_ms": 140.0},
    "test_text_embedding": {"cosine_min": 0.9995, "retrieval_top1": 1.0,
                            "latency_p50_ms": 4.0, "latency_p99_ms": 6.0},
    "test_generation_greedy": {"token_agreement": 1.0, "perplexity": 12.3,
                               "perplexity_ratio": 1.0, "ttft_ms": 40.0, "tpot_ms": 12.0,
                               "tokens_per_s": 80.0},
    # reduced-precision configurations, each against the fp32 reference
    "test_detection_yolo_int8": {"map50": 0.81, "accuracy_drop": 0.004},
    "test_asr_int8_zh": {"cer": 0.07, "accuracy_drop": -0.01},
    "test_asr_int8_en": {"wer": 0.1, "accuracy_drop": 0.0},
    "test_text_embedding_l3_int8": {"cosine_min": 0.9997, "accuracy_drop": 0.0},
    "test_generation_greedy_fp16": {"token_agreement": 1.0, "accuracy_drop": 0.0},
}


def _record(suite: str, case: str, metrics: dict[str, Any], status: str = "pass",
            tags: dict[str, Any] | None = None, message: str = "") -> dict[str, Any]:
    return {"target": LABEL, "suite": suite, "case": case, "status": status,
            "tags": tags or {}, "metrics": metrics, "message": message}


def records(changes: dict[str, dict[str, Any]] | None = None,
            status: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every suite a scenario profile reads, passing; ``changes`` overrides figures of a
    scenario task, ``status`` a case's status."""
    changes, status = changes or {}, status or {}
    found = [_record("scenarios", case, {**figures, **changes.get(case, {})},
                     status.get(case, "pass"), {"task": case.split("_")[1]},
                     "" if status.get(case, "pass") == "pass" else "the task missed")
             for case, figures in TASKS.items()]
    found += [_record("models", f"test_light_{n}", {"top1_agreement": 1.0}, "pass",
                      {"task": "classification"}) for n in ("alexnet", "resnet50", "vgg19")]
    found += [_record("models", "test_ocr_pipeline", {"char_accuracy": 1.0},
                      status.get("test_ocr_pipeline", "pass"), {"task": "ocr"}),
              _record("models", "test_vad_segments", {"speech_coverage": 0.98}, "pass",
                      {"task": "vad"}),
              _record("performance", "test_offline_light_shufflenet",
                      {"scenario": "offline", "summary": {"samples_per_s": 420.0,
                                                          "p99_ms": 90.0}},
                      "pass", {"scenario": "offline", "model": "light_shufflenet"})]
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_scenario_of_the_plan_has_a_packaged_profile(name: str) -> None:
    profile = load_profile(name)
    assert name in available_profiles()
    assert scenario_of(profile.name) is SCENARIOS[name.removeprefix("scenario-")]
    assert "scenarios" in profile.suites
    assert profile.origin == "packaged"
    assert any(c.measure == "task_metric" for c in profile.criteria)
    # within their bounds, every task's figures fit fully
    evaluation = evaluate(profile, "full", records())
    assert evaluation.level == "full", evaluation.blockers


def test_wrong_boxes_do_not_fit_and_the_figure_says_why() -> None:
    profile = load_profile("scenario-inspection")
    evaluation = evaluate(profile, "full", records(
        {"test_detection_yolo": {"map50": 0.12, "map50_vs_reference": 0.15}}))
    assert evaluation.level == "none"
    reasons = " ".join(evaluation.blockers["limited"])
    assert "detection_accuracy: 0/1" in reasons
    assert "test_detection_yolo: map50 = 0.12 < floor 0.5" in reasons
    assert "map50_vs_reference = 0.15 < floor 0.99" in reasons
    (accuracy,) = [r.to_dict() for r in evaluation.criteria if r.criterion.id ==
                   "detection_accuracy"]
    assert accuracy["shortfalls"] == ["test_detection_yolo: map50 = 0.12 < floor 0.5",
                                      "test_detection_yolo: map50_vs_reference = 0.15 < "
                                      "floor 0.99"]


def test_a_slow_target_fits_with_limitations_naming_its_latency() -> None:
    evaluation = evaluate(load_profile("scenario-vehicles"), "full",
                          records({"test_detection_yolo": {"latency_p99_ms": 55.25}}))
    assert evaluation.level == "limited"
    assert any("latency_p99_ms = 55.25 > ceiling 40" in r for r in evaluation.blockers["full"])


def test_dropped_tokens_and_a_quantized_loss_are_shortfalls() -> None:
    llm = load_profile("scenario-llm")
    dropped = evaluate(llm, "full", records(
        {"test_generation_greedy": {"token_agreement": 0.62, "perplexity_ratio": 1.4}}))
    assert dropped.level == "none"
    reasons = " ".join(dropped.blockers["limited"])
    assert "token_agreement = 0.62 < floor 0.99" in reasons
    assert "perplexity_ratio = 1.4 > ceiling 1.05" in reasons
    # an int8 configuration that loses 3 % accuracy against fp32 misses the 1 % bound;
    # the same figures without the drop recorded (an fp32 run) fit
    lossy = evaluate(load_profile("scenario-speech"), "full",
                     records({"test_asr_zh": {"accuracy_drop": 0.03}}))
    assert lossy.level == "none"
    assert any("accuracy_drop = 0.03 > ceiling 0.01" in r for r in lossy.blockers["limited"])


def test_a_lossy_int8_configuration_bars_a_full_fit_only() -> None:
    """The fp32 cases decide whether a target fits; its int8 and fp16 configurations, held
    to the stated accuracy drop, whether it fits fully."""
    evaluation = evaluate(load_profile("scenario-medical"), "full",
                          records({"test_detection_yolo_int8": {"accuracy_drop": 0.008}}))
    assert evaluation.level == "limited"
    assert any("reduced_precision: 0/1" in r and "test_detection_yolo_int8: accuracy_drop = "
               "0.008 > ceiling 0.005" in r for r in evaluation.blockers["full"])
    # the same drop is within inspection's 1 %
    assert evaluate(load_profile("scenario-inspection"), "full", records(
        {"test_detection_yolo_int8": {"accuracy_drop": 0.008}})).level == "full"


def test_an_unrecorded_figure_or_a_failed_case_is_named() -> None:
    speech = load_profile("scenario-speech")
    no_cer = records()
    for record in no_cer:
        if record["case"] == "test_asr_zh":
            del record["metrics"]["cer"]
    evaluation = evaluate(speech, "full", no_cer)
    assert any("cer not recorded (ceiling 0.2)" in r for r in evaluation.blockers["limited"])
    failed = evaluate(load_profile("scenario-education"), "full",
                      records(status={"test_ocr_pipeline": "fail"}))
    assert failed.level == "none"
    assert any("test_ocr_pipeline: status fail" in r for r in failed.blockers["limited"])


def test_a_scenario_without_its_task_records_is_not_measured() -> None:
    only_models = [r for r in records() if r["suite"] == "models"]
    evaluation = evaluate(load_profile("scenario-llm"), "full", only_models)
    assert not evaluation.issuable
    assert "generation_accuracy: not measured (suite 'scenarios' has no records)" in \
        evaluation.blockers["limited"]


def test_a_misspelt_bound_is_refused() -> None:
    data = copy.deepcopy(load_profile("scenario-vehicles").definition)
    data["name"] = "my-scenario"
    data["criteria"][0]["at_leest"] = {"map50": 0.5}
    with pytest.raises(ProfileError, match="unknown key.*at_leest"):
        load_profile_dict(data)
    data["criteria"][0].pop("at_leest")
    data["criteria"][0]["at_least"] = {"map50": "high"}
    with pytest.raises(ProfileError, match="at_least: must be a table of metric -> number"):
        load_profile_dict(data)


def load_profile_dict(data: dict[str, Any]) -> Any:
    from harness.cert.profile import Profile

    return Profile.from_dict(data)


def test_the_measure_reads_nested_figures_and_patterns() -> None:
    rule = TaskMetric(("test_offline_*",), {"summary.samples_per_s": 100.0})
    chosen = rule.select(records())
    assert [r["case"] for r in chosen] == ["test_offline_light_shufflenet"]
    assert rule.passes(chosen[0])
    slow = dict(chosen[0], metrics={"summary": {"samples_per_s": 50.0}})
    assert rule.shortfalls(slow) == ["test_offline_light_shufflenet: summary.samples_per_s "
                                     "= 50 < floor 100"]


def test_a_scenario_certificate_verifies_and_its_page_says_the_fit(tmp_path: Path) -> None:
    center = Center(tmp_path / "center")
    profile = load_profile("scenario-vehicles")
    slow = records({"test_detection_yolo": {"latency_p99_ms": 55.25}})
    citation = write_run(tmp_path / "results", "run-vehicles", slow)
    statement = center.statement(profile, slow, [citation])
    certificate = center.write(statement)
    lines = verify_certificate(certificate, VerifyOptions(center.public, tmp_path / "results",
                                                          check_revocation=False))
    assert any("level: recomputed from the records: 基本兼容" in line for line in lines), lines
    page = render_certificate(statement, center.keyid)
    assert "场景适配等级" in page and "Scenario fit" in page
    assert "智慧交通与智能网联汽车" in page and "Smart transport and connected vehicles" in page
    assert "基本适配" in page and "Fits with limitations" in page
    assert "latency_p99_ms = 55.25 &gt; ceiling 40" in page
    assert "serial-imu, serial-ultrasonic" in page
    assert "Precision classes: fp32, fp16, int8（本证书 / this certificate: not declared" in page
    # an edited figure no longer recomputes to the signed criteria
    edited = [dict(r, metrics=dict(r["metrics"], latency_p99_ms=20.0))
              if r["case"] == "test_detection_yolo" else r for r in slow]
    results = tmp_path / "edited"
    write_run(results, "run-vehicles", edited)
    with pytest.raises(Exception, match="records"):
        verify_certificate(certificate, VerifyOptions(center.public, results,
                                                      check_revocation=False))


def test_other_certificates_have_no_scenario_box(tmp_path: Path) -> None:
    center = Center(tmp_path / "center")
    page = render_certificate(center.statement(), center.keyid)
    assert "场景适配等级" not in page


def test_every_scenario_tag_of_the_task_tests_is_a_scenario_profile() -> None:
    """A task test's ``scenarios`` metadata names the profiles that measure it, in their
    own ids (one vocabulary: the registry and the profiles read the same names)."""
    from harness.cert.profile import PROFILES_DIR
    from harness.modelzoo.tasks import detection_check, speech_check
    from suites.scenarios import test_generation, test_text

    profiles = {p.stem.removeprefix("scenario-") for p in PROFILES_DIR.glob("scenario-*.toml")}
    for module in (detection_check, speech_check, test_generation, test_text):
        assert set(module.SCENARIOS) <= profiles, (module.__name__, module.SCENARIOS)


@pytest.mark.parametrize("name", NAMES)
def test_a_scenario_profile_certifies_chips_and_frameworks_alike(name: str) -> None:
    """The plan asks which local chips and frameworks can carry a scenario: an NPU board
    (kind chip) is certified for a scenario as a framework is; a sensor is not."""
    profile = load_profile(name)
    assert profile.certifies("chip") and profile.certifies("framework")
    assert not profile.certifies("sensor")
    assert profile.kinds_text == "framework or chip"


def test_also_kinds_must_name_other_known_kinds(tmp_path: Path) -> None:
    from harness.cert.profile import PROFILES_DIR, ProfileError

    text = (PROFILES_DIR / "scenario-llm.toml").read_text()
    for bad in ('["framework"]', '["robot"]', '"chip"'):
        path = tmp_path / "custom.toml"
        path.write_text(text.replace('also_kinds = ["chip"]', f"also_kinds = {bad}"))
        with pytest.raises(ProfileError, match="also_kinds"):
            load_profile(str(path))


def test_a_certificate_model_row_keeps_the_scenario_figures() -> None:
    """A generation record carries more numbers than a certificate row keeps: the row keeps
    the figures the scenario profiles judge, not the first ones alphabetically."""
    from harness.cert.statement import model_rows

    metrics = {"aaa_extra": 1.0, "abc_other": 2.0, "acc_more": 3.0, "add_more": 4.0,
               "token_agreement": 1.0, "perplexity_ratio": 1.0, "ttft_ms": 5.0,
               "tpot_ms": 2.0, "tokens_per_s": 400.0, "latency_p99_ms": 3.0,
               "accuracy_drop": 0.0, "latency_p50_ms": 2.0, "perplexity": 21.9}
    row, = model_rows([{"suite": "scenarios", "case": "test_generation_greedy",
                        "status": "pass", "tags": {}, "metrics": metrics}])
    assert set(row["metrics"]) == {"token_agreement", "perplexity_ratio", "ttft_ms", "tpot_ms",
                                   "tokens_per_s", "accuracy_drop", "latency_p50_ms",
                                   "latency_p99_ms"}


def test_certify_says_the_scenario_fit_in_the_scenarios_words() -> None:
    """`shipei certify` printed only 基本兼容 for a scenario profile; it now also prints the
    fit the certificate page shows (基本适配 / Fits with limitations)."""
    from types import SimpleNamespace

    from harness.cli.cmd_certify import _summary

    def issued(profile: str) -> SimpleNamespace:
        predicate = {"level": {"id": "limited"}, "scope": {"name": "full"},
                     "profile": {"name": profile}, "certificate_id": "c",
                     "expires_at": "2027-12-06T00:00:00Z"}
        return SimpleNamespace(evaluation=SimpleNamespace(criteria=[]), certificate="c.json",
                               page="c.html", statement={"predicate": predicate})

    assert "scenario:    基本适配 / Fits with limitations" in _summary(issued("scenario-llm"))
    assert not any(line.startswith("scenario:") for line in _summary(issued("framework")))
