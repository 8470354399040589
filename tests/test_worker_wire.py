"""The version-neutral worker wire: raw-bit tensors, frames, and a worker under numpy 1.x."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cases.case import Case, DataSet, LoadedCase, execute_case
from harness.driver.registry import TargetSpec
from harness.driver.target import Capabilities
from harness.isolation.host import ProcessHost, RemoteError
from harness.isolation.tensors import (
    ELEMENT_TYPES,
    TensorCodecError,
    from_packed_bytes,
    from_storage_bits,
    numpy_dtype,
    packed_bytes,
    storage_bits,
)
from harness.isolation.wire import WireError, decode, encode, frame, message
from tests import foreign_env

ORT = TargetSpec(name="onnxruntime-cpu", factory="targets.onnxruntime_target:OnnxRuntimeTarget",
                 kwargs={"provider_key": "cpu"})


def sample(name: str, count: int = 37) -> np.ndarray:
    """Every bit pattern of the small types (NaNs and infinities included), a spread of
    values for the wide ones; an odd count so packed types have a half-filled last byte."""
    kind = ELEMENT_TYPES[name]
    if name == "string":
        return np.array(["", "ab", "长", "x" * 5], dtype=object).reshape(2, 2)
    if name.startswith("complex"):
        return (np.arange(count) + 1j * np.arange(count)[::-1]).astype(name).reshape(1, count)
    if kind.bits <= 16:
        codes = np.arange(count * 3, dtype=np.uint32) * 7919 % (1 << kind.bits)
        return from_storage_bits(codes[:count].astype(kind.storage), name).reshape(1, count)
    rng = np.random.default_rng(kind.onnx)
    return rng.integers(0, 2**62, size=count).astype(kind.storage).view(name).reshape(count, 1)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "O" or a.dtype.name.startswith("complex"):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            np.all((a == b) | ((a != a) & (b != b))))
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        storage_bits(a), storage_bits(b))


NUMERIC = sorted(n for n in ELEMENT_TYPES if n != "string")


@pytest.mark.parametrize("name", NUMERIC)
def test_packed_bytes_are_onnx_raw_data(name):
    array = sample(name)
    tensor = numpy_helper.from_array(array)
    assert tensor.data_type == ELEMENT_TYPES[name].onnx
    assert packed_bytes(array) == tensor.raw_data
    back = from_packed_bytes(name, array.shape, tensor.raw_data)
    assert same_bits(back, array)
    assert same_bits(numpy_helper.to_array(tensor), back)


@pytest.mark.parametrize("name", sorted(ELEMENT_TYPES))
def test_every_element_type_crosses_a_frame_bit_exact(name):
    array = sample(name)
    header, buffers = encode({"x": array, "scalar": array.reshape(-1)[0]})
    pieces = frame(header, buffers)
    assert pieces[0].startswith(b"SHPW")
    value = decode(header, [memoryview(b) for b in buffers])
    assert same_bits(value["x"], array)
    if name != "string":  # an element of an object array is a plain str
        assert np.asarray(value["scalar"]).dtype == array.dtype


def test_plain_values_keep_their_types():
    value = {"t": (1, 2.5, None), "b": b"\x00\xff", "nan": math.nan, "inf": -math.inf,
             "ints": {1: "one", "$x": 2}, "f32": np.float32(1.5), "nested": [[True, "s"]]}
    header, buffers = encode(value)
    back = decode(header, [memoryview(b) for b in buffers])
    assert back["t"] == (1, 2.5, None) and back["b"] == b"\x00\xff"
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["ints"] == {1: "one", "$x": 2}
    assert type(back["f32"]) is np.float32 and back["nested"] == [[True, "s"]]


def test_what_no_wire_carries_is_refused():
    with pytest.raises(WireError, match="cannot carry"):
        message({"x": object()})
    with pytest.raises(TensorCodecError):
        numpy_dtype("float13")


def _neg_case(ir_version: int = 8) -> Case:
    def load() -> LoadedCase:
        graph = helper.make_graph(
            [helper.make_node("Neg", ["x"], ["y"])], "wire_neg",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  ir_version=ir_version)
        x = np.array([[-1.5, 0.0, 2.0], [3.25, -4.0, 0.5]], dtype=np.float32)
        return LoadedCase(model, [DataSet({"x": x}, [-x])])

    return Case(suite="wire", name="test_neg", load=load)


@pytest.fixture
def local_host():
    host = ProcessHost(ORT, startup_timeout=60)
    yield host
    host.close()


def test_stdout_chatter_in_the_worker_does_not_corrupt_frames(local_host):
    case = _neg_case()
    local_host.compile("k", case.load().model.SerializeToString(), 60)
    assert local_host.call("tests.foreign_env:shout", "k", None, 60) == "answered"
    assert execute_case(case, local_host, Capabilities(), timeout=60).status == "pass"


def test_an_unsendable_result_is_the_targets_error_and_the_worker_lives(local_host):
    local_host.compile("k", _neg_case().load().model.SerializeToString(), 60)
    pid = local_host.pid
    with pytest.raises(RemoteError, match="cannot carry"):
        local_host.call("tests.foreign_env:unsendable", "k", None, 60)
    assert local_host.call("tests.foreign_env:echo", "k", 1, 60)["value"] == 1
    assert local_host.pid == pid


def test_a_missing_interpreter_is_infra_error():
    host = ProcessHost(ORT, launcher=["/nonexistent/bin/python"], startup_timeout=30)
    outcome = execute_case(_neg_case(), host, Capabilities(), timeout=30)
    host.close()
    assert outcome.status == "infra_error" and "could not start a worker" in outcome.message


@pytest.fixture(scope="module")
def numpy1_python():
    python, why = foreign_env.numpy1_python()
    if python is None:
        pytest.skip(f"cannot build the numpy 1.x venv here: {why}")
    return python


def test_a_worker_under_numpy_1_runs_a_case_and_every_tensor_type(numpy1_python):
    host = ProcessHost(ORT, launcher=[str(numpy1_python)], startup_timeout=120)
    try:
        outcome = execute_case(_neg_case(), host, Capabilities(), timeout=120)
        assert outcome.status == "pass", outcome.message
        assert host.worker_info["numpy"].startswith("1."), host.worker_info
        assert np.__version__.startswith("2.")
        host.compile("k", _neg_case().load().model.SerializeToString(), 60)
        held, lacking = {}, []
        for name in sorted(ELEMENT_TYPES):
            try:
                answer = host.call("tests.foreign_env:echo", "k", {"x": sample(name)}, 60)
            except Exception as exc:  # an ml_dtypes there without this type: harness's gap
                assert "cannot hold" in str(exc), exc
                lacking.append(name)
                continue
            held[name] = answer
            assert same_bits(answer["value"]["x"], sample(name)), name
            assert answer["dtypes"]["x"] == ("object" if name == "string" else name)
        assert {"bfloat16", "float8_e4m3fn", "int4", "uint4", "float16"} <= set(held), lacking
    finally:
        host.close()


def test_frames_that_arrive_together_are_received_one_by_one() -> None:
    import os
    import time

    from harness.isolation.wire import DeadlineEnd

    read_fd, write_fd = os.pipe()
    spare_read, spare_write = os.pipe()
    end = DeadlineEnd(read_fd, spare_write)
    try:
        first, second = np.arange(5, dtype=np.int64), np.ones((2, 2), dtype=np.float32)
        os.write(write_fd, b"".join(message({"n": 1, "x": first}) + message({"n": 2, "x": second})))
        deadline = time.monotonic() + 5
        one = end.receive(deadline)
        assert end.readable()  # the second frame was read with the first, and is waiting
        two = end.receive(deadline)
        assert (one["n"], two["n"]) == (1, 2)
        assert np.array_equal(one["x"], first) and np.array_equal(two["x"], second)
        assert not end.readable()
    finally:
        end.close()
        for fd in (write_fd, spare_read):
            os.close(fd)


def test_a_worker_imports_ml_dtypes_only_when_a_tensor_needs_it() -> None:
    """ml_dtypes 0.7 takes half a second to import: a worker whose cases use numpy's own
    types starts without it, and a bfloat16 tensor still decodes."""
    import subprocess
    import sys

    probe = (
        "import sys, numpy as np\n"
        "import harness.isolation.worker_main\n"
        "from harness.isolation.wire import decode, encode\n"
        "decode(*encode(np.ones(2, np.float32)))\n"
        "print('ml_dtypes' in sys.modules)\n"
        "from harness.isolation.tensors import from_packed_bytes\n"
        "from_packed_bytes('bfloat16', [1], b'\\x80\\x3f')\n"
        "print('ml_dtypes' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "True"]
