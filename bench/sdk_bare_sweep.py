"""Bare sweep of the 信创 SDKs over every ONNX node case with a 0-d input, compared with a
Shipei run's verdicts case by case (issue 27: scalars were fed as ``[1]``).

Three steps, because each SDK lives in an environment of its own (its numpy and onnx are
not the harness's):

1. ``export`` (harness interpreter): every node case with a 0-d input is written as files
   any numpy can read: ``model.onnx``, one ``.npy`` per tensor and ``case.json`` (names,
   rtol, atol, and what each value is). A type numpy lacks (bfloat16, float8, int4 ...)
   is saved as its bits in an unsigned integer of its width and read back with
   ``ml_dtypes`` (in an environment without it, a case with such an input stays *not
   run*, and such an expected output is not matched by anything the SDK gives back, as
   that numpy cannot hold the type); a string tensor
   as numpy's unicode type, read back as Python strings; a sequence as its tensors; an
   absent optional as nothing.
2. ``bare --sdk S`` (run *inside* the environment, e.g. through ``shipei env``'s launch
   variables): each case runs in a forked child that calls the SDK's own API as its
   documentation shows a user (none of Shipei's driver code), feeding the inputs exactly
   as given, 0-d included; what a user must change for the API (MNN's converter declares
   int64 and bool inputs int32; ncnn's Mats have no rank 0) is the least such change.
   A case passes when every output matches the reference within the case's rtol/atol
   (shape and element type included), as onnx's backend runner judges. An existing
   ``--out`` file is resumed: the cases it holds are not run again.
3. ``compare --run RUN --bare FILE --target T [--bare FILE --target T ...]``: each SDK's
   bare verdicts against the run's for its target, on pass / not pass, every
   disagreement listed, then agreement per SDK (``--json`` writes the figures).

``--sdk onnxruntime`` drives onnxruntime's own numpy API (``InferenceSession.run``) in
the harness's interpreter: the script's check that needs no SDK environment.

    python bench/sdk_bare_sweep.py export --out /tmp/zero_d
    shipei env show nncase   # interpreter and worker variables
    <env python> bench/sdk_bare_sweep.py bare --sdk nncase --cases /tmp/zero_d \
        --out nncase.jsonl
    python bench/sdk_bare_sweep.py compare --run results/RUN \
        --bare nncase.jsonl --target nncase-k230 --bare mnn.jsonl --target mnn-cpu
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

def zero_d_cases(only: set[str] | None = None) -> list[Any]:
    """The operator suite's node cases with at least one 0-d input (of those named in
    ``only``, when given)."""
    sys.path.insert(0, str(ROOT))
    from suites.operators.onnx_cases import all_cases

    chosen = []
    for case in all_cases():
        if case.tags.get("source") != "node" or (only is not None and case.name not in only):
            continue
        loaded = case.load()
        if any(getattr(value, "ndim", None) == 0 for data in loaded.data_sets
               for value in data.inputs.values()):
            chosen.append((case, loaded))
    return chosen


class NotRunnable(Exception):
    """A case this environment cannot even hold (no ml_dtypes for a float8 tensor): not
    the SDK's verdict."""


def save_value(folder: Path, stem: str, value: Any) -> dict[str, Any]:
    """Write one input or output under ``folder``; what :func:`load_value` reads back."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, (list, tuple)):
        return {"kind": "sequence",
                "items": [save_value(folder, f"{stem}_{i}", v) for i, v in enumerate(value)]}
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "US":
        stored, dtype = array.astype(str), "string"
    elif array.dtype.name in NUMPY_NAMES:
        stored, dtype = array, array.dtype.name
    else:  # bfloat16, float8, int4 ...: the bits, in an unsigned integer of their width
        stored, dtype = array.view(f"u{array.dtype.itemsize}"), array.dtype.name
    np.save(folder / f"{stem}.npy", stored, allow_pickle=False)
    return {"kind": "tensor", "file": f"{stem}.npy", "dtype": dtype}


class Unholdable:
    """An expected output of a type this environment's numpy cannot hold (no ml_dtypes):
    the SDK still runs, and nothing it gives back here can be that type, so it does not
    match (an input of such a type is :class:`NotRunnable` instead: it cannot be fed)."""

    def __init__(self, dtype: str, why: str) -> None:
        self.dtype, self.why = dtype, why


def load_value(folder: Path, spec: dict[str, Any], expected: bool = False) -> Any:
    """A value :func:`save_value` wrote, as the SDK is given it or, with ``expected``, as
    its output is compared with."""
    if spec["kind"] == "none":
        return None
    if spec["kind"] == "sequence":
        return [load_value(folder, item, expected) for item in spec["items"]]
    stored = np.load(folder / spec["file"], allow_pickle=False)
    dtype = spec["dtype"]
    if dtype == "string":
        return stored.astype(object)
    if dtype in NUMPY_NAMES:
        return stored
    try:
        import ml_dtypes
    except ImportError:
        why = f"numpy holds no {dtype} and this environment has no ml_dtypes"
    else:
        if hasattr(ml_dtypes, dtype):
            return stored.view(getattr(ml_dtypes, dtype))
        why = f"this environment's ml_dtypes {ml_dtypes.__version__} has no {dtype}"
    if expected:
        return Unholdable(dtype, why)
    raise NotRunnable(why)


def export(out: Path, only: set[str] | None = None) -> list[str]:
    """Write every node case with a 0-d input (those named in ``only``, if given)."""
    out.mkdir(parents=True, exist_ok=True)
    exported = []
    for case, loaded in zero_d_cases(only):
        folder = out / case.name
        folder.mkdir(exist_ok=True)
        (folder / "model.onnx").write_bytes(loaded.model.SerializeToString())
        sets = [{"inputs": [save_value(folder, f"in_{index}_{position}", value)
                            for position, value in enumerate(data.inputs.values())],
                 "outputs": [save_value(folder, f"out_{index}_{position}", value)
                             for position, value in enumerate(data.outputs)]}
                for index, data in enumerate(loaded.data_sets)]
        (folder / "case.json").write_text(json.dumps({
            "name": case.name, "rtol": case.rtol, "atol": case.atol,
            "inputs": list(loaded.data_sets[0].inputs), "outputs": loaded.output_names,
            "sets": sets}))
        exported.append(case.name)
    (out / "index.json").write_text(json.dumps({"exported": exported}, indent=1))
    print(f"{len(exported)} node cases with a 0-d input exported to {out}")
    return exported


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
    for name, value in zip(names, inputs, strict=True):
        if not isinstance(value, np.ndarray):  # a sequence, an absent optional
            raise TypeError(f"MNN's module API takes tensors; input {name!r} is a "
                            f"{type(value).__name__}")
        if value.dtype in (np.int64, np.bool_):  # the converter declares both int32
            value = value.astype(np.int32)
        if value.dtype.name not in kinds:  # MNN.expr has no such type: the user cannot
            raise TypeError(f"MNN.expr has no {value.dtype.name} type for input {name!r} "
                            f"(it has {', '.join(sorted(kinds))})")
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


def run_onnxruntime(model: bytes, inputs: list[Any], names: list[str]) -> list[Any]:
    """onnxruntime's numpy API as its documentation shows it (an absent optional input is
    left out of the feeds); types that API does not take are its refusal."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = {name: value for name, value in zip(names, inputs, strict=True)
             if value is not None}
    return session.run(None, feeds)


SDKS = {"nncase": run_nncase, "mnn": run_mnn, "ncnn": run_ncnn, "paddle": run_paddle,
        "rknn": run_rknn, "onnxruntime": run_onnxruntime}


def matches(want: Any, got: Any, rtol: float, atol: float) -> bool:
    """Whether ``got`` is ``want`` within tolerance: shape and element type included, a
    sequence item by item, an absent optional only by an absent one."""
    if isinstance(want, Unholdable):
        return False
    if want is None or isinstance(want, list):
        if want is None or not isinstance(got, (list, tuple)) or len(got) != len(want):
            return want is None and got is None
        return all(matches(w, g, rtol, atol) for w, g in zip(want, got, strict=True))
    if got is None or isinstance(got, (list, tuple)):
        return False
    got = np.asarray(got)
    if want.shape != got.shape or want.dtype != got.dtype:  # a scalar given back as [1] too
        return False
    if want.dtype == object:  # strings
        return bool(np.array_equal(want, got))
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
        sets = [([load_value(path, spec) for spec in data["inputs"]],
                 [load_value(path, spec, expected=True) for spec in data["outputs"]])
                for data in meta["sets"]]
    except NotRunnable as exc:
        conn.send(("not_run", str(exc)))
        return
    try:
        ok = True
        for inputs, expected in sets:
            actual = list(SDKS[sdk](model, inputs, meta["inputs"]))
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
    before, tempfile.tempdir = tempfile.tempdir, scratch  # every child's files, removed
    try:
        _judge_each(sdk, cases, names, out, timeout, context)
    finally:  # this process's temporary folder is its own again
        tempfile.tempdir = before
        shutil.rmtree(scratch, ignore_errors=True)


def _judge_each(sdk: str, cases: Path, names: list[str], out: Path, timeout: float,
                context: Any) -> None:
    with out.open("a") as sink:
        for name in names:
            parent, child = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(sdk, str(cases / name), child))
            process.start()
            child.close()
            if parent.poll(timeout):
                try:
                    verdict, why = parent.recv()
                except EOFError:  # the child died: its exit status once it is reaped
                    process.join()
                    verdict, why = "crash", f"exit {process.exitcode}"
            else:
                process.kill()
                verdict, why = "timeout", f"{timeout:g} s"
            process.join()
            sink.write(json.dumps({"case": name, "bare": verdict, "why": why}) + "\n")
            sink.flush()


# -- 3. compare ----------------------------------------------------------------------

def run_verdicts(run: Path, target: str) -> dict[str, dict[str, Any]]:
    """The run's records of ``target`` by case (the last attempt of a case wins)."""
    ours: dict[str, dict[str, Any]] = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("target") == target:
                ours[record["case"]] = record
    return ours


def agreement(bare_file: Path, run: Path, target: str) -> dict[str, Any]:
    """One SDK's bare verdicts against the run's for ``target``: the counts, and each
    disagreement, case not run and case missing from the run."""
    bare_rows = [json.loads(line) for line in bare_file.read_text().splitlines() if line]
    ours = run_verdicts(run, target)
    found: dict[str, Any] = {"bare": bare_file.name, "target": target, "cases": len(bare_rows),
                             "bare_passes": 0, "judged": 0, "agree": 0, "disagree": [],
                             "not_run": [], "missing": []}
    for row in bare_rows:
        record = ours.get(row["case"])
        if row["bare"] == "not_run":
            found["not_run"].append({"case": row["case"], "why": row["why"]})
            continue
        if record is None:
            found["missing"].append(row["case"])
            continue
        found["judged"] += 1
        found["bare_passes"] += row["bare"] == "pass"
        if (row["bare"] == "pass") == (record["status"] == "pass"):
            found["agree"] += 1
        else:
            found["disagree"].append({
                "case": row["case"], "bare": row["bare"], "bare_why": row["why"][:200],
                "shipei": record["status"], "shipei_message": record.get("message", "")[:200],
                # what Shipei's driver did differently, as its record says (the likely why)
                "shipei_adaptations": (record.get("placement") or {}).get("adaptations", [])})
    return found


def compare(pairs: list[tuple[Path, str]], run: Path, json_out: Path | None = None) -> int:
    """Each SDK's bare verdicts against the run's; 0 when every judged case agrees."""
    results = [agreement(bare_file, run, target) for bare_file, target in pairs]
    for found in results:
        for row in found["disagree"]:
            print(f"DISAGREE {found['target']} {row['case']}: bare {row['bare']} "
                  f"({row['bare_why'][:100]}), shipei {row['shipei']} "
                  f"({row['shipei_message'][:100]})")
            for adaptation in row["shipei_adaptations"]:
                print(f"  shipei's adaptation: {adaptation}")
        for row in found["not_run"]:
            print(f"NOT RUN {found['target']} {row['case']}: {row['why']}")
        for case in found["missing"]:
            print(f"MISSING {found['target']} {case}: not in {run.name}")
    print(f"{'bare file':<24} {'target':<20} {'cases':>5} {'judged':>6} {'bare pass':>9} "
          f"{'agree':>5} {'disagree':>8} {'not run':>7} {'missing':>7}")
    for f in results:
        print(f"{f['bare']:<24} {f['target']:<20} {f['cases']:>5} {f['judged']:>6} "
              f"{f['bare_passes']:>9} {f['agree']:>5} {len(f['disagree']):>8} "
              f"{len(f['not_run']):>7} {len(f['missing']):>7}")
    if json_out is not None:
        json_out.write_text(json.dumps({"run": run.name, "sdks": results}, indent=1) + "\n")
    return 0 if all(not f["disagree"] and not f["missing"] for f in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("export")
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--only", help="comma-separated case names (default: all of them)")
    step = steps.add_parser("bare")
    step.add_argument("--sdk", choices=sorted(SDKS), required=True)
    step.add_argument("--cases", type=Path, required=True)
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--timeout", type=float, default=300.0)
    step = steps.add_parser("compare")
    step.add_argument("--run", type=Path, required=True)
    step.add_argument("--bare", type=Path, action="append", required=True,
                      help="an SDK's bare verdicts (repeat, each with its --target)")
    step.add_argument("--target", action="append", required=True,
                      help="the run's target for the --bare file in the same position")
    step.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.step == "export":
        export(args.out, set(args.only.split(",")) if args.only else None)
        return 0
    if args.step == "bare":
        bare(args.sdk, args.cases, args.out, args.timeout)
        return 0
    if len(args.bare) != len(args.target):
        parser.error("give each --bare file its --target, in the same order")
    return compare(list(zip(args.bare, args.target, strict=True)), args.run, args.json)


if __name__ == "__main__":
    sys.exit(main())
