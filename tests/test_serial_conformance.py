"""Protocol revisions 1.1 and 1.4 (docs/protocol.md): each rule as a device written
from the spec must follow it (checked on the reference simulator, over real sockets),
and each host duty checked against scripted devices that break one rule.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cases.case import outcome_from_exception
from harness.driver.target import CapabilityExceeded, UnsupportedModelError
from harness.isolation.host import RemoteError
from targets.serial.board import BoardClient, SerialBoardTarget
from targets.serial.protocol import (
    MAX_PING,
    REVISION,
    ErrorCode,
    Frame,
    MsgType,
    decode_error,
    encode_chunk,
    encode_frame,
    encode_infer,
    encode_load_begin,
    encode_u32s,
    sha256,
)
from targets.serial.sim.board import BoardSimulator
from targets.serial.sim.server import Reply
from targets.serial.transport import (
    DeviceBusy,
    DeviceError,
    DeviceLost,
    DeviceTimeout,
    LinkError,
    LinkSettings,
    SerialLink,
)
from tests.serial_peers import ScriptedPeer, ThreadedSim, error_frame, identity_or, noise_forever

pytest.importorskip("serial")
pytest.importorskip("onnxruntime")  # imported here, not on a simulator thread's first answer


def model(op: str = "Abs", blocks: int = 0, domain: str = "") -> bytes:
    """``y = op(x)`` on a [4, 8] float input; with ``blocks``, plus a [blocks, 4, 8]
    constant (a model file of about 128 bytes per block, for chunking)."""
    nodes = [helper.make_node(op, ["x"], ["a" if blocks else "y"], domain=domain)]
    inits, shape = [], [4, 8]
    if blocks:
        nodes.append(helper.make_node("Add", ["a", "w"], ["y"]))
        weights = np.arange(blocks * 32, dtype=np.float32).reshape(blocks, 4, 8)
        inits, shape = [numpy_helper.from_array(weights, "w")], [blocks, 4, 8]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def link(url: str, **options: object) -> SerialLink:
    settings = LinkSettings(url=url, timeout=options.pop("timeout", 5.0),  # type: ignore[arg-type]
                            retries=options.pop("retries", 0), **options)  # type: ignore[arg-type]
    opened = SerialLink(settings)
    opened.open()
    return opened


def refusal(exchange: SerialLink, msg_type: int, payload: bytes = b"") -> str:
    """The name of the ERROR the device answers, or what it answered instead."""
    try:
        frame = exchange.request(msg_type, payload)
    except DeviceError as exc:
        return ErrorCode(exc.code).name
    except UnsupportedModelError as exc:  # UNSUPPORTED_MODEL maps to this
        return "UNSUPPORTED_MODEL" if "UNSUPPORTED_MODEL" in str(exc) else str(exc)
    return f"answered {frame.type_name}"


def begin(exchange: SerialLink, raw: bytes) -> tuple[int, int]:
    frame = exchange.request(MsgType.LOAD_BEGIN, encode_load_begin(len(raw), sha256(raw), "m"))
    return struct.unpack("<II", frame.payload)


def load(exchange: SerialLink, raw: bytes) -> int:
    handle, _ = begin(exchange, raw)
    for offset in range(0, len(raw), 1000):
        piece = raw[offset:offset + 1000]
        exchange.request(MsgType.LOAD_CHUNK, encode_chunk(handle, offset, piece))
    exchange.request(MsgType.LOAD_END, encode_u32s(handle))
    return handle


@pytest.fixture(scope="module")
def board():
    with ThreadedSim(BoardSimulator, max_chunk=4096) as sim:
        yield sim


@pytest.fixture
def device(board):
    exchange = link(board.url)
    exchange.request(MsgType.IDENTIFY)
    yield exchange
    exchange.close()


# -- 1. BUSY is no answer to cache; the host retries under a new SEQ -------------------

class BusyOnce(BoardSimulator):
    """Answers the first attempt of every request BUSY (then, per revision 1.1, does
    not cache it: the identical retransmission is executed)."""

    def answer(self, frame: Frame) -> list[Reply]:
        if frame.type != MsgType.IDENTIFY and frame.seq not in self.seen:
            self.seen.add(frame.seq)
            return [Reply(MsgType.ERROR, b"\x06\x00\x04\x00busy")]
        return super().answer(frame)


def test_a_busy_answer_is_not_replayed_to_the_identical_retransmission():
    with ThreadedSim(BusyOnce) as sim:
        sim.sim.seen = set()
        exchange = link(sim.url)
        exchange.request(MsgType.IDENTIFY)
        ping = encode_frame(MsgType.PING, 7, b"hello")
        answers = []
        for _ in range(2):  # the same frame twice: BUSY, then executed
            exchange.write_raw(ping)
            answers += [e for e in exchange.events(2.0) if isinstance(e, Frame)]
        assert [a.type for a in answers] == [MsgType.ERROR, MsgType.PONG]
        exchange.close()


def test_the_host_gets_past_a_v1_device_that_caches_busy():
    """A device that follows revision 1.0 literally replays BUSY for the same SEQ; the
    host's retry under a new SEQ is executed."""
    cache: dict[int, bytes] = {}

    def answer(frame: Frame, peer: ScriptedPeer) -> bytes:
        if frame.seq in cache:
            return cache[frame.seq]  # the 1.0 reading: resend the last answer
        first_ping = not any(f.type == MsgType.PING for f in peer.frames[-1][:-1])
        cache[frame.seq] = error_frame(frame, ErrorCode.BUSY, "busy") if first_ping \
            else encode_frame(MsgType.PONG, frame.seq, frame.payload)
        return cache[frame.seq]

    with ScriptedPeer(identity_or(answer)) as peer:
        exchange = link(peer.url, retries=3)
        assert exchange.request(MsgType.PING, b"abc").payload == b"abc"
        pings = [f for f in peer.frames[-1] if f.type == MsgType.PING]
        assert len(pings) == 2 and pings[0].seq != pings[1].seq
        assert exchange.stats.busy_answers == 1
        exchange.close()


def test_a_device_busy_on_every_attempt_is_reported_as_busy_not_silent():
    with ScriptedPeer(identity_or(lambda f, p: error_frame(f, ErrorCode.BUSY, "busy"))) as peer:
        exchange = link(peer.url, retries=3, timeout=30.0)
        started = time.monotonic()
        with pytest.raises(DeviceBusy, match=r"answered BUSY to LOAD_END .* all 4 attempts"):
            exchange.request(MsgType.LOAD_END, encode_u32s(1))
        # the pauses only: not one of the 30 s timeouts was waited out (a budget loose
        # enough for a loaded machine)
        assert time.monotonic() - started < 30
        exchange.close()


# -- 2. max_payload -----------------------------------------------------------------

def test_the_host_honours_a_declared_max_payload_for_chunks_and_infer():
    with ThreadedSim(BoardSimulator, max_payload=2048, max_chunk=100_000) as sim:
        target = SerialBoardTarget(url=sim.url, chunk=1_000_000)
        raw = model(blocks=200)  # about 26 KB
        executable = target.compile(raw)
        assert executable.placement()["model_chunks"] == -(-len(raw) // (2048 - 8))
        small = executable.run({"x": np.ones((4, 8), np.float32)})
        assert small["y"].shape == (200, 4, 8)
        sent = target.link_stats()["tx_frames"]
        client = target.client()
        with pytest.raises(CapabilityExceeded, match="max_payload 2,048, so it was not sent"
                           ) as refused:
            client.infer(executable.loaded.handle, [("x", np.ones((4, 1000), np.float32))])
        assert target.link_stats()["tx_frames"] == sent
        target.close()
    # a declared limit is a skip with the reason, as it is recorded through the worker
    remote = RemoteError(type(refused.value).__name__, str(refused.value), "run")
    outcome = outcome_from_exception(remote, time.perf_counter())
    assert outcome.status == "skip" and "max_payload 2,048" in outcome.message
    assert issubclass(CapabilityExceeded, UnsupportedModelError)


def test_a_frame_over_max_payload_is_answered_too_large_at_once():
    with ThreadedSim(BoardSimulator, max_payload=1024) as sim:
        exchange = link(sim.url)
        exchange.request(MsgType.IDENTIFY)
        with pytest.raises(DeviceError, match="TOO_LARGE"):
            exchange.request(MsgType.INFER, encode_infer(1, [("x", np.zeros(400, np.float32))]))
        assert exchange.stats.naks == 0 and exchange.stats.retransmissions == 0
        exchange.close()


# -- 3. IDENTIFY starts a session ----------------------------------------------------------

def test_identify_starts_a_session_freeing_half_done_loads_but_keeping_models(device):
    loaded = load(device, model())
    partial, _ = begin(device, model("Relu"))
    device.request(MsgType.LOAD_CHUNK, encode_chunk(partial, 0, model("Relu")[:10]))
    device.request(MsgType.IDENTIFY)
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(partial, 10, b"x")) == "NO_MODEL"
    result = device.request(MsgType.INFER, encode_infer(loaded, [("x", -np.ones((4, 8),
                                                                              np.float32))]))
    assert result.type == MsgType.RESULT


def test_identify_is_executed_even_when_identical_to_the_last_request(board, device):
    before = board.sim.requests_answered
    frame = encode_frame(MsgType.IDENTIFY, 41)
    for _ in range(2):
        device.write_raw(frame)
        assert [e.type for e in device.events(2.0) if isinstance(e, Frame)] == [MsgType.IDENTITY]
    assert board.sim._last_request is None and board.sim.requests_answered == before + 2


def test_every_connection_the_host_opens_begins_with_identify():
    def answer(frame: Frame, peer: ScriptedPeer) -> bytes:
        if len(peer.frames) == 1:
            peer.close_now = True  # pull the cable after the first request
        return encode_frame(MsgType.PONG, frame.seq, frame.payload)

    with ScriptedPeer(identity_or(answer)) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.5, retries=0)
        with pytest.raises(LinkError):
            target.client().link.request(MsgType.PING, b"1")
        assert target.client().link.request(MsgType.PING, b"2").payload == b"2"
        assert [[f.type for f in frames] for frames in peer.frames] == [
            [MsgType.IDENTIFY, MsgType.PING], [MsgType.IDENTIFY, MsgType.PING]]
        target.close()


# -- 4. which max_chunk applies ------------------------------------------------------------

@pytest.mark.parametrize("declared, ready", [(4096, 1000), (700, 5000)])
def test_the_smaller_of_the_two_max_chunks_applies(declared, ready):
    with ThreadedSim(BoardSimulator, max_chunk=declared, ready_chunk=ready) as sim:
        target = SerialBoardTarget(url=sim.url, chunk=1_000_000)
        raw = model(blocks=40)
        assert target.compile(raw).placement()["model_chunks"] == -(-len(raw) //
                                                                   min(declared, ready))
        target.close()


def test_chunk_size_rule():
    client = BoardClient(link=None, chunk=4096)  # type: ignore[arg-type]
    client.max_payload = 1 << 20
    assert client.chunk_size(4096, 1000) == 1000
    assert client.chunk_size(700, 5000) == 700
    assert client.chunk_size(4096, 0) == 4096  # 0 in LOAD_READY: the capability's
    assert client.chunk_size(0, 0) == 4096  # nothing declared: the host's own
    client.max_payload = 500
    assert client.chunk_size(4096, 4096) == 492


# -- 5. error codes and slot states ---------------------------------------------------------

def test_ping_up_to_256_bytes_is_echoed_and_longer_is_too_large(device):
    assert device.request(MsgType.PING, bytes(MAX_PING)).payload == bytes(MAX_PING)
    assert refusal(device, MsgType.PING, bytes(MAX_PING + 1)) == "TOO_LARGE"


def test_chunk_errors_abandon_the_load(device):
    raw = model()
    for bad in (b"", bytes(4097)):  # a zero-length chunk; one over max_chunk
        handle, _ = begin(device, raw)
        code = refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, bad))
        assert code == ("BAD_PAYLOAD" if not bad else "TOO_LARGE")
        assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == "NO_MODEL"
    handle, _ = begin(device, raw)
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw + b"!")) == \
        "SIZE_MISMATCH"
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw)) == "NO_MODEL"
    handle, _ = begin(device, raw)
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 5, raw[5:])) == "BAD_OFFSET"
    assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == "NO_MODEL"
    handle, _ = begin(device, raw)
    device.request(MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw[:10]))
    assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == "SIZE_MISMATCH"
    assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == "NO_MODEL"


def test_a_chunk_to_a_loaded_model_is_bad_offset_and_the_model_stays(device):
    handle = load(device, model())
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, b"x")) == "BAD_OFFSET"
    again = device.request(MsgType.LOAD_END, encode_u32s(handle))
    assert again.type == MsgType.LOADED and again.payload[4:36] == sha256(model())
    result = device.request(MsgType.INFER, encode_infer(handle, [("x", np.ones((4, 8),
                                                                             np.float32))]))
    assert result.type == MsgType.RESULT


@pytest.mark.parametrize("raw, code", [
    (model("NoSuchOp"), "UNSUPPORTED_MODEL"),  # a valid model with an unknown operator
    (model("Abs", domain="com.example"), "UNSUPPORTED_MODEL"),  # a domain it lacks
    (b"\x08\x07garbage-not-protobuf\xff", "MODEL_REJECTED"),  # no model at all
])
def test_unknown_operators_are_unsupported_and_unparsable_bytes_rejected(device, raw, code):
    handle, _ = begin(device, raw)
    device.request(MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw))
    assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == code
    assert refusal(device, MsgType.INFER, encode_infer(handle, [])) == "NO_MODEL"


# -- 6. UNLOAD outcomes are recorded --------------------------------------------------------

class BusyUnload(BoardSimulator):
    def answer(self, frame: Frame) -> list[Reply]:
        if frame.type == MsgType.UNLOAD and self.refuse_unloads:
            return [Reply(MsgType.ERROR, b"\x06\x00\x04\x00busy")]
        return super().answer(frame)


def test_unloads_and_their_failures_reach_the_next_record():
    with ThreadedSim(BusyUnload, slots=8) as sim:
        sim.sim.refuse_unloads = True
        target = SerialBoardTarget(url=sim.url, retries=1)
        first = target.compile(model())
        assert first.placement()["earlier_unloads"] == []
        first.close()  # BUSY twice: the model stays loaded
        second = target.compile(model("Relu"))
        # the failed UNLOAD, then its retry before this load (refused again)
        unloads = second.placement()["earlier_unloads"]
        assert [u["handle"] for u in unloads] == [first.loaded.handle] * 2
        assert all(u["outcome"].startswith("failed: DeviceBusy") for u in unloads)
        assert [u["retransmissions"] for u in unloads] == [1, 1]
        assert first.loaded.handle in sim.sim.slots
        sim.sim.refuse_unloads = False
        second.close()
        third = target.compile(model("Neg"))  # the stale handle is unloaded first
        outcomes = {u["handle"]: u["outcome"] for u in third.placement()["earlier_unloads"]}
        assert outcomes == {first.loaded.handle: "unloaded", second.loaded.handle: "unloaded"}
        assert set(sim.sim.slots) == {third.loaded.handle}
        target.close()


# -- 7. TCP: no Nagle, one write per frame ---------------------------------------------------

def test_socket_links_set_tcp_nodelay_and_write_each_frame_in_one_call(board):
    exchange = link(board.url)
    sock = exchange._port._socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    writes: list[int] = []
    real_write = exchange._port.write

    def counting_write(data: bytes) -> int:
        writes.append(len(data))
        return real_write(data)

    exchange._port.write = counting_write
    exchange.write_frame(MsgType.PING, 1, bytes(200))
    exchange.write_frame(MsgType.LOAD_CHUNK, 2, bytes(3 * 4096))
    assert writes == [218, 3 * 4096 + 18]
    exchange.close()


# -- 8. the startup probe's bound is real -----------------------------------------------------

def test_a_stream_of_noise_ends_the_probe_within_its_stated_bound():
    with ScriptedPeer(lambda f, p: None, on_connect=noise_forever) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.5, retries=3)
        started = time.monotonic()
        availability = target.availability()
        elapsed = time.monotonic() - started
        assert not availability.available
        assert "4 attempts" in availability.reason and "noise" in availability.reason
        assert elapsed < 4 * 2.5, elapsed  # 4 attempts of 0.5 s, not 4 x 2.5 s


# -- issue 16: a lost device, a drop on the first frame ----------------------------------------

def test_after_three_unanswered_requests_the_device_is_lost_and_not_tried_again():
    with ScriptedPeer(identity_or(lambda f, p: None)) as peer:
        exchange = link(peer.url, timeout=0.2, retries=1)
        for _ in range(3):
            with pytest.raises(DeviceTimeout):
                exchange.request(MsgType.PING, b"?")
        with pytest.raises(DeviceLost, match="3 requests in a row went unanswered"):
            exchange.request(MsgType.PING, b"?")
        # not tried again: the 6 pings are the 3 unanswered requests' 2 attempts each
        assert sum(f.type == MsgType.PING for f in peer.frames[-1]) == 6
        exchange.close()


def test_an_answer_resets_the_count_of_unanswered_requests():
    silent = {"on": True}

    def answer(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        return None if silent["on"] else encode_frame(MsgType.PONG, frame.seq, frame.payload)

    with ScriptedPeer(identity_or(answer)) as peer:
        exchange = link(peer.url, timeout=0.2, retries=0)
        for round_ in range(3):
            for _ in range(2):
                with pytest.raises(DeviceTimeout):
                    exchange.request(MsgType.PING, b"?")
            silent["on"] = False
            assert exchange.request(MsgType.PING, bytes([round_])).payload == bytes([round_])
            silent["on"] = True
        exchange.close()


def test_a_link_that_drops_on_the_first_frame_is_available_and_its_cases_infra_error(
        shipei_cli):
    def drop(frame: Frame, peer: ScriptedPeer) -> None:
        peer.close_now = True

    with ScriptedPeer(drop) as peer:
        result = shipei_cli("run", "--suite", "operators", "-k", "test_abs or test_relu",
                            "--target", f"serial-board,url={peer.url},timeout=0.3",
                            timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    records = result.records()
    assert records and {r["status"] for r in records} == {"infra_error"}
    assert all("serial link" in r["message"] or "lost" in r["message"] for r in records)


def test_decode_error_of_a_busy_reply_is_busy():
    assert decode_error(b"\x06\x00\x04\x00busy") == (ErrorCode.BUSY, "busy")


# == revision 1.4: what 1.3 left undefined ===================================================
X14 = np.ones((4, 8), np.float32)


def test_the_simulator_declares_revision_1_4(device):
    assert REVISION == "1.4"
    identity = device.request(MsgType.IDENTIFY)
    assert b"protocol\x03\x001.4" in identity.payload


# -- 5.3 abandoned loads, eviction ---------------------------------------------------------
def test_load_begin_abandons_an_unfinished_load(device):
    raw = model(blocks=4)
    first, _ = begin(device, raw)
    device.request(MsgType.LOAD_CHUNK, encode_chunk(first, 0, raw[:100]))
    second = load(device, model())
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(first, 100, raw[100:])) == \
        "NO_MODEL"
    assert device.request(MsgType.INFER, encode_infer(second, [("x", X14)])).type == \
        MsgType.RESULT


def test_a_full_board_evicts_the_least_recently_used_model_never_no_slot():
    with ThreadedSim(BoardSimulator, slots=2) as sim:
        exchange = link(sim.url)
        exchange.request(MsgType.IDENTIFY)
        older = load(exchange, model("Abs"))
        newer = load(exchange, model("Relu"))
        exchange.request(MsgType.INFER, encode_infer(older, [("x", X14)]))  # older is used
        third = load(exchange, model("Neg"))  # evicts newer: named longest ago
        assert refusal(exchange, MsgType.INFER, encode_infer(newer, [("x", X14)])) == "NO_MODEL"
        for handle in (older, third):
            assert exchange.request(MsgType.INFER, encode_infer(handle, [("x", X14)])).type \
                == MsgType.RESULT
        exchange.close()


# -- 5.3 the order of LOAD_CHUNK's checks ----------------------------------------------------
def test_a_chunk_under_eight_bytes_is_bad_payload(device):
    assert refusal(device, MsgType.LOAD_CHUNK, b"\x01\x00\x00") == "BAD_PAYLOAD"


def test_a_zero_byte_chunk_to_a_loaded_model_is_bad_offset_first(device):
    handle = load(device, model())
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, b"")) == "BAD_OFFSET"


def test_an_oversized_chunk_at_a_wrong_offset_is_too_large_first():
    with ThreadedSim(BoardSimulator, max_chunk=16) as sim:
        exchange = link(sim.url)
        exchange.request(MsgType.IDENTIFY)
        raw = model()
        handle, _ = begin(exchange, raw)
        assert refusal(exchange, MsgType.LOAD_CHUNK, encode_chunk(handle, 5, raw[:40])) == \
            "TOO_LARGE"
        exchange.close()


def test_a_chunk_past_size_at_a_wrong_offset_is_bad_offset_first(device):
    raw = model()
    handle, _ = begin(device, raw)
    chunk = raw + b"extra"
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 3, chunk)) == "BAD_OFFSET"


# -- 5.3 requests naming a handle still loading ------------------------------------------------
def test_infer_on_a_handle_still_loading_is_no_model_and_the_load_goes_on(device):
    raw = model()
    handle, _ = begin(device, raw)
    device.request(MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw[:50]))
    assert refusal(device, MsgType.INFER, encode_infer(handle, [("x", X14)])) == "NO_MODEL"
    device.request(MsgType.LOAD_CHUNK, encode_chunk(handle, 50, raw[50:]))
    assert device.request(MsgType.LOAD_END, encode_u32s(handle)).type == MsgType.LOADED


def test_unload_of_a_handle_still_loading_frees_it(device):
    raw = model()
    handle, _ = begin(device, raw)
    assert device.request(MsgType.UNLOAD, encode_u32s(handle)).type == MsgType.UNLOADED
    assert refusal(device, MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw)) == "NO_MODEL"


# -- 5.3 MODEL_REJECTED versus UNSUPPORTED_MODEL ------------------------------------------------
def broken_graph() -> bytes:
    """A graph that breaks the IR rules: Add of a float and an int64 tensor."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


@pytest.mark.parametrize("raw, code", [
    (broken_graph(), "MODEL_REJECTED"),  # (3) a graph that breaks the IR rules
    (model("NoSuchOp"), "UNSUPPORTED_MODEL"),  # (2) wins over (3): no opset defines it
])
def test_which_of_rejected_and_unsupported_applies(device, raw, code):
    handle, _ = begin(device, raw)
    device.request(MsgType.LOAD_CHUNK, encode_chunk(handle, 0, raw))
    assert refusal(device, MsgType.LOAD_END, encode_u32s(handle)) == code


# -- 2.1 a short frame ----------------------------------------------------------------------
def test_a_short_request_is_bad_frame_and_the_request_inside_it_is_answered(device):
    """A PING that lost its last bytes on the way, followed by a good PING: the first
    is answered BAD_FRAME (its header was intact), the second PONG."""
    damaged = encode_frame(MsgType.PING, 900, b"x" * 40)[:-12]
    device.write_raw(damaged + encode_frame(MsgType.PING, 901, b"ok"))
    answers: list[Frame] = []
    for _ in range(20):
        answers += [e for e in device.events(0.5) if isinstance(e, Frame)]
        if len(answers) >= 2:
            break
    by_seq = {f.seq: f for f in answers}
    assert by_seq[900].type == MsgType.ERROR
    assert decode_error(by_seq[900].payload)[0] == ErrorCode.BAD_FRAME
    assert by_seq[901].type == MsgType.PONG and by_seq[901].payload == b"ok"
