"""Harness overhead on the operator suite: ``shipei`` against the bare runtime.

Each round runs, one after the other (interleaved, so machine load hits both
sides alike), fresh processes timed from start to exit:

- **bare**: a Python loop that imports the runtime, loads the same cases, compiles
  each model once and runs its data sets through the runtime's own API, judging
  every output (onnxruntime: ``InferenceSession``; OpenVINO and TVM: the runners
  of ``bench/bare_sweep.py``, which compile once per data set);
- **harness**: ``shipei run --suite operators --target T`` (worker subprocess,
  records, JUnit, reports; with ``--every N``, pytest on those cases' node ids), once
  per pipeline window given by ``--windows`` (``SHIPEI_PIPELINE_WINDOW``; 0 is one
  request at a time).

It prints every side's median over ``--rounds`` and the ratio harness/bare.

    python bench/operators_overhead.py [--target onnxruntime-cpu] [--rounds 3]
        [--windows 64] [--isolation process|inline] [--every N] [--profile out.prof]
        [--intra-op-threads 1]

On a busy machine onnxruntime's default intra-op thread pool (its threads spin after
each run) slows the bare loop, whose Python thread shares the process with them, far
more than the harness, whose worker holds them: ``--intra-op-threads 1`` sets one
thread on both sides and gives the fairer ratio there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUNTIMES = {"onnxruntime-cpu": "onnxruntime", "openvino-cpu": "openvino", "tvm-llvm": "tvm"}
TEST_FILE = "suites/operators/test_operators.py"


# -- the bare side (runs in its own process: python operators_overhead.py --bare ...) --

def _close(want: Any, got: Any, rtol: float, atol: float) -> bool:
    """The cheapest correct check (so the bare side is not slowed by its judge): same
    shape and dtype, then ``numpy.allclose`` (NaN equal to NaN) or exact equality."""
    import numpy as np
    from bare_sweep import _values

    if want is None or isinstance(want, list):
        return (got is None) if want is None else isinstance(got, list) and len(got) == len(
            want) and all(_close(w, g, rtol, atol) for w, g in zip(want, got, strict=True))
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape or want.dtype != got.dtype:
        return False
    if want.dtype.kind in "fc" or _values(want) is not want:
        return bool(np.allclose(_values(got), _values(want), rtol=rtol, atol=atol,
                                equal_nan=True))
    return bool(np.array_equal(want, got))


def outputs_match(expected: list[Any], actual: dict[str, Any], names: list[str],
                  rtol: float, atol: float) -> bool:
    return all(name in actual and _close(want, actual[name], rtol, atol)
               for name, want in zip(names, expected, strict=False))


def _onnxruntime_loop(cases: list[Any]) -> int:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(os.environ.get("BENCH_INTRA_OP_THREADS", "0"))
    passed = 0
    for case in cases:
        loaded = case.load()
        try:
            model = loaded.model_bytes or loaded.model.SerializeToString()
            session = ort.InferenceSession(model, options,
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            ok = True
            for data in loaded.data_sets:
                feeds = {k: v for k, v in data.inputs.items() if v is not None}
                actual = dict(zip(names, session.run(names, feeds), strict=True))
                ok = outputs_match(data.outputs, actual, loaded.output_names, case.rtol,
                                   case.atol) and ok
            passed += ok
        except Exception:  # noqa: S112 - the harness records these as errors; so do we
            continue
    return passed


def _runner_loop(runtime: str, cases: list[Any]) -> int:
    from bare_sweep import RUNNERS

    run, passed = RUNNERS[runtime], 0
    for case in cases:
        loaded = case.load()
        try:
            passed += all(outputs_match(d.outputs, run(loaded.model, d.inputs),
                                        loaded.output_names, case.rtol, case.atol)
                          for d in loaded.data_sets)
        except Exception:  # noqa: S112
            continue
    return passed


def bare_main(runtime: str, every: int) -> None:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from suites.operators.onnx_cases import all_cases

    cases = all_cases()[::every]
    started = time.perf_counter()
    passed = (_onnxruntime_loop(cases) if runtime == "onnxruntime"
              else _runner_loop(runtime, cases))
    print(json.dumps({"cases": len(cases), "passed": passed,
                      "loop_s": time.perf_counter() - started}))


# -- the controller --------------------------------------------------------------------

def _node_ids(target: str, every: int) -> list[str]:
    if every == 1:
        return [TEST_FILE]
    sys.path.insert(0, str(REPO))
    from suites.operators.onnx_cases import all_cases

    return [f"{TEST_FILE}::{c.name}[{target}]" for c in all_cases()[::every]]


@dataclass
class Timed:
    wall_s: float
    cpu_s: float  # user + system of the process and every descendant it waited for
    stdout: str


def _timed(argv: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``argv`` with its output in a file (so neither side pays for a slow reader)."""
    with tempfile.TemporaryFile("w+") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                              text=True, env=os.environ | (env or {}), check=False)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        text = out.read()
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({done.returncode}):\n"
                         f"{text[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(elapsed, cpu, text)


def bare_run(target: str, every: int) -> tuple[Timed, dict[str, Any]]:
    timed = _timed([sys.executable, __file__, "--bare", RUNTIMES[target], "--every", str(every)])
    return timed, json.loads(timed.stdout.strip().splitlines()[-1])


def harness_command(target: str, isolation: str, node_ids: list[str], results: str,
                    reports: str, profiled: bool = False) -> list[str]:
    """What the harness side runs: ``shipei run --suite operators`` (the README's first
    command) for the whole suite; pytest on the chosen node ids for a sample of it, and
    under cProfile (``shipei run`` ends its process before cProfile could write)."""
    where = ["--results-dir", results, "--reports-dir", reports]
    if node_ids == [TEST_FILE] and not profiled:
        return ["-m", "harness", "run", "--suite", "operators", "--target", target,
                "--isolation", isolation, *where]
    return ["-m", "pytest", *node_ids, "--target", target, "--isolation", isolation, "-q",
            "-p", "no:cacheprovider", "--no-header", *where]


def harness_run(target: str, isolation: str, window: int, node_ids: list[str],
                profile: str | None = None) -> Timed:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
        command = harness_command(target, isolation, node_ids, f"{tmp}/results",
                                  f"{tmp}/reports", profiled=profile is not None)
        return _timed([*prefix, *command], env={"SHIPEI_PIPELINE_WINDOW": str(window)})


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _line(name: str, runs: list[Timed], bare: list[Timed]) -> str:
    """Median wall and CPU seconds of ``runs``, and their ratios to the bare side's."""
    wall, cpu = [r.wall_s for r in runs], [r.cpu_s for r in runs]
    bare_wall = statistics.median(r.wall_s for r in bare)
    bare_cpu = statistics.median(r.cpu_s for r in bare)
    paired = statistics.median(r.wall_s / b.wall_s for r, b in zip(runs, bare, strict=True))
    return (f"{name:<22} wall {statistics.median(wall):7.2f} s (runs {_seconds(wall)}; "
            f"ratio {statistics.median(wall) / bare_wall:.3f}, per-round {paired:.3f})   "
            f"cpu {statistics.median(cpu):7.2f} s (ratio {statistics.median(cpu) / bare_cpu:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(RUNTIMES), default="onnxruntime-cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", default="64",
                        help="comma-separated pipeline windows to time (default 64)")
    parser.add_argument("--isolation", choices=("process", "inline"), default="process")
    parser.add_argument("--every", type=int, default=1, help="take every N-th case")
    parser.add_argument("--profile", help="cProfile the last harness run into this file")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="onnxruntime intra-op threads on both sides (default: its own)")
    parser.add_argument("--target-options", default="",
                        help="more target options for the harness side, e.g. cache=false "
                             "(TVM: compile every case, as the bare side does)")
    parser.add_argument("--bare", choices=sorted(set(RUNTIMES.values())), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_main(args.bare, args.every)
        return
    windows = [int(w) for w in args.windows.split(",")]
    if args.intra_op_threads:
        os.environ["BENCH_INTRA_OP_THREADS"] = str(args.intra_op_threads)
    label = args.target + (f",intra_op_threads={args.intra_op_threads}"
                           if args.intra_op_threads else "") + (
        f",{args.target_options}" if args.target_options else "")
    node_ids = _node_ids(label, args.every)
    bare_run(args.target, args.every)  # warm the case cache and the page cache
    bare_runs: list[Timed] = []
    loop_times: list[float] = []
    harness_runs: dict[int, list[Timed]] = {w: [] for w in windows}
    for round_number in range(args.rounds):
        timed, bare = bare_run(args.target, args.every)
        bare_runs.append(timed)
        loop_times.append(bare["loop_s"])
        for window in windows:
            harness_runs[window].append(harness_run(label, args.isolation, window, node_ids))
        print(f"round {round_number + 1}: bare {timed.wall_s:.2f} s, "
              + ", ".join(f"window {w}: {t[-1].wall_s:.2f} s" for w, t in harness_runs.items()),
              file=sys.stderr, flush=True)
    if args.profile:  # an extra run: cProfile's own cost stays out of the figures
        harness_run(label, args.isolation, windows[-1], node_ids, args.profile)
    print(f"\ntarget: {label}   cases: {bare['cases']} (bare passed {bare['passed']})   "
          f"rounds: {args.rounds}   isolation: {args.isolation}   "
          f"load average at end: {os.getloadavg()[0]:.1f}")
    print(_line(f"bare {RUNTIMES[args.target]}", bare_runs, bare_runs)
          + f"   (loop alone, after imports and the case list: "
            f"{statistics.median(loop_times):.2f} s)")
    for window, runs in harness_runs.items():
        print(_line(f"shipei, window {window}", runs, bare_runs))
    print("goal: ratio <= 1.3 (issue 14), <= 1.05 eventually")


if __name__ == "__main__":
    main()
