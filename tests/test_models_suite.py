"""The model suite through ``shipei run``: a representative subset on onnxruntime-cpu,
misbehaving targets, and a zoo with a tampered, a missing and a broken model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from harness.modelzoo.zoo import default_models_dir
from harness.results.record_files import load_schema
from tests.conftest import CliResult, run_shipei

MODELS = default_models_dir()
FAULTY = {"SHIPEI_PLUGINS": "targets.testing:provide_targets"}


def _by_case(records: list[dict]) -> dict[str, dict]:
    return {r["case"]: r for r in records}


def test_representative_subset_on_onnxruntime(shipei_cli):
    result = shipei_cli("run", "--suite", "models", "--target", "onnxruntime-cpu",
                        "-m", "representative")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    records = result.records()
    schema = load_schema("record")
    for record in records:
        jsonschema.validate(record, schema)
    cases = _by_case(records)
    assert {"test_small_cnn", "test_transformer_encoder", "test_transformer_encoder_int8",
            "test_silero_vad", "test_ocr_pipeline", "test_vad_segments"} <= set(cases)
    cnn = cases["test_small_cnn"]["metrics"]
    assert cnn["top1_agreement"] == 1.0 and cnn["top5_overlap"] == 1.0
    assert cnn["outputs"]["prob"]["top1_rows"] == 9
    assert cases["test_transformer_encoder_int8"]["metrics"]["precision_class"] == "int8"
    assert cases["test_silero_vad"]["tags"]["source"] == "silero_vad:data/silero_vad.onnx"
    vad = cases["test_vad_segments"]
    assert vad["status"] == "pass" and len(vad["metrics"]["speech_segments"]) == 2

    report = (result.reports / result.run_dirs()[0].name / "models.html").read_text()
    assert "onnxruntime-cpu" in report and "Model suite report" in report
    ocr = cases["test_ocr_pipeline"]
    if ocr["status"] == "skip":
        pytest.skip(f"OCR check skipped: {ocr['message']}")
    assert ocr["status"] == "pass", ocr["message"]
    assert ocr["metrics"]["texts"] == ocr["metrics"]["ground_truth"]
    for text in ocr["metrics"]["texts"]:
        assert text in report


CRASHING = "shipei-faulty,fault=segfault,trigger_op=Identity"
WRONG = "shipei-faulty,fault=wrong,offset=0.6"
HANGING = "shipei-faulty,fault=hang,trigger_op=LayerNormalization"
#: each target's cases (-k matches the target's label in a case's name)
SELECTED = ("segfault and (test_small_cnn or test_silero_vad or test_vad_segments)",
            "offset and (test_small_cnn or test_ocr_pipeline)",
            "LayerNormalization and (test_transformer_encoder_fp16 or test_silero_vad_ifless)")


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> CliResult:
    """One run of the three misbehaving targets (their start paid once), on the union of
    the cases each test below needs."""
    return run_shipei(tmp_path_factory.mktemp("faulty-models"), "run", "--suite", "models",
                      "--target", CRASHING, "--target", WRONG, "--target", HANGING,
                      "--case-timeout", "8", "-k", " or ".join(f"({k})" for k in SELECTED),
                      env=FAULTY)


def _cases_of(result: CliResult, target: str) -> dict[str, dict]:
    return _by_case([r for r in result.records() if r["target"] == target])


@pytest.mark.extended
def test_a_crashing_target_costs_only_its_cases(faulty_run: CliResult):
    # only the main Silero VAD export has a top-level Identity node
    assert faulty_run.returncode == 1
    cases = _cases_of(faulty_run, CRASHING)
    for name in ("test_silero_vad", "test_vad_segments"):
        assert cases[name]["status"] == "crash", cases[name]
        assert cases[name]["metrics"]["signal"] == "SIGSEGV"
    for name in ("test_small_cnn", "test_silero_vad_ifless", "test_silero_vad_half"):
        assert cases[name]["status"] == "pass", cases[name]["message"]
    assert "Traceback" not in faulty_run.stderr


def test_wrong_outputs_fail_with_their_figures(faulty_run: CliResult):
    cases = _cases_of(faulty_run, WRONG)
    record = cases["test_small_cnn"]
    assert record["status"] == "fail" and "outside rtol" in record["message"]
    assert record["metrics"]["max_abs_error"] == pytest.approx(0.6, rel=1e-2)
    ocr = cases["test_ocr_pipeline"]
    if ocr["status"] != "skip":  # skipped only where no CJK font is installed
        assert ocr["status"] == "fail", ocr["message"]
        assert "text boxes detected" in ocr["message"] or "reads" in ocr["message"]


def test_a_hanging_target_times_out_and_the_run_goes_on(faulty_run: CliResult):
    cases = _cases_of(faulty_run, HANGING)
    assert cases["test_transformer_encoder_fp16"]["status"] == "timeout"
    assert cases["test_silero_vad_ifless"]["status"] == "pass"


def test_tampered_missing_and_broken_models_are_recorded(tmp_path, shipei_cli):
    zoo = tmp_path / "zoo"
    (zoo / "manifests").mkdir(parents=True)
    shutil.copytree(MODELS / "golden", zoo / "golden")
    text = (MODELS / "manifests" / "small_cnn.toml").read_text()
    sha = text.split('sha256 = "')[1][:64]
    (zoo / "manifests" / "small_cnn.toml").write_text(text.replace(sha, "0" * 64))
    missing = (MODELS / "manifests" / "ppocr_mobile_cls.toml").read_text().replace(
        'package = "rapidocr_onnxruntime"', 'package = "shipei_absent_package"').replace(
        'name = "ppocr_mobile_cls"', 'name = "absent"')
    (zoo / "manifests" / "absent.toml").write_text(missing)
    (zoo / "manifests" / "garbled.toml").write_text("schema_version = 1\nname = \n")
    shutil.copy(MODELS / "manifests" / "transformer_encoder.toml", zoo / "manifests")
    shutil.copy(MODELS / "manifests" / "silero_vad.toml", zoo / "manifests")
    task_golden = zoo / "golden" / "tasks" / "vad_segments.json"
    stale = json.loads(task_golden.read_text())
    task_golden.write_text(json.dumps({**stale, "input_sha256": "0" * 64}))

    result = shipei_cli("run", "--suite", "models", "-k",
                        "small_cnn or absent or garbled or transformer_encoder or "
                        "test_vad_segments",
                        env={"SHIPEI_MODELS_DIR": str(zoo)})
    assert result.returncode == 1
    cases = _by_case(result.records())
    assert cases["test_small_cnn"]["status"] == "infra_error"
    assert "refusing to run it" in cases["test_small_cnn"]["message"]
    assert cases["test_absent"]["status"] == "skip"
    assert "pip install --no-deps rapidocr-onnxruntime" in cases["test_absent"]["message"]
    assert cases["test_garbled"]["status"] == "infra_error"
    assert "garbled.toml: not valid TOML" in cases["test_garbled"]["message"]
    assert cases["test_transformer_encoder"]["status"] == "pass"
    vad = cases["test_vad_segments"]  # its task golden is of another signal
    assert vad["status"] == "pass" and vad["metrics"]["reference_origin"].startswith("live")
    listing = json.loads(_list_json(shipei_cli, zoo))
    assert listing["broken_manifests"][0]["manifest"].endswith("garbled.toml")
    absent = next(m for m in listing["models"] if m["name"] == "absent")
    assert not absent["available"] and "pip install --no-deps" in absent["reason"]


def _list_json(shipei_cli, zoo: Path) -> str:
    result = shipei_cli("models", "--json", "--models-dir", str(zoo))
    assert result.returncode == 1  # a broken manifest makes the listing fail
    return result.stdout
