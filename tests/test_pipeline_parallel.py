"""Compile-bound targets get every core from ``shipei run`` when ``-n`` is not given."""

from __future__ import annotations

import importlib.util

import pytest

from harness.cli.cmd_run import pytest_arguments
from harness.cli.main import build_parser
from harness.run import parallelism
from harness.run.parallelism import compile_bound, default_numprocesses

needs_xdist = pytest.mark.skipif(importlib.util.find_spec("xdist") is None,
                                 reason="pytest-xdist is not installed")
needs_tvm = pytest.mark.skipif(importlib.util.find_spec("tvm") is None,
                               reason="apache-tvm is not installed")


def test_onnxruntime_is_not_compile_bound():
    assert compile_bound(["onnxruntime-cpu"]) == []
    assert default_numprocesses(["onnxruntime-cpu"]) is None


def test_an_unknown_target_is_left_to_the_run_to_report():
    assert compile_bound(["no-such-target"]) == []


@needs_tvm
@needs_xdist
def test_tvm_runs_on_every_core_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(parallelism, "idle_cores", lambda: 2.0)
    assert compile_bound(["onnxruntime-cpu", "tvm-llvm"]) == ["tvm-llvm"]
    assert default_numprocesses(["tvm-llvm"]) == "auto"
    assert default_numprocesses(["tvm-llvm"], ["-n", "0"]) is None
    parse = build_parser().parse_args
    argv = pytest_arguments(parse(["run", "--suite", "operators", "--target", "tvm-llvm"]))
    assert argv[argv.index("-n") + 1] == "auto"
    argv = pytest_arguments(parse(["run", "--suite", "operators", "--target", "tvm-llvm",
                                   "-n", "1"]))
    assert argv[argv.index("-n") + 1] == "1"
    argv = pytest_arguments(parse(["run", "--suite", "operators", "--target",
                                   "onnxruntime-cpu"]))
    assert "-n" not in argv


@needs_tvm
@needs_xdist
def test_a_busy_machine_keeps_one_process(monkeypatch):
    monkeypatch.setattr(parallelism, "idle_cores", lambda: 0.5)
    assert default_numprocesses(["tvm-llvm"]) is None
