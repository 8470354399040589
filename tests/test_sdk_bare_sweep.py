"""bench/sdk_bare_sweep.py on onnxruntime (the SDK this machine has): every 0-d node case
is exported (float8, int4, bfloat16, strings, sequences and absent optionals included),
driven through onnxruntime's own numpy API in forked children, and compared with a
Shipei run of the same cases, per SDK."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def sweep_module():
    spec = importlib.util.spec_from_file_location("sdk_bare_sweep",
                                                  ROOT / "bench" / "sdk_bare_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sdk_bare_sweep"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep():
    return sweep_module()


def test_values_numpy_lacks_travel_as_their_bits_and_come_back_equal(sweep, tmp_path):
    values = {
        "bf16": np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16),
        "f8": np.array(0.5, dtype=ml_dtypes.float8_e4m3fn),  # 0-d stays 0-d
        "i4": np.array([-8, 7], dtype=ml_dtypes.int4),
        "text": np.array("abc", dtype=object),
        "seq": [np.zeros((2,), np.float32), np.array(3, np.int64)],
        "none": None,
    }
    for stem, value in values.items():
        spec = sweep.save_value(tmp_path, stem, value)
        back = sweep.load_value(tmp_path, json.loads(json.dumps(spec)))
        assert sweep.matches(value, back, 0.0, 0.0), stem
    scalar = np.array(2.0, np.float32)
    assert not sweep.matches(scalar, scalar.reshape(1), 1e-3, 1e-7)  # [1] is not 0-d
    assert not sweep.matches(None, [], 0, 0) and not sweep.matches([scalar], None, 0, 0)
    assert not sweep.matches(np.array("a", dtype=object), np.array("b", dtype=object), 0, 0)


def test_without_ml_dtypes_an_exotic_input_is_not_run_and_an_exotic_output_never_matches(
        sweep, tmp_path, monkeypatch):
    """An SDK environment without ml_dtypes (rknn's) cannot feed a float8 input, so the
    case is not run; an expected float8 output is still judged, and nothing its numpy
    holds can match it."""
    spec = json.loads(json.dumps(sweep.save_value(
        tmp_path, "f8", np.array(0.5, dtype=ml_dtypes.float8_e4m3fn))))
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes: ImportError
    with pytest.raises(sweep.NotRunnable, match="no ml_dtypes"):
        sweep.load_value(tmp_path, spec)
    want = sweep.load_value(tmp_path, spec, expected=True)
    assert isinstance(want, sweep.Unholdable) and want.dtype == "float8_e4m3fn"
    bits = np.load(tmp_path / spec["file"])
    assert not sweep.matches(want, bits, 1.0, 1.0)  # not even its own bits as uint8
    [item] = sweep.load_value(tmp_path, {"kind": "sequence", "items": [spec]}, expected=True)
    assert isinstance(item, sweep.Unholdable)


CASES = ["test_clip_default_min", "test_if_seq", "test_loop16_seq_none",
         "test_string_concat_zero_dimensional", "test_range_bfloat16_type_positive_delta",
         "test_dequantizelinear_int4"]


def test_the_bare_sweep_on_onnxruntime_is_compared_with_shipei_per_sdk(
        sweep, tmp_path, shipei_cli, capsys):
    cases = tmp_path / "zero_d"
    sweep.export(cases, set(CASES))
    exported = json.loads((cases / "index.json").read_text())["exported"]
    assert sorted(exported) == sorted(CASES)  # the types numpy lacks are exported too
    bare = tmp_path / "onnxruntime.jsonl"
    tempdir = tempfile.gettempdir()
    sweep.bare("onnxruntime", cases, bare, timeout=120)
    # the sweep's scratch folder is gone, and this process's temporary folder is its own
    # again (it once stayed the removed scratch: every later mkdtemp here failed)
    assert tempfile.gettempdir() == tempdir and Path(tempdir).is_dir()
    verdicts = {row["case"]: row for row in map(json.loads, bare.read_text().splitlines())}
    assert set(verdicts) == set(CASES)
    for case in ("test_clip_default_min", "test_if_seq", "test_loop16_seq_none",
                 "test_string_concat_zero_dimensional"):
        assert verdicts[case]["bare"] == "pass", verdicts[case]
    # onnxruntime's numpy API takes no bfloat16 array: the bare user's refusal
    assert verdicts["test_range_bfloat16_type_positive_delta"]["bare"] == "error"

    result = shipei_cli("run", "--suite", "operators", "--target", "onnxruntime-cpu",
                        "-k", " or ".join(CASES))
    run = next(iter(result.run_dirs()))
    figures = tmp_path / "agreement.json"
    code = sweep.compare([(bare, "onnxruntime-cpu")], run, figures)
    found = json.loads(figures.read_text())["sdks"][0]
    assert found["judged"] == len(CASES) and not found["missing"] and not found["not_run"]
    # onnxruntime's numpy API refuses the bfloat16 Range; Shipei's driver passes it bits
    # in an OrtValue: the one disagreement, listed with both sides' words
    assert found["agree"] == len(CASES) - 1 and code == 1
    [disagreement] = found["disagree"]
    assert disagreement["case"] == "test_range_bfloat16_type_positive_delta"
    assert (disagreement["bare"], disagreement["shipei"]) == ("error", "pass")
    table = capsys.readouterr().out
    assert "DISAGREE onnxruntime-cpu test_range_bfloat16_type_positive_delta" in table
    assert "onnxruntime.jsonl" in table and f"{len(CASES) - 1:>5}" in table


def test_a_disagreement_shows_the_adaptation_shipeis_record_names(sweep, tmp_path, capsys):
    """The likely why of a disagreement is what Shipei's driver did differently: compare
    prints the record's adaptations under it (and writes them in --json)."""
    run = tmp_path / "run"
    run.mkdir()
    adaptation = "inputs ... travel as OrtValues built from and read back as their raw bits"
    records = [{"case": "test_a", "target": "t", "status": "pass",
                "placement": {"adaptations": [adaptation]}},
               {"case": "test_b", "target": "t", "status": "error", "message": "no"}]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bare = tmp_path / "sdk.jsonl"
    bare.write_text(json.dumps({"case": "test_a", "bare": "error", "why": "refused"}) + "\n"
                    + json.dumps({"case": "test_b", "bare": "error", "why": "x"}) + "\n")
    figures = tmp_path / "figures.json"
    assert sweep.compare([(bare, "t")], run, figures) == 1
    [row] = json.loads(figures.read_text())["sdks"][0]["disagree"]
    assert row["case"] == "test_a" and row["shipei_adaptations"] == [adaptation]
    assert f"shipei's adaptation: {adaptation}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_type_mnns_api_lacks_is_mnns_refusal_named_not_the_scripts_keyerror(sweep, tmp_path):
    """In MNN's own environment: a bfloat16 input is refused by naming what MNN.expr
    has (it was the script's KeyError), and a sequence input as not a tensor."""
    import os
    import subprocess

    from harness.environments import target_envs as envs

    ready, reason = envs.status("mnn", envs.known_specs().get("mnn"))
    if not ready:
        pytest.skip(reason)
    cases = tmp_path / "cases"
    sweep.export(cases, {"test_range_bfloat16_type_positive_delta", "test_loop13_seq"})
    launch = envs.launch("mnn")
    out = tmp_path / "mnn.jsonl"
    subprocess.run([*launch.argv, str(ROOT / "bench" / "sdk_bare_sweep.py"), "bare", "--sdk",
                    "mnn", "--cases", str(cases), "--out", str(out)],
                   env={**os.environ, **launch.env}, check=True, timeout=600,
                   capture_output=True)
    rows = {row["case"]: row for row in map(json.loads, out.read_text().splitlines())}
    bf16 = rows["test_range_bfloat16_type_positive_delta"]
    assert bf16["bare"] == "error" and "MNN.expr has no bfloat16 type" in bf16["why"], bf16
    sequence = rows["test_loop13_seq"]
    assert sequence["bare"] == "error" and "takes tensors" in sequence["why"], sequence
