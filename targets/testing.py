"""Test-only targets that misbehave on purpose, to prove the harness survives them.

They are *not* registered through the entry-point group (``shipei targets`` does
not list them). Tests enable them with ``SHIPEI_PLUGINS=targets.testing:provide_targets``.

``shipei-faulty`` wraps onnxruntime on the CPU and misbehaves when the model
contains ``trigger_op`` (every model if it is ``*``; ``A|B`` names several ops)::

    --target shipei-faulty,fault=abort,trigger_op=Abs

Faults: ``abort`` (``os.abort()``), ``segfault`` (a real NULL dereference via
ctypes), ``hang`` (sleeps ``hang_s`` seconds), ``wrong`` (adds ``offset`` to every
floating-point output), ``raise`` (raises ``RuntimeError``), ``slow`` (sleeps
``delay_ms`` inside every run: the injected slowdown of the performance tests),
``leak`` (keeps ``leak_mb`` MiB per compile alive), ``flaky`` (the first triggered
run raises, later ones pass; with ``flaky_marker=PATH`` "first" spans processes, for
retry tests), ``codec_gap`` (raises the harness's ``TensorCodecError`` for inputs of
element type ``gap_dtype``: a driver that cannot carry a type), ``none``.
``describe_delay_s`` makes describing the target (what ``run.json`` records, on the
run's first record) that much slower, as a first capability probe can be.
``emulated=true`` declares the target emulated (its timings are then refused by the
performance suite).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.driver.registry import TargetSpec
from harness.driver.target import Availability, Capabilities, Executable, Target, TargetIdentity
from harness.isolation.tensors import TensorCodecError

FAULTS = ("abort", "segfault", "hang", "wrong", "raise", "slow", "leak", "flaky", "codec_gap",
          "none")
_LEAKED: list[bytearray] = []


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="shipei-faulty", factory="targets.testing:FaultyTarget",
                     summary="test-only: onnxruntime CPU with an injected fault")


def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV in this process


class FaultyExecutable(Executable):
    def __init__(self, inner: Executable, target: FaultyTarget, triggered: bool) -> None:
        self.inner = inner
        self.target = target
        self.triggered = triggered

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        fault = self.target.fault if self.triggered else "none"
        if fault == "abort":  # dies as a C++ runtime does: its last words, then SIGABRT
            os.write(2, b"terminate called after throwing an instance of 'injected_fault'\n")
            os.abort()
        if fault == "segfault":
            _segfault()
        if fault == "hang":
            time.sleep(self.target.hang_s)
        if fault == "raise":
            raise RuntimeError("injected failure")
        if fault == "flaky" and self.target.first_attempt():
            raise RuntimeError("injected flaky failure (first attempt)")
        if fault == "slow":
            time.sleep(self.target.delay_ms / 1000.0)
        if fault == "codec_gap" and any(getattr(v, "dtype", None) is not None
                                        and v.dtype.name == self.target.gap_dtype
                                        for v in inputs.values()):
            raise TensorCodecError(f"the test driver cannot carry {self.target.gap_dtype}")
        outputs = self.inner.run(inputs)
        if fault == "wrong":
            outputs = {k: (v + np.asarray(self.target.offset, dtype=v.dtype)
                           if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                       for k, v in outputs.items()}
        return outputs

    def placement(self) -> dict[str, Any]:
        return self.inner.placement()

    def close(self) -> None:
        self.inner.close()


class FaultyTarget(Target):
    def __init__(self, configuration: str = "default", fault: str = "none",
                 trigger_op: str = "*", hang_s: float = 3600.0, offset: float = 0.5,
                 delay_ms: float = 5.0, leak_mb: int = 8, flaky_marker: str = "",
                 emulated: bool = False, simulated: bool = False,
                 gap_dtype: str = "int4", describe_delay_s: float = 0.0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {fault!r}")
        from targets.onnxruntime_target import OnnxRuntimeTarget

        self.inner = OnnxRuntimeTarget("cpu", intra_op_threads=1)
        self.configuration = configuration
        self.fault = fault
        self.trigger_op = trigger_op
        self.hang_s = float(hang_s)
        self.offset = float(offset)
        self.delay_ms = float(delay_ms)
        self.leak_mb = int(leak_mb)
        self.flaky_marker = str(flaky_marker)
        self.gap_dtype = str(gap_dtype)
        self.describe_delay_s = float(describe_delay_s)
        self.emulated = bool(emulated)  # claims to run under an emulator (performance tests)
        self.simulated = bool(simulated)  # claims to be a chip's simulator (performance tests)
        self._failed_once = False

    def first_attempt(self) -> bool:
        """True once: the first triggered run fails, later ones (also in a later process,
        through the ``flaky_marker`` file) pass."""
        marker = Path(self.flaky_marker) if self.flaky_marker else None
        if marker is not None:
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                return False
            return True
        if self._failed_once:
            return False
        self._failed_once = True
        return True

    @property
    def identity(self) -> TargetIdentity:
        inner = self.inner.identity
        return TargetIdentity(
            name="shipei-faulty", kind="framework", vendor="Shipei test fixtures",
            driver_version=inner.driver_version, runtime=inner.runtime,
            runtime_version=inner.runtime_version, device="cpu",
            configuration=f"fault={self.fault},trigger_op={self.trigger_op}",
            driver_distribution="shipei",
        )

    def availability(self) -> Availability:
        return self.inner.availability()

    def describe(self) -> dict[str, Any]:
        time.sleep(self.describe_delay_s)
        return super().describe()

    def capabilities(self) -> Capabilities:
        caps = self.inner.capabilities()
        claims = {"emulated": self.emulated, "simulator": self.simulated}
        if not any(claims.values()):
            return caps
        return dataclasses.replace(caps, extra={**caps.extra, **{
            flag: True for flag, claimed in claims.items() if claimed}})

    def compile(self, model: bytes) -> Executable:
        ops = {node.op_type for node in onnx.load_from_string(model).graph.node}
        triggered = self.trigger_op == "*" or bool(ops & set(self.trigger_op.split("|")))
        if triggered and self.fault == "leak":
            _LEAKED.append(bytearray(self.leak_mb * 1024 * 1024))
        return FaultyExecutable(self.inner.compile(model), self, triggered)
