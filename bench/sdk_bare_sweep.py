"""Bare sweep of the 信创 SDKs over every ONNX node case with a 0-d input, compared with a
Shipei run's verdicts case by case (issue 27: scalars were fed as ``[1]``).

Three steps, because each SDK lives in an environment of its own (its numpy and onnx are
not the harness's):

1. ``export`` (harness interpreter): every node case with a 0-d input is written as files
   any numpy can read: ``model.onnx``, ``in_<set>_<i>.npy``, ``out_<set>_<i>.npy`` and
   ``case.json`` (names, rtol, atol). Cases holding a type numpy lacks (bfloat16, float8,
   int4 ...) are listed as not exported.
2. ``bare --sdk S`` (run *inside* the environment, e.g. through ``shipei env``'s launch
   variables): each case runs in a forked child that calls the SDK's own API as its
   documentation shows a user (none of Shipei's driver code), feeding the inputs exactly
   as given, 0-d included; what a user must change for the API (MNN's converter declares
   int64 and bool inputs int32; ncnn's Mats have no rank 0) is the least such change.
   A case passes when every output matches the reference within the case's rtol/atol
   (shape and element type included), as onnx's backend runner judges. An existing
   ``--out`` file is resumed: the cases it holds are not run again.
3. ``compare --run RUN --target T``: the bare verdicts against the run's, on
   pass / not pass, with every disagreement listed.

    python bench/sdk_bare_sweep.py export --out /tmp/zero_d
    shipei env show nncase   # interpreter and worker variables
    <env python> bench/sdk_bare_sweep.py bare --sdk nncase --cases /tmp/zero_d \
        --out nncase.jsonl
    python bench/sdk_bare_sweep.py compare --bare nncase.jsonl --run results/RUN \
        --target nncase-k230
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: the element types plain numpy holds (np.save / np.load in any numpy)
NUMPY_NAMES = frozenset({"float32", "float64", "float16", "int8", "int16", "int32", "int64",
                         "uint8", "uint16", "uint32", "uint64", "bool"})


# -- 1. export (harness interpreter) ---------------------------------------------------

def zero_d_cases() -> list[Any]:
    """The operator suite's node cases with at least one 0-d input."""
    sys.path.insert(0, str(ROOT))
    from suites.operators.onnx_cases import all_cases

    chosen = []
    for case in all_cases():
        if case.tags.get("source") != "node":
            continue
        loaded = case.load()
        if any(getattr(value, "ndim", None) == 0 for data in loaded.data_sets
               for value in data.inputs.values()):
            chosen.append((case, loaded))
    return chosen


def export(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    exported, skipped = [], []
    for case, loaded in zero_d_cases():
        arrays = [v for d in loaded.data_sets for v in [*d.inputs.values(), *d.outputs]]
        if not all(isinstance(v, np.ndarray) and v.dtype.name in NUMPY_NAMES for v in arrays):
            skipped.append(case.name)
            continue
        folder = out / case.name
        folder.mkdir(exist_ok=True)
        (folder / "model.onnx").write_bytes(loaded.model.SerializeToString())
        for index, data in enumerate(loaded.data_sets):
            for position, value in enumerate(data.inputs.values()):
                np.save(folder / f"in_{index}_{position}.npy", value)
            for position, value in enumerate(data.outputs):
                np.save(folder / f"out_{index}_{position}.npy", value)
        (folder / "case.json").write_text(json.dumps({
            "name": case.name, "rtol": case.rtol, "atol": case.atol,
            "inputs": list(loaded.data_sets[0].inputs), "outputs": loaded.output_names,
            "sets": len(loaded.data_sets)}))
        exported.append(case.name)
    (out / "index.json").write_text(json.dumps({"exported": exported,
                                                "not_exported": skipped}, indent=1))
    print(f"{len(exported)} node cases with a 0-d input exported to {out}; "
          f"{len(skipped)} hold a type numpy lacks: {', '.join(skipped) or 'none'}")


# -- 2. the SDKs as a user drives them (inside their environments) ---------------------

def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="shipei-bare-"))


def run_nncase(model: bytes, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    import nncase

    folder = _scratch()
    options = nncase.CompileOptions()
    options.target = "k230"
    options.dump_dir = str(folder)
    compiler = nncase.Compiler(options)
    compiler.import_onnx(model, nncase.ImportOptions())
    compiler.compile()
    simulator = nncase.Simulator()
    simulator.load_model(compiler.gencode_tobytes())
    for index, value in enumerate(inputs):
        simulator.set_input_tensor(index, nncase.RuntimeTensor.from_numpy(value))
    os.chdir(folder)  # the simulator writes beside its cwd
    simulator.run()
    return [simulator.get_output_tensor(i).to_numpy() for i in range(simulator.outputs_size)]


def run_mnn(model: bytes, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    import _tools  # the converter itself: the mnnconvert wrapper reports to its vendor
    import MNN.expr as F
    import MNN.nn

    folder = _scratch()
    (folder / "m.onnx").write_bytes(model)
    if not _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", str(folder / "m.onnx"),
                              "--MNNModel", str(folder / "m.mnn"), "--bizCode", "bare"]):
        raise RuntimeError("MNN's converter failed")
    import onnx

    graph = onnx.load_from_string(model).graph
    outputs = [o.name for o in graph.output]
    module = MNN.nn.load_module_from_file(str(folder / "m.mnn"), names, outputs)
    kinds = {"float32": F.float, "float64": F.double, "int32": F.int, "int8": F.int8,
             "uint8": F.uint8}
    values = []
    for value in inputs:
        if value.dtype in (np.int64, np.bool_):  # the converter declares both int32
            value = value.astype(np.int32)
        values.append(F.const(value, list(value.shape), F.NCHW, kinds[value.dtype.name]))
    return [np.array(F.convert(v, F.NCHW).read()) for v in module.onForward(values)]


def run_ncnn(model: bytes, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    import importlib.util

    import ncnn

    folder = _scratch()
    (folder / "m.onnx").write_bytes(model)
    pnnx = Path(next(iter(importlib.util.find_spec("pnnx").submodule_search_locations))) / "pnnx"
    result = subprocess.run([str(pnnx), "m.onnx", "fp16=0"], cwd=folder, capture_output=True,
                            text=True, timeout=120, check=False)
    if result.returncode != 0 or not (folder / "m.ncnn.param").exists():
        raise RuntimeError(f"pnnx failed (exit {result.returncode})")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    if net.load_param(str(folder / "m.ncnn.param")) or net.load_model(str(folder / "m.ncnn.bin")):
        raise RuntimeError("ncnn could not load pnnx's output")
    extractor = net.create_extractor()
    for index, value in enumerate(inputs):
        value = np.ascontiguousarray(value, dtype=np.float32)  # a Mat has no rank 0
        if value.ndim > 1 and value.shape[0] == 1:
            value = value[0]
        extractor.input(f"in{index}", ncnn.Mat(value).clone())
    import onnx

    outputs = []
    for index in range(len(onnx.load_from_string(model).graph.output)):
        code, mat = extractor.extract(f"out{index}")
        if code != 0:
            raise RuntimeError(f"ncnn could not extract out{index}")
        outputs.append(np.array(mat))
    return outputs


def run_paddle(model: bytes, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    import paddle
    from paddle import inference
    from x2paddle.convert import onnx2paddle

    folder = _scratch()
    (folder / "m.onnx").write_bytes(model)
    with paddle.utils.unique_name.guard(), contextlib.redirect_stdout(sys.stderr):
        onnx2paddle(str(folder / "m.onnx"), str(folder / "out"), disable_feedback=True,
                    enable_onnx_checker=False)
    saved = folder / "out" / "inference_model"
    model_file = next(p for p in (saved / "model.json", saved / "model.pdmodel") if p.exists())
    config = inference.Config(str(model_file), str(saved / "model.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    for name, value in zip(predictor.get_input_names(), inputs, strict=True):
        handle = predictor.get_input_handle(name)
        handle.reshape(list(value.shape))
        handle.copy_from_cpu(value)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def run_rknn(model: bytes, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    from rknn.api import RKNN

    folder = _scratch()
    (folder / "m.onnx").write_bytes(model)
    rknn = RKNN(verbose=False)
    steps: list[tuple[str, Callable[[], int]]] = [
        ("config", lambda: rknn.config(target_platform="rk3588")),
        ("load_onnx", lambda: rknn.load_onnx(model=str(folder / "m.onnx"))),
        ("build", lambda: rknn.build(do_quantization=False)),
        ("init_runtime", lambda: rknn.init_runtime())]
    for what, step in steps:
        if step() != 0:
            raise RuntimeError(f"rknn-toolkit2 {what} failed")
    outputs = rknn.inference(inputs=inputs, data_format=["nchw"] * len(inputs))
    if outputs is None:
        raise RuntimeError("rknn-toolkit2 inference returned nothing")
    return [np.asarray(v) for v in outputs]


SDKS = {"nncase": run_nncase, "mnn": run_mnn, "ncnn": run_ncnn, "paddle": run_paddle,
        "rknn": run_rknn}


def matches(want: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> bool:
    got = np.asarray(got)
    if want.shape != got.shape or want.dtype != got.dtype:  # a scalar given back as [1] too
        return False
    try:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError:
        return False
    return True


#: each child's data-segment ceiling: a runtime that sizes an output from garbage (MNN's
#: OneHot) gets MemoryError, not the machine's memory
CHILD_MEMORY_BYTES = 8 << 30


def _child(sdk: str, folder: str, conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    path = Path(folder)
    meta = json.loads((path / "case.json").read_text())
    model = (path / "model.onnx").read_bytes()
    try:
        ok = True
        for index in range(meta["sets"]):
            inputs = [np.load(path / f"in_{index}_{i}.npy") for i in range(len(meta["inputs"]))]
            actual = SDKS[sdk](model, inputs, meta["inputs"])
            expected = [np.load(path / f"out_{index}_{i}.npy")
                        for i in range(len(meta["outputs"]))]
            ok = ok and len(actual) == len(expected) and all(
                matches(w, g, meta["rtol"], meta["atol"])
                for w, g in zip(expected, actual, strict=True))
        conn.send(("pass" if ok else "fail", ""))
    except BaseException as exc:  # the SDK refused or failed: not a pass
        lines = [line for line in str(exc).splitlines() if line.strip()]
        conn.send(("error", f"{type(exc).__name__}: {(lines or [''])[-1][:200]}"))


def bare(sdk: str, cases: Path, out: Path, timeout: float) -> None:
    if sdk == "rknn":
        import rknn.api  # noqa: F401 - imported once (torch), before the children fork
    names = json.loads((cases / "index.json").read_text())["exported"]
    if out.exists():  # resume: the cases already judged are kept
        done = {json.loads(line)["case"] for line in out.read_text().splitlines() if line}
        names = [name for name in names if name not in done]
    context = multiprocessing.get_context("fork")
    scratch = tempfile.mkdtemp(prefix="shipei-bare-run-")
    tempfile.tempdir = scratch  # every child's files, removed at the end
    with out.open("a") as sink:
        for name in names:
            parent, child = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(sdk, str(cases / name), child))
            process.start()
            child.close()
            if parent.poll(timeout):
                try:
                    verdict, why = parent.recv()
                except EOFError:
                    verdict, why = "crash", f"exit {process.exitcode}"
            else:
                process.kill()
                verdict, why = "timeout", f"{timeout:g} s"
            process.join()
            sink.write(json.dumps({"case": name, "bare": verdict, "why": why}) + "\n")
            sink.flush()
    shutil.rmtree(scratch, ignore_errors=True)


# -- 3. compare ----------------------------------------------------------------------

def compare(bare_file: Path, run: Path, target: str) -> int:
    bare_rows = [json.loads(line) for line in bare_file.read_text().splitlines() if line]
    ours: dict[str, dict[str, Any]] = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("target") == target:
                ours[record["case"]] = record  # the last attempt wins
    agreed, rows = 0, 0
    for row in bare_rows:
        record = ours.get(row["case"])
        if record is None:
            print(f"MISSING {row['case']}: not in {run.name}")
            continue
        rows += 1
        same = (row["bare"] == "pass") == (record["status"] == "pass")
        agreed += same
        if not same:
            print(f"DISAGREE {row['case']}: bare {row['bare']} ({row['why'][:100]}), "
                  f"shipei {record['status']} ({record.get('message', '')[:100]})")
    print(f"{bare_file.stem} vs {target}: {agreed}/{rows} agree on pass/not-pass")
    return 0 if agreed == rows else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("export")
    step.add_argument("--out", type=Path, required=True)
    step = steps.add_parser("bare")
    step.add_argument("--sdk", choices=sorted(SDKS), required=True)
    step.add_argument("--cases", type=Path, required=True)
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--timeout", type=float, default=300.0)
    step = steps.add_parser("compare")
    step.add_argument("--bare", type=Path, required=True)
    step.add_argument("--run", type=Path, required=True)
    step.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    if args.step == "export":
        export(args.out)
        return 0
    if args.step == "bare":
        bare(args.sdk, args.cases, args.out, args.timeout)
        return 0
    return compare(args.bare, args.run, args.target)


if __name__ == "__main__":
    sys.exit(main())
