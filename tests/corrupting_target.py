"""A test-only target whose runtime one case corrupts, so the next case aborts.

``shipei-corrupting`` is onnxruntime on the CPU. Compiling a model that contains
``corrupt_op`` leaves the worker "corrupted"; compiling a model with ``victim_op`` in a
corrupted worker then aborts (as nncase's ``test_convtranspose_1d`` does after
``test_constant_pad_axes``), while the same case passes in a fresh worker. With
``corrupt_op=*`` the worker is corrupted from its start (the victim always aborts); with
``crash_once_marker=PATH`` the victim also aborts once on its own (the marker file
records that it did), for a crash no earlier case caused. The corrupting case prints an
error-like warning to stderr; ``silent=true`` makes the victim die without last words.
``start_delay_s`` makes a worker that long to start (as an emulator is), in the worker
only (the test process builds the target too). Enabled with
``SHIPEI_PLUGINS=tests.corrupting_target:provide_targets``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import onnx

from harness.driver.registry import TargetSpec
from harness.driver.target import Executable
from targets.testing import FaultyTarget

PLUGINS = {"SHIPEI_PLUGINS": "tests.corrupting_target:provide_targets"}
_STATE = {"corrupted": False}


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="shipei-corrupting", factory="tests.corrupting_target:CorruptingTarget",
                     summary="test-only: onnxruntime CPU that one case leaves corrupted")


class CorruptingTarget(FaultyTarget):
    def __init__(self, configuration: str = "default", corrupt_op: str = "Abs",
                 victim_op: str = "Neg", crash_once_marker: str = "",
                 silent: bool = False, start_delay_s: float = 0.0) -> None:
        super().__init__(configuration)
        self.corrupt_op = corrupt_op
        self.victim_op = victim_op
        self.crash_once_marker = crash_once_marker
        self.silent = str(silent).lower() in ("1", "true", "yes")
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        if main is not None and main.name == "harness.isolation.worker_main":
            time.sleep(float(start_delay_s))
        if corrupt_op == "*":
            _STATE["corrupted"] = True

    def _crash_once(self) -> bool:
        if not self.crash_once_marker:
            return False
        try:
            Path(self.crash_once_marker).touch(exist_ok=False)
        except FileExistsError:
            return False
        return True

    def compile(self, model: bytes) -> Executable:
        ops = {node.op_type for node in onnx.load_from_string(model).graph.node}
        if self.victim_op in ops and (_STATE["corrupted"] or self._crash_once()):
            if not self.silent:
                print("free(): corrupted heap state detected", file=sys.stderr, flush=True)
            os.abort()
        if self.corrupt_op in ops:
            _STATE["corrupted"] = True
            print(f"error: {self.corrupt_op} left the heap in a state (a warning)",
                  file=sys.stderr, flush=True)
        return super().compile(model)
