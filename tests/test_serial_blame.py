"""Who is blamed when a serial board or its link misbehaves (issue 27, item 7): a board
that cannot be reached is ``infra_error`` for the rest of the run, at once and never
cached; a lost answer is retried on the link's schedule; a device that hangs mid-batch
is not line noise; a reset mid-upload is reloaded; every repair is recorded.

Each test drives the real host side over a real socket against a scripted peer or a
simulator in a thread (tests/serial_peers.py), with short timeouts."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from harness.driver.probe import probe_for
from harness.driver.target import InfraError
from harness.isolation.host import InlineHost
from targets.serial.board import BoardClient, SerialBoardTarget, link_repairs
from targets.serial.protocol import (
    ErrorCode,
    Frame,
    Identity,
    MsgType,
    decode_infer,
    encode_error,
    encode_frame,
    encode_loaded,
    encode_result,
    encode_u32s,
    sha256,
)
from targets.serial.sim.board import BoardSimulator
from targets.serial.transport import (
    DeviceError,
    DeviceLost,
    DeviceTimeout,
    LinkSettings,
    SerialLink,
)
from tests.serial_peers import BOARD, ScriptedPeer, ThreadedSim, error_frame, identity_or
from tests.test_serial_link import abs_model

pytest.importorskip("serial")

X = np.arange(32, dtype=np.float32).reshape(4, 8) - 16


def result_for(frame: Frame) -> bytes:
    """RESULT for an INFER of the Abs model: |x| as output "y"."""
    handle, tensors = decode_infer(frame.payload)
    return encode_frame(MsgType.RESULT, frame.seq,
                        encode_result(handle, 1000, [("y", np.abs(tensors[0][1]))]))


def infers(peer: ScriptedPeer) -> list[Frame]:
    return [f for conn in peer.frames for f in conn if f.type == MsgType.INFER]


# -- a board that cannot be reached -------------------------------------------------
def test_a_silent_board_is_infra_error_for_the_rest_at_once():
    """A board that stays silent on a new connection (a new worker after the case
    timeout killed the last one) is unreachable: infra_error, and the later cases fail
    at once without opening the line again."""
    with ScriptedPeer(lambda frame, peer: None) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.1, retries=1)
        with pytest.raises(DeviceLost, match="did not answer IDENTIFY"):
            target.compile(abs_model())
        connections = len(peer.frames)
        for _ in range(3):
            with pytest.raises(DeviceLost, match="cannot be reached"):
                target.compile(abs_model())
        assert len(peer.frames) == connections  # nothing tried again
        assert issubclass(DeviceLost, InfraError)
        target.close()


def test_with_lost_after_0_an_unreachable_board_is_tried_again_by_each_case():
    with ScriptedPeer(lambda frame, peer: None) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.1, retries=0, lost_after=0)
        for attempt in range(1, 4):
            with pytest.raises(DeviceLost, match="did not answer IDENTIFY") as caught:
                target.compile(abs_model())
            assert "not tried" not in str(caught.value)
            assert len(peer.frames) == attempt  # a new connection and IDENTIFY each time
        target.close()


def test_a_peer_that_hangs_up_at_every_connect_is_infra_error_never_an_assertion():
    with ScriptedPeer(lambda frame, peer: None, on_connect=lambda conn, peer: None) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.2, retries=1)
        assert target.availability().available  # its cases record the infra failure
        for _ in range(6):
            with pytest.raises(InfraError):
                target.compile(abs_model())
        target.close()


def test_an_unreachable_board_leaves_nothing_in_the_probe_cache(tmp_path, monkeypatch):
    """The capability probe of a board that hangs up at every connect stores no
    verdict: an infrastructure failure is never cached as the device's refusal."""
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path / "cache"))
    with ScriptedPeer(lambda frame, peer: None, on_connect=lambda conn, peer: None) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.2, retries=0)
        host = InlineHost(target)
        probe = probe_for(host, target.capabilities())
        for dtype in ("bfloat16", "float16", "int8", "uint16", "int16", "float64"):
            assert probe.verdict(dtype, 5.0) is None
        host.close()
    stored = list((tmp_path / "cache").rglob("*.json"))
    assert stored == [], [p.read_text()[:300] for p in stored]


def test_a_board_that_goes_silent_mid_run_is_infra_error_not_the_boards():
    """The board stops answering during a case (``mute_after``): INFER and the PING
    after it go unanswered, so the case and every later one are infra_error."""
    with ThreadedSim(BoardSimulator, mute_after=5) as sim:  # IDENTIFY, 3 to load, 1 INFER
        target = SerialBoardTarget(url=sim.url, timeout=0.1, retries=1, infer_timeout=0.3)
        executable = target.compile(abs_model())
        executable.run({"x": X})
        with pytest.raises(DeviceLost, match="answered neither a request .* nor a PING"):
            executable.run({"x": X})
        started = sim.sim.receiver.counters.frames
        with pytest.raises(DeviceLost):
            target.compile(abs_model())
        assert sim.sim.receiver.counters.frames == started  # not tried
        target.close()


def test_a_board_that_answers_ping_but_not_infer_is_the_boards_timeout():
    def pong_only(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.PING:
            return encode_frame(MsgType.PONG, frame.seq, frame.payload)
        return clean_board(frame, peer) if frame.type != MsgType.INFER else None

    with ScriptedPeer(pong_only) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.1, retries=1, infer_timeout=0.3)
        executable = target.compile(abs_model())
        with pytest.raises(DeviceTimeout, match="did not answer INFER"):
            executable.run({"x": X})
        assert not isinstance(DeviceTimeout("x"), InfraError)
        target.close()


# -- a lossy link retries on its own schedule ----------------------------------------
def silent_infer_peer() -> ScriptedPeer:
    return ScriptedPeer(identity_or(lambda frame, peer: None))


def test_an_unanswered_infer_is_sent_again_every_link_timeout_within_its_budget():
    """infer_timeout is the device's budget, not the retransmission interval: silent
    attempts within it are sent again every ``timeout`` and use up no retry."""
    with silent_infer_peer() as peer:
        link = SerialLink(LinkSettings(peer.url, timeout=0.2, retries=1))
        client = BoardClient(link, infer_timeout=1.2)
        with link:
            client.identify()
            with pytest.raises(DeviceTimeout, match="one every 0.2 s"):
                client.infer(1, [("x", X)])
        sent = infers(peer)
        # 1.2 s of budget at one attempt per 0.2 s of silence, then the one retry:
        # about 7 attempts (a slow machine may fit one fewer in the budget)
        assert 6 <= len(sent) <= 8, len(sent)
        assert len({f.seq for f in sent}) == 1  # the identical request each time
        assert link.stats.retransmissions == len(sent) - 1


def test_a_lost_answer_is_retried_after_the_link_timeout_not_the_request_budget():
    """The first answer to INFER is lost on the line; the host asks again after
    ``timeout`` (0.2 s), not after ``infer_timeout`` (30 s)."""
    arrivals: list[float] = []

    def lose_first(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        arrivals.append(time.monotonic())
        return None if len(arrivals) == 1 else result_for(frame)

    with ScriptedPeer(identity_or(lose_first)) as peer:
        link = SerialLink(LinkSettings(peer.url, timeout=0.2, retries=3))
        client = BoardClient(link, infer_timeout=30.0)
        with link:
            client.identify()
            outputs, _ = client.infer(1, [("x", X)])
        np.testing.assert_array_equal(outputs[0][1], np.abs(X))
        assert link.stats.retransmissions == 1 and link.stats.silent_attempts == 1
        assert [f.seq for f in infers(peer)] == [2, 2]
        # on the link's schedule: far from the 30 s budget
        assert arrivals[1] - arrivals[0] < 10.0


@pytest.mark.parametrize("pipeline", [1, 4])
def test_a_lossy_simulated_link_loses_no_case_and_counts_each_repair(pipeline):
    """``--fault drop=0.2`` on the simulator: every lost answer costs one
    retransmission (counted), none a timeout, and the device computes each INFER
    once (its cache answers the retransmissions), one at a time and pipelined."""
    from targets.serial.sim.faults import FaultPlan

    with ThreadedSim(BoardSimulator, faults=FaultPlan({"drop": 0.2}, seed=4),
                     pipeline=pipeline) as sim:
        link = SerialLink(LinkSettings(sim.url, timeout=0.25, retries=3))
        client = BoardClient(link, infer_timeout=30.0, load_timeout=30.0, chunk=256)
        with link:
            identify_attempts = 0
            while True:
                identify_attempts += 1
                try:
                    client.identify()
                    break
                except DeviceTimeout:
                    assert identify_attempts < 3
            loaded = client.load(abs_model(), "abs", 256)
            inputs = [[("x", X * (i + 1))] for i in range(20)]
            if pipeline > 1:
                results = client.infer_many(loaded.handle, inputs)
            else:
                results = [client.infer(loaded.handle, tensors) for tensors in inputs]
            for i, (outputs, _) in enumerate(results):
                np.testing.assert_array_equal(outputs[0][1], np.abs(X * (i + 1)))
        dropped = sim.sim.faults.counts["drop"]
        assert dropped >= 3
        assert link.stats.silent_attempts == dropped == link.stats.retransmissions
        assert sim.sim.infers_executed == 20


# -- blame slips found by an independent device ----------------------------------------
def test_a_board_that_hangs_mid_batch_is_a_timeout_not_line_noise():
    pipelined = Identity(1, "Tests", "peer-1", "1.0", "P-1",
                         {"max_chunk": "4096", "pipeline": "4"})
    answered: list[int] = []

    def one_then_hang(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.IDENTIFY:
            return encode_frame(MsgType.IDENTITY, frame.seq, pipelined.encode())
        if answered:
            return None
        answered.append(frame.seq)
        return result_for(frame)

    with ScriptedPeer(one_then_hang) as peer:
        link = SerialLink(LinkSettings(peer.url, timeout=0.2, retries=1))
        client = BoardClient(link, infer_timeout=0.2)
        with link:
            client.identify()
            assert client.pipeline == 4
            with pytest.raises(DeviceTimeout) as caught:
                client.infer_many(1, [[("x", X)]] * 4)
    assert "noise" not in str(caught.value) and "baud" not in str(caught.value)


class ResetMidUpload(BoardSimulator):
    """Forgets every model (a reset) when the third chunk of the first upload
    arrives, then answers as a freshly booted board."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chunks_seen = 0

    def _load_chunk(self, frame: Frame):  # type: ignore[no-untyped-def]
        self.chunks_seen += 1
        if self.chunks_seen == 3:
            self.slots.clear()
        return super()._load_chunk(frame)


def test_a_reset_in_the_middle_of_an_upload_is_reloaded_not_the_devices_no_model():
    with ThreadedSim(ResetMidUpload, max_chunk=16) as sim:
        target = SerialBoardTarget(url=sim.url, timeout=0.5, chunk=16)
        executable = target.compile(abs_model())
        np.testing.assert_array_equal(executable.run({"x": X})["y"], np.abs(X))
        placement = executable.placement()
        assert placement["model_load_restarts"] == 1
        executable.close()
        target.close()


def test_an_error_text_that_is_not_utf8_keeps_the_devices_code():
    def bad_text(frame: Frame, peer: ScriptedPeer) -> bytes:
        text = b"\xff\xfe overflow \xc3"
        payload = struct.pack("<HH", ErrorCode.INFER_FAILED, len(text)) + text
        return encode_frame(MsgType.ERROR, frame.seq, payload)

    with ScriptedPeer(identity_or(bad_text)) as peer:
        link = SerialLink(LinkSettings(peer.url, timeout=0.5))
        client = BoardClient(link)
        with link:
            client.identify()
            with pytest.raises(DeviceError) as caught:
                client.infer(1, [("x", X)])
    assert caught.value.code == ErrorCode.INFER_FAILED
    assert "overflow" in str(caught.value)


# -- no repair goes unrecorded ------------------------------------------------------------
def test_repairs_during_a_load_that_fails_are_in_its_message():
    """The first CHUNK_ACK is lost (one retransmission), then the device rejects the
    model: the failure's message says what the link repaired during the load."""
    chunk_acks: list[int] = []

    def rejecting(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.LOAD_BEGIN:
            return encode_frame(MsgType.LOAD_READY, frame.seq, encode_u32s(7, 0))
        if frame.type == MsgType.LOAD_CHUNK:
            chunk_acks.append(frame.seq)
            if len(chunk_acks) == 1:
                return None
            handle, offset = struct.unpack_from("<II", frame.payload)
            return encode_frame(MsgType.CHUNK_ACK, frame.seq,
                                encode_u32s(handle, offset + len(frame.payload) - 8))
        return error_frame(frame, ErrorCode.MODEL_REJECTED, "not an ONNX model")

    with ScriptedPeer(identity_or(rejecting)) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.2, chunk=4096)
        with pytest.raises(DeviceError, match=r"MODEL_REJECTED.*\[link repairs during the "
                                              r"load: 1 retransmission, 1 unanswered attempt\]"):
            target.compile(abs_model())
        target.close()


def test_a_duplicate_answer_is_counted_and_reported_as_a_repair():
    """A device that answers one INFER twice (a retransmission's answer from its
    cache, say): the second copy is discarded by the next request and counted as a
    duplicate, not as a stale answer."""
    def twice_first(frame: Frame, peer: ScriptedPeer) -> bytes:
        answer = result_for(frame)
        return answer * 2 if len(infers(peer)) == 1 else answer

    with ScriptedPeer(identity_or(twice_first)) as peer:
        link = SerialLink(LinkSettings(peer.url, timeout=0.5))
        client = BoardClient(link)
        with link:
            client.identify()
            before = {**link.stats.as_dict(), "receiver": {}}
            for _ in range(3):
                client.infer(1, [("x", X)])
            after = {**link.stats.as_dict(), "receiver": {}}
    assert link.stats.duplicate_answers == 1 and link.stats.stale_frames == 0
    repairs = link_repairs(before, after)
    assert repairs["duplicate_answers"] == 1 and repairs["stale_answers"] == 0


def clean_board(frame: Frame, peer: ScriptedPeer) -> bytes | None:
    """A board that loads the Abs model as handle 7 and answers every INFER."""
    if frame.type == MsgType.IDENTIFY:
        return encode_frame(MsgType.IDENTITY, frame.seq, BOARD.encode())
    if frame.type == MsgType.LOAD_BEGIN:
        return encode_frame(MsgType.LOAD_READY, frame.seq, encode_u32s(7, 0))
    if frame.type == MsgType.LOAD_CHUNK:
        handle, offset = struct.unpack_from("<II", frame.payload)
        return encode_frame(MsgType.CHUNK_ACK, frame.seq,
                            encode_u32s(handle, offset + len(frame.payload) - 8))
    if frame.type == MsgType.LOAD_END:
        return encode_frame(MsgType.LOADED, frame.seq,
                            encode_loaded(7, sha256(abs_model()), 10))
    if frame.type == MsgType.INFER:
        return result_for(frame)
    return encode_frame(MsgType.ERROR, frame.seq, encode_error(ErrorCode.NOT_SUPPORTED, "no"))


def test_a_load_whose_answers_all_come_is_recorded_with_no_repairs():
    """The counterpart: a clean load and run record zero of every repair."""
    with ScriptedPeer(clean_board) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.5)
        executable = target.compile(abs_model())
        executable.run({"x": X})
        placement = executable.placement()
        target.close()
    for key in ("retransmissions", "damaged_frames", "stray_bytes", "duplicate_answers",
                "stale_answers", "model_load_restarts"):
        assert placement[key] == 0, key


def test_a_lost_identify_answer_is_in_the_first_cases_repairs():
    """IDENTIFY opens the session for a case: its retransmission is that case's."""
    identifies: list[int] = []

    def lose_first_identity(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.IDENTIFY:
            identifies.append(frame.seq)
            if len(identifies) == 1:
                return None
        return clean_board(frame, peer)

    with ScriptedPeer(lose_first_identity) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.2)
        first = target.compile(abs_model())
        assert first.placement()["retransmissions"] == 1
        first.close()
        second = target.compile(abs_model())
        assert second.placement()["retransmissions"] == 0
        target.close()
