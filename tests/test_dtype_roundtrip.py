"""Every ONNX element type a built-in driver declares crosses pack -> worker -> runtime ->
unpack without loss: an ``Identity`` (or, where the runtime has no Identity kernel for the
type, a ``Cast`` to float and back, or a ``Concat`` of the input with itself) returns every
bit pattern it was given."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.driver.probe import expected_output, probe_models
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost, RemoteError
from harness.verdicts.judge import compare_outputs
from targets.onnxruntime_target import ORT_DTYPES
from targets.openvino_target import OPENVINO_DTYPES
from targets.serial.sim.board import BOARD_DTYPES
from targets.serial.sim.launch import SimProcess
from targets.tvm_target import TVM_DTYPES
from tests.test_worker_wire import same_bits, sample

DRIVERS = {
    "onnxruntime-cpu": (TargetSpec("onnxruntime-cpu", "targets.onnxruntime_target:"
                                   "OnnxRuntimeTarget", {"provider_key": "cpu"}), ORT_DTYPES),
    "openvino-cpu": (TargetSpec("openvino-cpu", "targets.openvino_target:OpenVinoTarget",
                                {"device_key": "cpu"}, ("default", "bf16", "f16")),
                     OPENVINO_DTYPES),
    "tvm-llvm": (TargetSpec("tvm-llvm", "targets.tvm_target:TvmTarget",
                            {"device_key": "llvm"}), TVM_DTYPES),
    # the board simulator over TCP: tensors cross the serial protocol's wire (url added
    # once the simulator serves)
    "serial-board": (TargetSpec("serial-board", "targets.serial.board:SerialBoardTarget"),
                     BOARD_DTYPES),
}
#: the probe model to use where the runtime's other one is broken: OpenVINO 2026.4's CPU
#: Identity on 4-bit tensors corrupts the heap from about 36 elements (glibc "corrupted
#: size vs. prev_size"; bare OpenVINO on f4e2m1 too)
VIA = {("openvino-cpu", name): "Cast" for name in ("float4_e2m1fn", "int4", "uint4")}
VIA["openvino-cpu", "string"] = "Concat"  # its Identity and Cast crash on strings
#: where the runtime itself loses bits, measured on the bare runtime as well
RUNTIME_LOSSY = {("openvino-cpu", "int64"): "OpenVINO's CPU plugin computes int64 in 32 bits "
                                            "(bare OpenVINO: Identity([2**40 + 5]) -> [5])"}


#: the element types every default run crosses on each driver (a float, an integer, bool,
#: string, a type numpy lacks and a sub-byte one); the rest of the sweep runs with
#: --run-slow (each type is one more model compiled by every runtime)
DEFAULT_RUN = frozenset({"float32", "int64", "bool", "string", "bfloat16", "int4"})


def _params() -> list:
    params = []
    for driver, (_, dtypes) in DRIVERS.items():
        for name in dtypes:
            marks = [] if name in DEFAULT_RUN else [pytest.mark.slow]
            if (driver, name) in RUNTIME_LOSSY:
                marks.append(pytest.mark.xfail(reason=RUNTIME_LOSSY[driver, name], strict=True))
            params.append(pytest.param(driver, name, id=f"{driver}-{name}", marks=marks))
    return params


@pytest.fixture(scope="module")
def hosts():
    made: dict[str, ProcessHost] = {}
    simulators: list[SimProcess] = []

    def get(driver: str) -> ProcessHost:
        if driver not in made:
            spec = DRIVERS[driver][0]
            if driver == "serial-board":
                simulators.append(SimProcess("board", "--tcp", "0", lifetime=600))
                spec = dataclasses.replace(spec, kwargs={"url": simulators[-1].url})
            made[driver] = ProcessHost(spec, startup_timeout=120)
        return made[driver]

    yield get
    for host in made.values():
        host.close()
    for simulator in simulators:
        simulator.stop()


def _round_trip(host: ProcessHost, driver: str, name: str, values: np.ndarray) -> None:
    refusals = []
    for op, model in probe_models(name, Capabilities()):
        if VIA.get((driver, name), op) != op or (op == "Concat" and values.ndim == 0):
            continue  # (Concat needs a rank)
        expected = expected_output(op, values)
        try:
            result = host.run_case(f"rt::{name}::{op}::{values.shape}",
                                   _reshaped(model, values.shape, expected.shape),
                                   [{"x": values}], 300)
        except RemoteError as exc:
            refusals.append(f"{op}: {exc}")
            continue
        got = np.asarray(result["outputs"][0]["y"])
        assert got.shape == expected.shape
        if op != "Cast":
            assert same_bits(got, expected), f"{driver} {name}: bits changed"
        else:  # through float: the same ONNX values (NaN payloads may differ)
            verdict = compare_outputs([expected], {"y": got}, ["y"], 0.0, 0.0)
            assert verdict.passed, verdict.message
        return
    pytest.fail(f"{driver} declares {name} but runs no probe model: {refusals}")


@pytest.mark.parametrize(("driver", "name"), _params())
def test_declared_element_type_round_trips(hosts, driver, name):
    _round_trip(hosts(driver), driver, name, sample(name))


@pytest.mark.parametrize("driver", sorted(DRIVERS))
@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "int4"])
def test_zero_dimensional_tensors_round_trip(hosts, driver, name):
    """A 0-d tensor (a Range bound, a scalar attribute input) crosses as well."""
    if name not in DRIVERS[driver][1]:
        pytest.skip(f"{driver} does not declare {name}")
    _round_trip(hosts(driver), driver, name, sample(name, 1).reshape(()))


def _reshaped(model: bytes, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bytes:
    """The probe model with its input declared at ``shape``, its output at ``out_shape``."""
    import onnx

    proto = onnx.load_from_string(model)
    for value, sizes in ((proto.graph.input[0], shape), (proto.graph.output[0], out_shape)):
        dims = value.type.tensor_type.shape
        del dims.dim[:]
        for size in sizes:
            dims.dim.add().dim_value = size
    return proto.SerializeToString()

