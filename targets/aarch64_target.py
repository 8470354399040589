"""An aarch64 (Kunpeng/Phytium-class) CPU platform: ``onnxruntime-aarch64``.

onnxruntime's aarch64 build (its own NEON kernels, not the x86 ones) runs in a Debian
arm64 root filesystem under qemu-user (environment ``aarch64``, made by
``shipei env create aarch64``), with the cpuinfo of a Kunpeng 920 core bind-mounted over
``/proc/cpuinfo`` (see :mod:`harness.environments.rootfs`). The architecture is emulated, so its
results are accuracy results; its timings are emulated and no performance figure:
:meth:`placement` and ``capabilities().extra`` say ``emulated: True`` for the
performance suite to refuse or label them.

What computes the numbers is qemu-user: the instructions onnxruntime's aarch64 kernels
may use are those of qemu's CPU model (the hardware capabilities the worker's auxiliary
vector reports, recorded in :meth:`placement`), not a Kunpeng 920's. The Kunpeng cpuinfo
file only lets onnxruntime import; onnxruntime's own cpuinfo library does not recognise
the CPU it describes ("Unknown CPU vendor" on its stderr).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable
from typing import Any

from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities, Executable
from targets.onnxruntime_target import ORT_DTYPES, OnnxRuntimeExecutable
from targets.ort_values import RAW_IO_ADAPTATION
from targets.sdk_target import SdkTarget

EMULATED_ENV = "SHIPEI_EMULATED"


def provide_targets() -> Iterable[TargetSpec]:
    yield TargetSpec(name="onnxruntime-aarch64", factory="targets.aarch64_target:Aarch64Target",
                     summary="onnxruntime's aarch64 build under qemu-user (Debian arm64 root "
                             "filesystem; qemu's CPU model, Kunpeng 920 cpuinfo file)")


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
    computed_by = ("onnxruntime's aarch64 build, executed by qemu-user on an x86-64 host: "
                   "the CPU features are qemu's CPU model's, not a Kunpeng 920's (the "
                   "Kunpeng 920 /proc/cpuinfo is a bind-mounted file, which onnxruntime's "
                   "cpuinfo does not recognise)")

    def capabilities(self) -> Capabilities:
        base = super().capabilities()
        extra = {**base.extra, "architecture": "aarch64", "emulated": True,
                 "timing": "emulated: not a performance figure",
                 "adaptations": [RAW_IO_ADAPTATION]}
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
        placement = {"architecture": platform.machine(), "emulated": True,
                     "emulator": os.environ.get(EMULATED_ENV, "qemu-user"),
                     "computed_by": Aarch64Target.computed_by,
                     "cpu_hwcap": hardware_capabilities(),
                     "timing": "emulated: not a performance figure"}
        if self._raw_io:
            placement["adaptations"] = [RAW_IO_ADAPTATION]
        return placement


#: getauxval(3) keys of the hardware capability words
_AT_HWCAP, _AT_HWCAP2 = 16, 26


def hardware_capabilities() -> dict[str, str]:
    """The AT_HWCAP/AT_HWCAP2 words of this process (under qemu-user: what qemu's CPU
    model offers, whatever /proc/cpuinfo says), in hex; empty when libc cannot say."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return {}
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    return {"AT_HWCAP": hex(getauxval(_AT_HWCAP)), "AT_HWCAP2": hex(getauxval(_AT_HWCAP2))}
