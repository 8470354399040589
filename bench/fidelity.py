"""Fidelity: does the harness's single-stream p50 equal what the runtimes' own tools see?

For every model, on ``onnxruntime-cpu`` and ``openvino-cpu``, interleaved in one
process, round after round:

- **harness**: ``harness.perf.measure.measure_case`` through a worker subprocess
  (``ProcessHost``), MLPerf LoadGen single-stream, the suite's own code path,
  which times the driver's ``Executable.run_prepared`` (inputs prepared once
  before timing; outputs returned as ``run`` returns them);
- **bare**: the cheapest Python call of each runtime in a loop in this process
  (``InferenceSession.run``; OpenVINO: ``set_input_tensor`` of tensors sharing
  the prepared arrays, then ``InferRequest.infer()``), same model bytes, same
  inputs, same thread and precision settings, same warm-up and duration, p50 by
  the same rule (element floor(n/2) of the sorted times);
- **benchmark_app** (OpenVINO only): the wheel's own tool, ``-api sync``, the
  target's compile config via ``-load_config``, ``-inference_only``, same input
  shape (the model stays dynamic, as the harness compiles it). Its figure is
  OpenVINO's own per-request latency (``InferRequest.latency``, timed in C++),
  so the Python call around ``infer`` is not in it.

The harness and the bare loops cycle through the same prepared inputs.

Prints, per model and target, the medians over rounds and the median of the
per-round ratios harness/bare and harness/benchmark_app (goal: 0.97-1.03).

    python bench/fidelity.py [--models mlp,convnet,...] [--rounds 3] [--duration 3]
                             [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.driver.registry import discover  # noqa: E402
from harness.isolation.host import ProcessHost  # noqa: E402
from harness.perf.measure import measure_case  # noqa: E402
from harness.perf.settings import SINGLE_STREAM, ScenarioSettings  # noqa: E402
from suites.performance.cases import case_for  # noqa: E402

DEFAULT_MODELS = ("mlp", "convnet", "encoder", "ppocr_mobile_cls", "light_shufflenet")
GOAL = (0.97, 1.03)


def p50_ms(latency_ns: list[int]) -> float:
    ordered = sorted(latency_ns)
    return ordered[len(ordered) // 2] / 1e6


def timed_loop(run: Callable[[Any], Any], feeds: list[Any], warmup_s: float,
               duration_s: float) -> float:
    """Warm up, then time ``run`` over ``feeds`` in turn for ``duration_s``; the p50 in ms."""
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < warmup_s:
        run(feeds[count % len(feeds)])
        count += 1
    times: list[int] = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration_s or len(times) < 64:
        feed = feeds[len(times) % len(feeds)]
        begin = time.perf_counter_ns()
        run(feed)
        times.append(time.perf_counter_ns() - begin)
    return p50_ms(times)


def bare_onnxruntime(model: bytes, feeds: list[dict[str, np.ndarray]], threads: int,
                     warmup_s: float, duration_s: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 0
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return timed_loop(lambda feed: session.run(names, feed), feeds, warmup_s, duration_s)


def openvino_config(threads: int) -> dict[str, Any]:
    """What targets/openvino_target.py compiles with for ``openvino-cpu,threads=N``."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def bare_openvino(model: bytes, feeds: list[dict[str, np.ndarray]], threads: int,
                  warmup_s: float, duration_s: float) -> float:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model, b""), "CPU", openvino_config(threads))
    request = compiled.create_infer_request()
    # the cheapest call: tensors wrapping the prepared arrays, set, then infer()
    tensors = [[ov.Tensor(np.ascontiguousarray(value), shared_memory=True)
                for value in feed.values()] for feed in feeds]

    def run(inputs: list[Any]) -> None:
        for index, tensor in enumerate(inputs):
            request.set_input_tensor(index, tensor)
        request.infer()

    return timed_loop(run, tensors, warmup_s, duration_s)


def benchmark_app(model: bytes, feed: dict[str, np.ndarray], threads: int,
                  duration_s: float) -> float:
    """OpenVINO's benchmark_app median latency in ms, with the target's settings."""
    tool = Path(sys.executable).parent / "benchmark_app"
    command = [str(tool)] if tool.exists() else [sys.executable, "-m",
                                                 "openvino.tools.benchmark.main"]
    with tempfile.TemporaryDirectory(prefix="shipei-fidelity-") as folder:
        model_path, config_path = Path(folder) / "model.onnx", Path(folder) / "config.json"
        model_path.write_bytes(model)
        config = {k: str(v) for k, v in openvino_config(threads).items()}
        config_path.write_text(json.dumps({"CPU": config}))
        shapes = ",".join(f"{name}{list(value.shape)}".replace(" ", "")
                          for name, value in feed.items())
        proc = subprocess.run(
            [*command, "-m", str(model_path), "-d", "CPU", "-api", "sync", "-load_config",
             str(config_path), "-data_shape", shapes, "-inference_only", "true",
             "-t", str(max(1, round(duration_s)))],
            capture_output=True, text=True, timeout=600, check=False)
    match = re.search(r"Median:\s+([\d.]+)\s*(us|ms)", proc.stdout)
    if proc.returncode != 0 or match is None:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"benchmark_app failed ({proc.returncode}): {' | '.join(tail)}")
    value = float(match.group(1))
    return value / 1000.0 if match.group(2) == "us" else value


class HarnessTarget:
    """One warm worker per target, as ``shipei run`` keeps one per target."""

    def __init__(self, label: str, options: dict[str, Any]) -> None:
        registry = discover()
        spec = registry.spec(label)
        self.caps = spec.build("default", options).capabilities()
        self.host = ProcessHost(spec, "default", options)

    def p50(self, name: str, settings: ScenarioSettings) -> tuple[float, dict[str, Any]]:
        case = replace(case_for(name, SINGLE_STREAM), settings=settings)
        outcome = measure_case(case, self.host, self.caps, timeout=900).outcome
        if outcome.status != "pass":
            raise RuntimeError(f"harness: {outcome.status}: {outcome.message}")
        return outcome.metrics["summary"]["p50_ms"], outcome.metrics["machine"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-benchmark-app", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = ScenarioSettings(SINGLE_STREAM, warmup_s=args.warmup, min_duration_s=args.duration,
                                min_queries=64)
    targets = {
        "onnxruntime-cpu": HarnessTarget("onnxruntime-cpu", {"intra_op_threads": args.threads}),
        "openvino-cpu": HarnessTarget("openvino-cpu", {"threads": args.threads}),
    }
    workloads = {m: case_for(m, SINGLE_STREAM).load(settings) for m in models}
    runs: dict[tuple[str, str, str], list[float]] = {}
    foreign: list[float] = []

    def measure(model: str, target: str, tool: str) -> None:
        load = workloads[model]
        feeds, model_bytes = load.feeds, load.model.SerializeToString()
        if tool == "harness":
            value, machine = targets[target].p50(model, settings)
            if machine.get("foreign_cpu_share") is not None:
                foreign.append(machine["foreign_cpu_share"])
        elif tool == "bare" and target == "onnxruntime-cpu":
            value = bare_onnxruntime(model_bytes, feeds, args.threads, args.warmup,
                                     args.duration)
        elif tool == "bare":
            value = bare_openvino(model_bytes, feeds, args.threads, args.warmup, args.duration)
        else:
            value = benchmark_app(model_bytes, feeds[0], args.threads, args.duration)
        runs.setdefault((model, target, tool), []).append(value)
        print(f"  {model:18s} {target:16s} {tool:14s} p50 {value:9.4f} ms", flush=True)

    plan = [(m, t, tool) for m in models for t in targets
            for tool in ("harness", "bare", "benchmark_app")
            if not (tool == "benchmark_app" and (t != "openvino-cpu" or args.no_benchmark_app))]
    try:
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
            shift = round_index % len(plan)
            for model, target, tool in plan[shift:] + plan[:shift]:  # rotate the order
                measure(model, target, tool)
    finally:
        for target in targets.values():
            target.host.close()
    rows = table(models, list(targets), runs)
    print_table(rows, foreign)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "foreign_cpu_share": foreign, "rows": rows,
                                         "cpu_count": os.cpu_count()}, indent=2))
    return 0


def _ratio(runs: dict[tuple[str, str, str], list[float]], key: tuple[str, str], other: str
           ) -> dict[str, float] | None:
    mine, theirs = runs.get((*key, "harness")), runs.get((*key, other))
    if not mine or not theirs:
        return None
    ratios = [a / b for a, b in zip(mine, theirs, strict=False)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "of_best": min(mine) / min(theirs)}


def table(models: list[str], targets: list[str], runs: dict[tuple[str, str, str], list[float]]
          ) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        for target in targets:
            key = (model, target)
            row: dict[str, Any] = {"model": model, "target": target}
            for tool in ("harness", "bare", "benchmark_app"):
                values = runs.get((*key, tool))
                row[f"{tool}_p50_ms"] = statistics.median(values) if values else None
            row["vs_bare"] = _ratio(runs, key, "bare")
            row["vs_benchmark_app"] = _ratio(runs, key, "benchmark_app")
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], foreign: list[float]) -> None:
    def ratio(value: dict[str, float] | None) -> str:
        if value is None:
            return "-"
        flag = "" if GOAL[0] <= value["median"] <= GOAL[1] else " *"
        return (f"{value['median']:.3f} [{value['min']:.3f}-{value['max']:.3f}] "
                f"best {value['of_best']:.3f}{flag}")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    header = ("model", "target", "harness p50 ms", "bare p50 ms", "benchmark_app ms",
              "harness/bare", "harness/benchmark_app")
    lines = [header] + [(r["model"], r["target"], ms(r["harness_p50_ms"]), ms(r["bare_p50_ms"]),
                         ms(r["benchmark_app_p50_ms"]), ratio(r["vs_bare"]),
                         ratio(r["vs_benchmark_app"])) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    print(f"ratios: median of the per-round ratios [min-max], and the ratio of the lowest "
          f"p50s (best); * median outside the goal {GOAL[0]}-{GOAL[1]}")
    if foreign:
        print(f"other processes used {min(foreign):.0%}-{max(foreign):.0%} of the CPU during "
              "the harness's measurements" + (" (not alone: figures are indicative)"
                                              if max(foreign) >= 0.05 else ""))


if __name__ == "__main__":
    sys.exit(main())
