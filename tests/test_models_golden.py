"""Golden outputs: integrity checks, and ``shipei models golden [--refresh]`` on a copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.modelzoo import golden
from harness.modelzoo.refresh import check_against_shipped
from harness.modelzoo.tasks import ocr
from harness.modelzoo.zoo import Zoo, default_models_dir

MODELS = default_models_dir()
COPIED = ("small_cnn", "transformer_encoder", "silero_vad", "ppocrv4_det", "ppocrv4_rec",
          "ppocr_mobile_cls")


@pytest.fixture
def zoo_copy(tmp_path: Path) -> Path:
    """A models folder with a few manifests and their goldens (generators stay in place)."""
    root = tmp_path / "zoo"
    (root / "manifests").mkdir(parents=True)
    (root / "golden" / "tasks").mkdir(parents=True)
    for name in COPIED:
        shutil.copy(MODELS / "manifests" / f"{name}.toml", root / "manifests")
        for suffix in (".npz", ".json"):
            shutil.copy(MODELS / "golden" / f"{name}{suffix}", root / "golden")
    for task in ("ocr_pipeline", "vad_segments"):
        shutil.copy(MODELS / "golden" / "tasks" / f"{task}.json", root / "golden" / "tasks")
    return root


def _stored(root: Path, name: str) -> golden.Golden:
    return golden.read(root / "golden", name)


def test_the_committed_goldens_are_usable():
    zoo = Zoo()
    for entry in zoo.entries:
        if entry.status().available:
            golden.load(zoo.golden_dir, entry.name, entry.manifest.sha256,
                        entry.inputs_digest())


def test_an_edited_golden_is_refused(zoo_copy, shipei_cli):
    npz, _ = golden.paths(zoo_copy / "golden", "small_cnn")
    with np.load(npz) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["d0/prob"] = arrays["d0/prob"] + 1e-3
    np.savez_compressed(npz, **arrays)
    result = shipei_cli("models", "golden", "--models-dir", str(zoo_copy))
    assert result.returncode == 1
    assert "small_cnn: BAD: golden of small_cnn does not match its recorded sha256" in \
        result.stdout
    assert "transformer_encoder: ok" in result.stdout


def test_stale_and_missing_goldens_are_refused(zoo_copy):
    zoo = Zoo(zoo_copy)
    entry = zoo.entry("small_cnn")
    with pytest.raises(golden.GoldenError, match="inputs of small_cnn differ"):
        golden.load(zoo.golden_dir, "small_cnn", entry.manifest.sha256, "0" * 64)
    with pytest.raises(golden.GoldenError, match="computed for model"):
        golden.load(zoo.golden_dir, "small_cnn", "f" * 64, entry.inputs_digest())
    for suffix in (".npz", ".json"):
        (zoo.golden_dir / f"small_cnn{suffix}").unlink()
    with pytest.raises(golden.GoldenError, match="shipei models golden --refresh small_cnn"):
        golden.load(zoo.golden_dir, "small_cnn", entry.manifest.sha256, entry.inputs_digest())


def test_refresh_reports_unchanged_changed_and_new(zoo_copy, shipei_cli):
    directory = zoo_copy / "golden"
    old = _stored(zoo_copy, "small_cnn")
    moved = golden.Golden(old.name, old.model_sha256, old.inputs_sha256,
                          [{k: v + np.float32(0.25) for k, v in d.items()} for d in old.outputs],
                          old.reference)
    golden.save(directory, moved)  # a consistent golden from "another reference"
    for suffix in (".npz", ".json"):
        (directory / f"transformer_encoder{suffix}").unlink()
    manifest = zoo_copy / "manifests" / "silero_vad.toml"
    manifest.write_text(manifest.read_text().replace("seed = 3,", "seed = 4,"))

    dry = shipei_cli("models", "golden", "--refresh", "--dry-run", "--models-dir",
                     str(zoo_copy), "small_cnn")
    assert dry.returncode == 0, dry.stderr
    assert _stored(zoo_copy, "small_cnn").outputs_sha256 == moved.outputs_sha256

    result = shipei_cli("models", "golden", "--refresh", "--models-dir", str(zoo_copy),
                        "small_cnn", "transformer_encoder", "silero_vad", "ppocrv4_det")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "small_cnn: changed" in out and "data set 0 prob: max abs change 0.25" in out
    assert "transformer_encoder: new - new golden" in out
    assert "silero_vad: changed - inputs changed" in out
    assert "ppocrv4_det: unchanged" in out
    # the reference computed again: the committed outputs, up to the last bits a CPU's
    # own kernels may change (the committed golden was made on another processor)
    back = _stored(zoo_copy, "small_cnn")
    for got, want in zip(back.outputs, old.outputs, strict=True):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    assert (directory / "transformer_encoder.npz").exists()
    meta = json.loads((directory / "transformer_encoder.json").read_text())
    assert meta["reference"]["target"] == "onnxruntime-cpu,graph_optimization_level=disable"

    check = shipei_cli("models", "golden", "--models-dir", str(zoo_copy))
    assert check.returncode == 0 and "6 of 6 goldens usable" in check.stdout


def golden_font() -> Path:
    """The font file the committed OCR golden was rendered with (its ``font`` field names
    the file), found where the system keeps it; a skip naming it where it is not
    installed: another CJK font renders other pixels, so the golden would not be
    "unchanged"."""
    stored = json.loads((MODELS / "golden" / "tasks" / "ocr_pipeline.json").read_text())
    name = stored["font"].split("#")[0]
    found = [Path(c) for c in ocr.CJK_FONT_CANDIDATES if Path(c).name == name]
    found += sorted(Path("/usr/share/fonts").rglob(name)) if Path("/usr/share/fonts").is_dir() \
        else []
    for path in found:
        if path.is_file():
            return path
    pytest.skip(f"the OCR golden was rendered with {name} (Debian: fonts-noto-cjk), "
                "which is not installed here")


def test_task_goldens_refresh(zoo_copy, shipei_cli):
    font = golden_font()
    result = shipei_cli("models", "golden", "--refresh", "--models-dir", str(zoo_copy),
                        "vad_segments", "ocr_pipeline", env={ocr.FONT_ENV: str(font)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vad_segments: unchanged" in result.stdout
    assert "ocr_pipeline: unchanged" in result.stdout
    assert "适配测试中心" in result.stdout


def test_the_reference_agrees_with_the_outputs_onnx_ships():
    zoo = Zoo()
    entry = zoo.entry("light_squeezenet")
    stored = golden.load(zoo.golden_dir, entry.name, entry.manifest.sha256,
                         entry.inputs_digest())
    assert check_against_shipped(entry, stored.outputs)["agrees"]
    shifted = [{k: v * np.float32(1.01) for k, v in d.items()} for d in stored.outputs]
    verdict = check_against_shipped(entry, shifted)
    assert not verdict["agrees"] and "outside rtol" in verdict["message"]


def test_golden_refresh_usage_errors(shipei_cli, tmp_path):
    result = shipei_cli("models", "golden", "--dry-run")
    assert result.returncode == 2 and "only makes sense with --refresh" in result.stderr
    result = shipei_cli("models", "--models-dir", str(tmp_path))
    assert result.returncode == 2 and "no manifests/ folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_stored_task_golden_can_be_refreshed() -> None:
    """A task golden that `shipei models golden --refresh` cannot name goes stale for good."""
    from harness.modelzoo.refresh import task_refreshers

    stored = {p.stem for p in (default_models_dir() / "golden" / "tasks").glob("*.json")}
    assert stored <= set(task_refreshers()), sorted(stored - set(task_refreshers()))
