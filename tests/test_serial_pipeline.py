"""Pipelined INFER requests (docs/protocol.md section 3.2, revision 1.3) against the
board simulator in a thread over a real socket and pyserial: results equal the
stop-and-wait ones, faults cost retransmissions but never a result or a second
execution, and a device gets no more requests in flight than it declares."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from harness.driver.target import CapabilityExceeded
from targets.serial.board import MAX_PIPELINE, BoardClient
from targets.serial.protocol import MsgType, decode_result, encode_infer
from targets.serial.receiver import Frame
from targets.serial.sim.board import BoardSimulator
from targets.serial.sim.faults import FaultPlan
from targets.serial.sim.launch import SimProcess
from targets.serial.transport import LinkSettings, Pending, SerialLink, Window
from tests.serial_peers import BOARD, DamagingEndpoint, ScriptedPeer, ThreadedSim, identity_or

pytest.importorskip("serial")

SHAPE = [16, 16]  # 1 KiB of float32 per request


def abs_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["y"])], "abs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def inputs(count: int, seed: int = 0) -> list[list[tuple[str, np.ndarray]]]:
    """Distinct tensors, so an answer given to the wrong request shows."""
    rng = np.random.default_rng(seed)
    return [[("x", rng.standard_normal(SHAPE).astype(np.float32))] for _ in range(count)]


def connect(url: str, infer_timeout: float = 2.0, **settings: float
            ) -> tuple[SerialLink, BoardClient, int]:
    link = SerialLink(LinkSettings(url, **settings))
    link.open()
    client = BoardClient(link, infer_timeout=infer_timeout)
    client.identify()
    return link, client, client.load(abs_model(), "abs", 4096).handle


def assert_right(results, feeds) -> None:
    assert len(results) == len(feeds)
    for (outputs, compute_s), feed in zip(results, feeds, strict=True):
        assert [name for name, _ in outputs] == ["y"] and compute_s > 0
        np.testing.assert_array_equal(outputs[0][1], np.abs(feed[0][1]))


def test_pipelined_infers_return_what_sequential_ones_do():
    feeds = inputs(24)
    with ThreadedSim(BoardSimulator, pipeline=4, jitter_s=0.004) as sim:
        link, client, handle = connect(sim.url, timeout=2.0)
        with link:
            assert client.pipeline == 4
            one_by_one = [client.infer(handle, feed) for feed in feeds]
            assert sim.sim.max_in_flight == 1
            pipelined = client.infer_many(handle, feeds)
        assert_right(pipelined, feeds)
        for (got, _), (want, _) in zip(pipelined, one_by_one, strict=True):
            assert got[0][0] == want[0][0]
            np.testing.assert_array_equal(got[0][1], want[0][1])
        assert sim.sim.infers_executed == 2 * len(feeds)
        assert sim.sim.max_in_flight == 4  # it was pipelined, and no deeper than declared
        assert link.stats.retransmissions == 0 and link.stats.stale_frames == 0


def test_a_stop_and_wait_device_never_gets_a_second_request_before_its_answer():
    """The board delays each answer by up to 20 ms and, before answering, reads what
    has arrived meanwhile: a host that sent ahead would be seen on every request."""
    feeds = inputs(16)
    with ThreadedSim(BoardSimulator, pipeline=1, jitter_s=0.02) as sim:
        link, client, handle = connect(sim.url, timeout=2.0)
        with link:
            assert client.pipeline == 1
            results = client.infer_many(handle, feeds)
        assert_right(results, feeds)
        assert sim.sim.max_in_flight == 1
        assert sim.sim.infers_executed == len(feeds)


@pytest.mark.parametrize("args, depth", [((), 4), (("--pipeline", "1"), 1)])
def test_shipei_sim_board_declares_its_pipeline_over_a_pty(tmp_path, args, depth):
    feeds = inputs(12)
    with SimProcess("board", *args, log=tmp_path / "board.log", lifetime=60) as sim:
        link, client, handle = connect(sim.url, timeout=2.0)
        with link:
            assert client.pipeline == depth
            assert_right(client.infer_many(handle, feeds), feeds)
            assert link.stats.retransmissions == 0


def test_a_device_that_declares_no_pipeline_is_stop_and_wait():
    assert "pipeline" not in BOARD.capabilities
    with ScriptedPeer(identity_or(lambda frame, peer: None)) as peer, \
            SerialLink(LinkSettings(peer.url, timeout=1.0)) as link:
        client = BoardClient(link)
        client.identify()
        assert client.pipeline == 1


@pytest.mark.parametrize("declared", [2, 3, 64])
def test_depth_never_exceeds_the_declared_capability_nor_the_host_cap(declared):
    feeds = inputs(20)
    with ThreadedSim(BoardSimulator, pipeline=declared, jitter_s=0.01) as sim:
        link, client, handle = connect(sim.url, timeout=2.0)
        with link:
            assert client.pipeline == min(declared, MAX_PIPELINE)
            results = client.infer_many(handle, feeds)
        assert_right(results, feeds)
        assert sim.sim.max_in_flight == min(declared, MAX_PIPELINE)


def test_every_payload_is_checked_before_the_first_is_sent():
    feeds = inputs(4)
    feeds[2] = [("x", np.zeros([64, 64], np.float32))]  # 16 KiB over a 4 KiB max_payload
    with ThreadedSim(BoardSimulator, pipeline=4, max_payload=4096) as sim:
        link, client, handle = connect(sim.url, timeout=2.0)
        with link, pytest.raises(CapabilityExceeded, match="max_payload 4,096"):
            client.infer_many(handle, feeds)
        assert sim.sim.infers_executed == 0


FAULTS = {
    "dropped answers": {"drop": 0.15},
    "damaged answers": {"bit_errors": 0.1, "truncate": 0.1},
    "busy": {"busy": 0.2},
    "everything": {"drop": 0.05, "bit_errors": 0.05, "garbage": 0.1, "busy": 0.05},
}


@pytest.mark.parametrize("name", FAULTS)
def test_faulty_answers_cost_retransmissions_never_a_result_or_a_second_execution(name):
    feeds = inputs(30, seed=3)
    faults = FaultPlan(seed=11)
    with ThreadedSim(BoardSimulator, faults=faults, pipeline=4) as sim:
        link, client, handle = connect(sim.url, infer_timeout=0.3, timeout=0.3, retries=8,
                                       inter_byte_timeout=0.05)
        with link:
            faults.faults = dict(FAULTS[name])  # the model is loaded cleanly first
            results = client.infer_many(handle, feeds)
        assert_right(results, feeds)
        assert sum(faults.counts.values()) > 0 and link.stats.retransmissions > 0
        assert sim.sim.infers_executed == len(feeds)
        assert sim.sim.max_in_flight <= 4


def test_damaged_requests_are_refused_and_sent_again_never_run_twice():
    feeds = inputs(24, seed=5)
    endpoint = DamagingEndpoint(MsgType.INFER, {0, 2, 3, 9, 10, 17})
    with ThreadedSim(BoardSimulator, endpoint=endpoint, pipeline=4, jitter_s=0.004) as sim:
        link, client, handle = connect(sim.url, timeout=1.0)
        with link:
            results = client.infer_many(handle, feeds)
        assert_right(results, feeds)
        assert endpoint.damaged == 6 and link.stats.naks == 6
        assert link.stats.retransmissions == 6 and link.stats.silent_attempts == 0
        assert sim.sim.infers_executed == len(feeds)


def test_a_shallow_pipeline_under_heavy_faults_never_runs_an_infer_twice():
    """Depth 2, damaged requests and lost, damaged and BUSY answers together: requests
    are sent again out of order, which is when an answer could leave the device's
    two-answer cache before the host has it. Without the window's rule (sending
    nothing new meanwhile) this very run executes 28 INFERs for 24."""
    feeds = inputs(24, seed=2)
    faults = FaultPlan(seed=2)
    endpoint = DamagingEndpoint(MsgType.INFER, set(range(1, 100, 7)))
    with ThreadedSim(BoardSimulator, faults=faults, endpoint=endpoint, pipeline=2) as sim:
        link, client, handle = connect(sim.url, infer_timeout=0.3, timeout=0.2, retries=10,
                                       inter_byte_timeout=0.05)
        with link:
            faults.faults = {"drop": 0.08, "bit_errors": 0.08, "garbage": 0.05,
                             "busy": 0.08, "truncate": 0.05}
            results = client.infer_many(handle, feeds)
        assert_right(results, feeds)
        assert link.stats.naks > 0 and link.stats.silent_attempts > 0
        assert sim.sim.infers_executed == len(feeds)


def _answers(link: SerialLink, count: int) -> dict[int, Frame]:
    got: dict[int, Frame] = {}
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        for event in link.events(0.2):
            if isinstance(event, Frame):
                got[event.seq] = event
    return got


def test_the_device_answers_a_retransmission_of_any_of_its_last_n_from_the_cache():
    feeds = inputs(5)
    with ThreadedSim(BoardSimulator, pipeline=4) as sim:
        link, _, handle = connect(sim.url, timeout=2.0)
        with link:
            payloads = {1000 + i: encode_infer(handle, feed) for i, feed in enumerate(feeds)}
            for seq in list(payloads)[:4]:
                link.write_frame(MsgType.INFER, seq, payloads[seq])
            first = _answers(link, 4)
            link.write_frame(MsgType.INFER, 1000, payloads[1000])  # the oldest of four
            again = _answers(link, 1)
            assert again[1000].payload == first[1000].payload
            assert sim.sim.infers_executed == 4
            link.write_frame(MsgType.INFER, 1004, payloads[1004])  # a fifth evicts 1000
            _answers(link, 1)
            link.write_frame(MsgType.INFER, 1000, payloads[1000])
            rerun = _answers(link, 1)
            assert sim.sim.infers_executed == 6
            _, _, outputs = decode_result(rerun[1000].payload)
            np.testing.assert_array_equal(outputs[0][1], np.abs(feeds[0][0][1]))


def _pending(window: Window) -> Pending:
    pending = Pending(MsgType.INFER, b"", 0, b"x" * 100, 1.0)
    window.admit(pending, 0)
    return pending


def test_the_window_stops_sending_ahead_while_an_answer_might_leave_the_cache():
    """Depth 3: g, h, q in flight; g is sent again after q and then answered. Were a
    new request admitted, q could see g, h and the new one executed after it, and
    the device's three cached answers would no longer hold q's."""
    window = Window(3)
    g, h, q = (_pending(window) for _ in range(3))
    g.last_tx, h.last_tx, q.last_tx = 1, 2, 3
    h.first_tx, q.first_tx = 2, 3
    assert not window.has_room(100)
    g.last_tx = 4  # g retransmitted after q was first sent
    window.retire()
    assert not window.has_room(100)
    fresh = Window(3)
    a, b, c = (_pending(fresh) for _ in range(3))
    a.last_tx, b.first_tx, c.first_tx = 1, 2, 3
    fresh.retire()  # a answered on its first transmission: room for one more
    assert fresh.has_room(100)
