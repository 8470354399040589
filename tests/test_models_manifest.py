"""Model manifests: the shipped ones are valid; broken ones fail with one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.modelzoo.inputs import make_data_sets
from harness.modelzoo.manifest import ManifestError, load_manifest, parse_manifest
from harness.modelzoo.sources import SourceError, verified_bytes
from harness.modelzoo.zoo import Zoo, ZooEntry, default_models_dir

MODELS = default_models_dir()

GOOD = """
schema_version = 1
name = "tiny"
task = "encoder"
precision = "fp32"
sha256 = "{sha}"

[source]
generator = "models.generators.transformer:build"

[[inputs]]
name = "x"
dtype = "float32"
shape = ["batch", "seq", 64]
generator = "normal"
params = {{ seed = 1 }}

[[outputs]]
name = "y"

[[data_sets]]
dims = {{ batch = 2, seq = 3 }}
"""


def _good(sha: str | None = None) -> str:
    if sha is None:
        sha = load_manifest(MODELS / "manifests" / "transformer_encoder.toml").sha256
    return GOOD.format(sha=sha)


def _parse(text: str, name: str = "tiny") -> object:
    return parse_manifest(text, Path(f"{name}.toml"))


def test_every_shipped_manifest_is_valid_and_matches_its_model():
    zoo = Zoo()
    assert zoo.broken == []
    assert len(zoo.entries) >= 20
    tasks = {e.manifest.task for e in zoo.entries}
    assert {"classification", "detection", "recognition", "vad", "encoder"} <= tasks
    assert {e.manifest.precision for e in zoo.entries} >= {"fp32", "fp16", "int8"}
    for entry in zoo.entries:
        if entry.status().available:
            entry.model_bytes()  # sha256 and the declared interface are checked here


def test_a_good_manifest_parses():
    manifest = _parse(_good())
    assert manifest.name == "tiny" and manifest.inputs[0].shape == ("batch", "seq", 64)
    (feeds,) = make_data_sets(manifest)
    assert feeds["x"].shape == (2, 3, 64) and feeds["x"].dtype.name == "float32"


@pytest.mark.parametrize(("change", "words"), [
    (lambda t: t.replace('task = "encoder"', 'task = "encoder'), "not valid TOML"),
    (lambda t: t.replace('precision = "fp32"\n', ""), "precision: required field is missing"),
    (lambda t: t.replace('precision = "fp32"', 'precision = "fp8"'), "'fp8' is not one of"),
    (lambda t: t.replace('task = "encoder"', 'task = "encoder"\nspeed = 3'), "unknown field"),
    (lambda t: t.replace("schema_version = 1", "schema_version = 7"), "not supported"),
    (lambda t: t.replace('name = "tiny"', 'name = "other"'), "differs from the file name"),
    (lambda t: t.replace('sha256 = "', 'sha256 = "zz'), "64 hexadecimal digits"),
    (lambda t: t.replace('shape = ["batch", "seq", 64]', "shape = [1.5]"),
     "neither a size nor a symbol"),
    (lambda t: t.replace("batch = 2,", "batch = 0,"), "positive integer"),
    (lambda t: t.replace('[source]\ngenerator = "models.generators.transformer:build"',
                         '[source]\npackage = "x"'), "needs path and install"),
    (lambda t: t.replace('name = "y"', 'name = "y"\nkind = "maybe"'), "not one of"),
    (lambda t: t + '\n[streaming]\nchunk_input = "nope"\nchunk = 4\n', "is not an input"),
])
def test_bad_manifests_fail_with_one_line_naming_file_and_field(change, words):
    with pytest.raises(ManifestError) as caught:
        _parse(change(_good()))
    message = str(caught.value)
    assert words in message
    assert message.startswith("tiny.toml") and "\n" not in message.strip()


def test_unknown_generator_and_wrong_interface_are_refused(tmp_path):
    bad_generator = _parse(_good().replace('generator = "normal"', 'generator = "guess"'))
    with pytest.raises(ManifestError, match="unknown generator 'guess'"):
        make_data_sets(bad_generator)
    wrong_input = _parse(_good().replace('name = "x"', 'name = "tokens"'))
    with pytest.raises(ManifestError, match="inputs .* are not the model's"):
        ZooEntry(wrong_input, MODELS).model_bytes()
    wrong_dtype = _parse(_good().replace('dtype = "float32"', 'dtype = "float16"'))
    with pytest.raises(ManifestError, match="is float32 in the model"):
        ZooEntry(wrong_dtype, MODELS).model_bytes()


def test_a_sha256_mismatch_is_refused_never_run():
    manifest = _parse(_good(sha="ab" * 32))
    with pytest.raises(SourceError, match="refusing to run it") as caught:
        verified_bytes(manifest, MODELS)
    assert "ab" * 32 in str(caught.value)


def test_a_missing_package_gives_the_install_hint():
    text = _good().replace(
        '[source]\ngenerator = "models.generators.transformer:build"',
        '[source]\npackage = "shipei_no_such_package"\npath = "m.onnx"\n'
        'install = "pip install --no-deps shipei-no-such-package"')
    entry = ZooEntry(_parse(text), MODELS)
    state = entry.status()
    assert not state.available
    assert "pip install --no-deps shipei-no-such-package" in state.reason
    with pytest.raises(SourceError, match="not installed"):
        entry.model_bytes()


def test_a_missing_artifact_names_the_regenerate_command(tmp_path):
    text = _good().replace(
        '[source]\ngenerator = "models.generators.transformer:build"',
        '[source]\nfile = "artifacts/gone.onnx"\nregenerate = "python -m models.generators.x"')
    state = ZooEntry(_parse(text), tmp_path).status()
    assert not state.available and "python -m models.generators.x" in state.reason


def test_a_broken_manifest_is_listed_not_dropped(tmp_path):
    shutil.copytree(MODELS / "manifests", tmp_path / "manifests")
    (tmp_path / "manifests" / "broken.toml").write_text("name = [", encoding="utf-8")
    zoo = Zoo(tmp_path)
    assert [b.name for b in zoo.broken] == ["broken"]
    assert "not valid TOML" in zoo.broken[0].error
    with pytest.raises(ManifestError, match="not valid TOML"):
        zoo.entry("broken")
    assert len(zoo.entries) == len(Zoo().entries)


def test_generated_models_are_deterministic():
    from models.generators import cnn, transformer

    for build in (cnn.build, transformer.build, transformer.build_fp16):
        assert build().SerializeToString() == build().SerializeToString()


def test_int8_artifacts_regenerate_to_the_pinned_bytes(capsys):
    import onnxruntime

    from models.generators import quantized

    if onnxruntime.__version__ != quantized.MADE_WITH_ONNXRUNTIME:
        pytest.skip(f"the artifacts were made with onnxruntime "
                    f"{quantized.MADE_WITH_ONNXRUNTIME}, this is {onnxruntime.__version__}")
    assert quantized.main(["--check"]) == 0
    out = capsys.readouterr().out
    zoo = Zoo()
    for name in quantized.VARIANTS:
        manifest = zoo.entry(name.removesuffix(".onnx")).manifest
        assert f"{name}: sha256 {manifest.sha256}" in out and "same" in out
