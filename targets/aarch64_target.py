"""An aarch64 (Kunpeng/Phytium-class) CPU platform: ``onnxruntime-aarch64``.

onnxruntime's aarch64 build (its own NEON kernels, not the x86 ones) runs in a Debian
arm64 root filesystem under qemu-user (environment ``aarch64``, made by
``shipei env create aarch64``), with the cpuinfo of a Kunpeng 920 core bind-mounted over
``/proc/cpuinfo`` (see :mod:`harness.rootfs`). The architecture is emulated, so its
results are accuracy results; its timings are emulated and no performance figure:
:meth:`placement` and ``capabilities().extra`` say ``emulated: True`` for the
performance suite to refuse or label them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Any

from harness.registry import TargetSpec
from harness.target import Capabilities, Executable
from targets.onnxruntime_target import ORT_DTYPES, OnnxRuntimeExecutable
from targets.sdk_target import SdkTarget

EMULATED_ENV = "SHIPEI_EMULATED"


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="onnxruntime-aarch64", factory="targets.aarch64_target:Aarch64Target",
                     summary="onnxruntime's aarch64 build on an emulated Kunpeng-class CPU "
                             "(Debian arm64 root filesystem under qemu-user)")


class Aarch64Target(SdkTarget):
    name = "onnxruntime-aarch64"
    environment = "aarch64"
    vendor = "Microsoft"
    runtime = "onnxruntime"
    distribution = "onnxruntime"
    device = "cpu"
    opset_max = 28
    dtypes = ORT_DTYPES
    tensors_only = False  # onnxruntime takes and returns sequences and optionals

    def capabilities(self) -> Capabilities:
        base = super().capabilities()
        extra = {**base.extra, "architecture": "aarch64", "emulated": True,
                 "timing": "emulated: not a performance figure"}
        return Capabilities(opset_min=1, opset_max=base.opset_max, dtypes=base.dtypes,
                            devices=base.devices, precision=base.precision, extra=extra)

    def probe(self) -> str:
        import onnxruntime

        if platform.machine() != "aarch64":
            raise RuntimeError(f"the worker runs on {platform.machine()}, not aarch64")
        return str(onnxruntime.__version__)

    def build(self, model: bytes) -> Executable:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(model, sess_options=options,
                                       providers=["CPUExecutionProvider"])
        return _EmulatedExecutable(session)


class _EmulatedExecutable(OnnxRuntimeExecutable):
    def __init__(self, session: Any) -> None:
        super().__init__(session, profile_placement=False)

    def placement(self) -> dict[str, Any]:
        return {"architecture": platform.machine(), "emulated": True,
                "emulator": os.environ.get(EMULATED_ENV, "qemu-user"),
                "timing": "emulated: not a performance figure"}
