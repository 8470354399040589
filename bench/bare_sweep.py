"""Bare-runtime sweep: the operator cases driven by each runtime directly, compared with a
harness run's verdicts case by case.

Each case runs in a forked child (a crash or hang costs that case only) that calls the
runtime's own Python API the way a user would: onnxruntime ``InferenceSession``
(``OrtValue`` from raw bytes for the types numpy lacks), OpenVINO ``read_model`` /
``compile_model`` at an explicit f32 precision hint, TVM Relax ``from_onnx`` +
``tvm.compile`` + ``VirtualMachine``. Tensors of the types numpy lacks are moved as
ONNX raw bytes through ``onnx.numpy_helper`` — not through the harness's codec, so the
two paths are independent. A case passes when every output matches the reference
within the case's own rtol/atol (``numpy.testing.assert_allclose`` on the ONNX-defined
values, NaN equal to NaN), as onnx's backend test runner judges.

    python bench/bare_sweep.py --runtime onnxruntime --run results/RUN_ID
    python bench/bare_sweep.py --runtime tvm --run results/RUN_ID --every 4

It prints every case on which the bare verdict (pass / not pass) differs from the
harness's, then the agreement figure. ``--every N`` takes every N-th case (TVM compiles
each case for seconds).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suites.operators.onnx_cases import all_cases  # noqa: E402

#: the element types plain numpy holds
NUMPY_NAMES = frozenset({"float32", "float64", "float16", "int8", "int16", "int32", "int64",
                         "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
                         "complex128"})
RUNTIME_TARGETS = {"onnxruntime": "onnxruntime-cpu", "openvino": "openvino-cpu",
                   "tvm": "tvm-llvm"}


def _is_exotic(array: np.ndarray) -> bool:
    """A type numpy lacks (ml_dtypes): bfloat16, float8/6/4, int4/2."""
    return array.dtype.name not in NUMPY_NAMES and array.dtype.kind not in "OUS"


def _raw(array: np.ndarray) -> tuple[int, bytes]:
    tensor = numpy_helper.from_array(array)
    return tensor.data_type, tensor.raw_data


def _from_raw(data_type: int, shape: list[int], raw: bytes) -> np.ndarray:
    tensor = onnx.TensorProto(data_type=data_type, dims=shape, raw_data=raw)
    return numpy_helper.to_array(tensor)


# -- the runtimes, each as a user drives it ------------------------------------------

def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    exotic = any(isinstance(v, np.ndarray) and _is_exotic(v) for v in feeds.values()) or any(
        o.type.startswith("tensor(") and o.type not in _ORT_NUMPY
        for o in session.get_outputs())
    feeds = {k: v for k, v in feeds.items() if v is not None}
    if not exotic:
        return dict(zip(names, session.run(names, feeds), strict=True))
    values = {}
    for name, value in feeds.items():
        if _is_exotic(value):
            code, raw = _raw(value)
            ort_value = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), code)
            if raw:
                ctypes.memmove(ort_value.data_ptr(), raw, len(raw))
            values[name] = ort_value
        else:
            values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
    outputs = {}
    for name, out in zip(names, session.run_with_ort_values(names, values), strict=True):
        element = _ORT_CODES.get(out.data_type()) if out.is_tensor() else None
        if element is None:
            outputs[name] = out.numpy()
        else:
            size = out.tensor_size_in_bytes()
            raw = ctypes.string_at(out.data_ptr(), size) if size else b""
            outputs[name] = _from_raw(element, list(out.shape()), raw)
    return outputs


_ORT_NUMPY = {f"tensor({t})" for t in (
    "float", "double", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool", "string")}
#: onnxruntime's type strings of the types numpy lacks -> TensorProto codes
_ORT_CODES = {f"tensor({name.lower()})": code
              for name, code in onnx.TensorProto.DataType.items()
              if f"tensor({name.lower()})" not in _ORT_NUMPY}


@functools.lru_cache(maxsize=1)
def _openvino_core() -> Any:
    """One ``ov.Core`` per process, as a user's program holds it (a fresh one per case
    cost the bare operator loop about 4 s over the suite)."""
    import openvino as ov

    return ov.Core()


def run_openvino(model: onnx.ModelProto, feeds: dict[str, Any]) -> dict[str, Any]:
    import openvino as ov

    core = _openvino_core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    port_names = [set(p.get_names()) for p in compiled.inputs]
    initializers = {i.name for i in model.graph.initializer}
    onnx_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    for position, name in enumerate(onnx_inputs):
        value = feeds.get(name)
        index = next((i for i, names in enumerate(port_names) if name in names), None)
        if index is None and len(port_names) == len(onnx_inputs):
            index = position  # OpenVINO renamed a pass-through input after its output
        if index is None or value is None:
            continue  # an input OpenVINO dropped (never read) or an omitted optional
        port = compiled.inputs[index]
        if value.dtype.kind in "OUS":
            tensor = ov.Tensor(np.asarray(value.tolist(), dtype=str))
        else:
            tensor = ov.Tensor(port.get_element_type(), ov.Shape(list(value.shape)))
            raw = (_raw(value)[1] if _is_exotic(value)
                   else np.require(value, requirements="C").tobytes())
            if raw:
                tensor.data.reshape(-1).view(np.uint8)[...] = np.frombuffer(raw, np.uint8)
        request.set_input_tensor(index, tensor)
    request.infer()
    outputs = {}
    for index, port in enumerate(compiled.outputs):
        tensor = request.get_output_tensor(index)
        kind = tensor.element_type.get_type_name()
        if kind == "string":
            value = np.array(tensor.str_data, dtype=object).reshape(tuple(tensor.shape))
        elif kind in _OV_RAW:
            raw = tensor.data.reshape(-1).view(np.uint8).tobytes() if tensor.byte_size else b""
            value = _from_raw(_OV_RAW[kind], list(tensor.shape), raw)
        else:
            value = np.array(tensor.data, copy=True)
        for name in port.get_names():
            outputs[name] = value
    return outputs


_OV_RAW = {"bf16": 16, "f8e4m3": 17, "f8e5m2": 19, "u4": 21, "i4": 22, "f4e2m1": 23,
           "f8e8m0": 24, "u2": 25}


def run_tvm(model: onnx.ModelProto, feeds: dict[str, Any]) -> dict[str, Any]:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = relax.transform.DecomposeOpsForInference()(
        from_onnx(model, keep_params_in_input=False))
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
    args = [tvm.runtime.tensor(np.require(feeds[n], requirements="C"), tvm.cpu())
            for n in names]
    result = vm["main"](*args)
    values = [result] if len(model.graph.output) == 1 else list(result)
    outputs = {}
    for output, value in zip(model.graph.output, values, strict=True):
        if isinstance(value, tvm.runtime.Tensor):
            outputs[output.name] = value.numpy()
        elif output.type.HasField("sequence_type"):
            outputs[output.name] = [item.numpy() for item in value]
        else:  # a shape tuple for an integer output
            dtype = onnx.helper.tensor_dtype_to_np_dtype(output.type.tensor_type.elem_type)
            outputs[output.name] = np.asarray(list(value), dtype=dtype)
    return outputs


RUNNERS = {"onnxruntime": run_onnxruntime, "openvino": run_openvino, "tvm": run_tvm}


# -- judging ------------------------------------------------------------------------

def _values(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if _is_exotic(array):
        return array.astype(np.float32 if "float" in array.dtype.name else np.int16)
    return array


def outputs_match(expected: list[Any], actual: dict[str, Any], names: list[str],
                  rtol: float, atol: float) -> bool:
    for name, want in zip(names, expected, strict=False):
        if name not in actual:
            return False
        if not _match(want, actual[name], rtol, atol):
            return False
    return True


def _match(want: Any, got: Any, rtol: float, atol: float) -> bool:
    if want is None:
        return got is None
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _match(w, g, rtol, atol) for w, g in zip(want, got, strict=True))
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape:
        return False
    if want.dtype.kind in "OUS":
        return bool(np.all(want == got))
    if want.dtype != got.dtype:
        return False
    if want.dtype.name == "bfloat16":
        rtol = max(rtol, 2.0**-6)  # two bfloat16 ULPs, as onnx's backend test runner allows
    try:
        np.testing.assert_allclose(_values(got).astype(np.float64) if got.dtype.kind != "c"
                                   else got, _values(want).astype(np.float64)
                                   if want.dtype.kind != "c" else want,
                                   rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError:
        return False
    return True


def _child(runtime: str, case_index: int, conn: Any) -> None:
    case = _CASES[case_index]
    try:
        loaded = case.load()
        ok = True
        for data in loaded.data_sets:
            actual = RUNNERS[runtime](loaded.model, data.inputs)
            ok = ok and outputs_match(data.outputs, actual, loaded.output_names,
                                      case.rtol, case.atol)
        conn.send(("pass" if ok else "fail", ""))
    except BaseException as exc:  # the runtime refused: not a pass
        conn.send(("error", f"{type(exc).__name__}: {str(exc)[:200]}"))


def bare_verdict(runtime: str, index: int, timeout: float) -> tuple[str, str]:
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(runtime, index, child))
    process.start()
    child.close()
    if not parent.poll(timeout):
        process.kill()
        process.join()
        return "timeout", ""
    try:
        verdict = parent.recv()
    except EOFError:
        verdict = ("crash", f"exit {process.exitcode}")
    process.join()
    return verdict


def harness_verdicts(run_dir: Path, target: str) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("suite") == "operators" and record["target"] == target:
                verdicts[record["case"]] = record["status"]  # the last attempt wins
    return verdicts


_CASES: list[Any] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--run", type=Path, required=True, help="a harness run folder")
    parser.add_argument("--target", help="the run's target label (default: by runtime)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th case")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="write per-case verdicts here")
    parser.add_argument("--recheck", type=Path, help="an earlier --json: re-run only its "
                        "disagreeing cases and report the merged figure")
    args = parser.parse_args(argv)
    if not (args.run / "records.jsonl").is_file():
        parser.error(f"{args.run} holds no records.jsonl")
    target = args.target or RUNTIME_TARGETS[args.runtime]
    harness = harness_verdicts(args.run, target)
    _CASES.extend(c for c in all_cases() if c.name in harness)
    chosen = list(range(0, len(_CASES), max(args.every, 1)))
    earlier: dict[str, dict[str, Any]] = {}
    if args.recheck:
        earlier = {r["case"]: r for r in json.loads(args.recheck.read_text())}
        chosen = [i for i, c in enumerate(_CASES)
                  if c.name in earlier and not earlier[c.name]["agree"]]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    rows = []
    for n, index in enumerate(chosen, 1):
        case = _CASES[index]
        bare, why = bare_verdict(args.runtime, index, args.timeout)
        ours = harness[case.name]
        agree = (bare == "pass") == (ours == "pass")
        rows.append({"case": case.name, "bare": bare, "harness": ours, "agree": agree,
                     "bare_message": why})
        if not agree:
            print(f"DISAGREE {case.name}: bare {bare} ({why[:120]}), harness {ours}",
                  flush=True)
        if n % 200 == 0:
            print(f"... {n}/{len(chosen)} cases, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
    if earlier:
        rows = list({**earlier, **{r["case"]: r for r in rows}}.values())
    agreed = sum(r["agree"] for r in rows)
    print(f"{args.runtime} vs {target}: {agreed}/{len(rows)} cases agree on pass/not-pass "
          f"({100.0 * agreed / max(len(rows), 1):.2f}%)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
