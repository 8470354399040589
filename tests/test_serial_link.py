"""The host link over pyserial against real simulators (subprocesses on ptys and
127.0.0.1 ports): retransmission counts against injected faults, who is blamed
when a device hangs or vanishes, loop:// and rfc2217:// URLs."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.driver.target import InfraError, TargetError
from targets.serial.board import BoardClient, SerialBoardTarget
from targets.serial.protocol import ErrorCode, MsgType, encode_frame, encode_infer
from targets.serial.receiver import Frame
from targets.serial.sim.launch import SimProcess
from targets.serial.transport import (
    DeviceProtocolError,
    DeviceTimeout,
    LinkError,
    LinkSettings,
    SerialLink,
)

pytest.importorskip("serial")


def abs_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])], "abs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def injected(events: Path) -> list[dict]:
    if not events.exists():
        return []
    return [json.loads(line) for line in events.read_text().splitlines()]


@pytest.fixture
def sim(tmp_path):
    started: list[SimProcess] = []

    def start(device: str, *args: str) -> SimProcess:
        process = SimProcess(device, *args, "--events", str(tmp_path / "events.jsonl"),
                             log=tmp_path / "sim.log", lifetime=120)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_missing_port_is_a_link_error():
    with pytest.raises(LinkError, match="cannot open /nonexistent/ttyS99"):
        SerialLink(LinkSettings("/nonexistent/ttyS99")).open()
    assert issubclass(LinkError, InfraError)


def test_a_refused_socket_is_a_link_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LinkError, match="cannot open"):
        SerialLink(LinkSettings(f"socket://127.0.0.1:{port}")).open()


def test_loop_url_carries_frames_and_a_loopback_is_no_device():
    with SerialLink(LinkSettings("loop://", timeout=0.3, retries=0)) as link:
        link.write_frame(MsgType.PING, 5, b"hello")
        events = link.events(1.0)
        assert isinstance(events[0], Frame) and events[0].payload == b"hello"
        with pytest.raises(DeviceProtocolError, match="answered IDENTIFY .* with IDENTIFY"):
            link.request(MsgType.IDENTIFY)


def test_rfc2217_url_through_a_real_rfc2217_server():
    import serial
    from serial import rfc2217

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(0.05)
        backend = serial.serial_for_url("loop://", timeout=0.05)

        class Wire:  # what PortManager writes telnet replies to
            write = conn.sendall

        manager = rfc2217.PortManager(backend, Wire())
        while not stop.is_set():
            try:
                data = conn.recv(4096)
                if not data:
                    break
                backend.write(b"".join(manager.filter(data)))
            except TimeoutError:
                pass
            waiting = backend.in_waiting
            if waiting:
                conn.sendall(b"".join(manager.escape(backend.read(waiting))))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with SerialLink(LinkSettings(f"rfc2217://127.0.0.1:{port}", timeout=1)) as link:
            payload = bytes(range(256)) * 4  # every byte value, 0xFF (telnet IAC) included
            link.write_frame(MsgType.PING, 9, payload)
            deadline = time.monotonic() + 10
            got: list = []
            while not got and time.monotonic() < deadline:
                got = [e for e in link.events(0.5) if isinstance(e, Frame)]
            assert got and got[0].payload == payload and got[0].seq == 9
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_retransmissions_match_the_injected_damage_exactly(sim, tmp_path):
    process = sim("board", "--seed", "11", "--fault", "bit_errors=0.04", "--fault",
                  "dropped_bytes=0.04", "--fault", "truncate=0.04", "--fault", "drop=0.04")
    link = SerialLink(LinkSettings(process.url, timeout=0.4, inter_byte_timeout=0.05,
                                   retries=6))
    client = BoardClient(link, infer_timeout=0.4, chunk=64)
    with link:
        assert client.identify().model == "sim-npu-1"
        loaded = client.load(abs_model(), "abs", 64)
        rng = np.random.default_rng(0)
        for _ in range(40):
            x = rng.normal(size=(4, 8)).astype(np.float32)
            outputs, compute_s = client.infer(loaded.handle, [("x", x)])
            np.testing.assert_array_equal(outputs[0][1], np.abs(x))
            assert compute_s > 0
    process.stop()
    events = injected(tmp_path / "events.jsonl")
    kinds = {e["kind"] for e in events}
    assert kinds == {"bit_errors", "dropped_bytes", "truncate", "drop"}  # all exercised
    lost_responses = {e["index"] for e in events}  # two faults may hit one frame
    assert link.stats.retransmissions == len(lost_responses), (link.stats, events)
    dropped = sum(e["kind"] == "drop" for e in events)
    assert link.stats.silent_attempts == dropped
    assert link.stats.damaged_responses == len(lost_responses) - dropped
    assert link.stats.stale_frames == 0


def test_line_noise_is_counted_byte_for_byte_and_needs_no_retransmission(sim, tmp_path):
    process = sim("board", "--fault", "garbage=0.5", "--seed", "3")
    link = SerialLink(LinkSettings(process.url))
    with link:
        client = BoardClient(link)
        for _ in range(30):
            client.identify()
    process.stop()
    noise = [e["nbytes"] for e in injected(tmp_path / "events.jsonl") if e["kind"] == "garbage"]
    assert noise and link.receiver.counters.stray_bytes == sum(noise)
    assert link.stats.retransmissions == 0


def test_a_stall_past_the_timeout_is_retransmitted_and_the_late_answer_ignored(sim):
    process = sim("board", "--tcp", "0", "--fault", "stall=0.25", "--stall-ms", "600")
    link = SerialLink(LinkSettings(process.url, timeout=0.3, retries=5))
    with link:
        client = BoardClient(link)
        for _ in range(6):
            assert client.identify().vendor == "Shipei simulators"
        time.sleep(0.8)  # late duplicate answers arrive meanwhile
        client.identify()
        leftover = [e for e in link.events(1.5) if isinstance(e, Frame)]
    # each stall costs one retransmission; the device answers the retransmission
    # from its cache, and that duplicate is discarded (and counted as a duplicate
    # answer, not a stale one) by the next request, or is still on the line after
    # the last one
    assert link.stats.retransmissions >= 1
    assert link.stats.duplicate_answers + len(leftover) == link.stats.retransmissions
    assert link.stats.stale_frames == 0


def test_a_hung_device_is_a_device_timeout_not_a_hang(sim):
    process = sim("board", "--mute-after", "1")
    link = SerialLink(LinkSettings(process.url, timeout=0.3, retries=2))
    with link:
        client = BoardClient(link)
        client.identify()
        started = time.monotonic()
        # 2 retries after the first 0.3 s, sent again sooner within it (the timer
        # learned the round trip from the first IDENTIFY)
        with pytest.raises(DeviceTimeout, match=r"did not answer IDENTIFY .* [3-9] attempts"):
            client.identify()
        assert time.monotonic() - started < 60  # 3 attempts of 0.3 s, not a hang
    assert issubclass(DeviceTimeout, TargetError) and not issubclass(DeviceTimeout, InfraError)


def test_a_vanished_device_is_a_link_error(sim):
    process = sim("board", "--exit-after", "1")
    link = SerialLink(LinkSettings(process.url, timeout=30.0))
    with link:
        BoardClient(link).identify()
        process.process.wait(10)
        started = time.monotonic()
        with pytest.raises(LinkError, match="lost"):
            BoardClient(link).identify()
        assert time.monotonic() - started < 30  # seen at once, not after the 30 s timeout
    assert link.stats.link_drops == 1


def test_a_damaged_request_is_refused_with_bad_frame_and_a_new_version_with_version(sim):
    process = sim("board")
    with SerialLink(LinkSettings(process.url, timeout=1.0)) as link:
        frame = bytearray(encode_frame(MsgType.INFER, 77, encode_infer(1, [])))
        frame[16] ^= 0x40
        link.write_raw(bytes(frame))
        answer = [e for e in link.events(2.0) if isinstance(e, Frame)][0]
        assert (answer.type, answer.seq) == (MsgType.ERROR, 77)
        assert int.from_bytes(answer.payload[:2], "little") == ErrorCode.BAD_FRAME
        link.write_frame(MsgType.IDENTIFY, 78, version=2)
        answer = [e for e in link.events(2.0) if isinstance(e, Frame)][0]
        assert int.from_bytes(answer.payload[:2], "little") == ErrorCode.VERSION


def test_board_errors_map_to_target_exceptions(sim):
    process = sim("board")
    target = SerialBoardTarget(url=process.url)
    assert target.availability().available
    broken = helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TargetError, match="MODEL_REJECTED|UNSUPPORTED_MODEL"):
        target.compile(broken.SerializeToString())
    executable = target.compile(abs_model())
    with pytest.raises(TargetError, match="BAD_INPUT"):
        executable.run({"x": np.zeros((2, 2), np.float32)})
    with pytest.raises(TargetError, match="unknown input"):
        executable.run({"z": np.zeros((4, 8), np.float32)})
    sequence_in = helper.make_model(helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])], "g",
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TargetError, match="tensors only"):
        target.compile(sequence_in.SerializeToString())
    target.close()


def test_a_model_the_device_forgot_is_loaded_again(sim):
    process = sim("board", "--slots", "1")
    target = SerialBoardTarget(url=process.url)
    first = target.compile(abs_model())
    second = target.compile(abs_model())  # evicts the first from the only slot
    x = -np.ones((4, 8), np.float32)
    np.testing.assert_array_equal(first.run({"x": x})["y"], np.ones((4, 8), np.float32))
    assert first.placement()["model_reloads"] == 1
    np.testing.assert_array_equal(second.run({"x": x})["y"], np.ones((4, 8), np.float32))
    assert second.placement()["model_reloads"] == 1  # the reload evicted it in turn
    target.close()


def test_model_bytes_are_acknowledged_by_sha256(sim):
    process = sim("board", "--max-chunk", "100")
    target = SerialBoardTarget(url=process.url, chunk=1000)
    executable = target.compile(abs_model())
    placement = executable.placement()
    assert placement["model_chunks"] == -(-len(abs_model()) // 100)
    import hashlib

    assert placement["model_sha256"] == hashlib.sha256(abs_model()).hexdigest()
    target.close()
