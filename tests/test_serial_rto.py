"""The serial link's adaptive retransmission timeout (RFC 6298): a lossy link costs
about a round trip per lost answer, not the link's whole ``timeout``; the timer's
arithmetic; and the availability probe's link repairs in the target description."""

from __future__ import annotations

import numpy as np
import pytest

from targets.serial.board import BoardClient, SerialBoardTarget
from targets.serial.pacing import RetransmitTimer
from targets.serial.protocol import Frame, MsgType
from targets.serial.sim.launch import SimProcess
from targets.serial.transport import DeviceTimeout, LinkSettings, SerialLink
from tests.serial_peers import ScriptedPeer
from tests.test_serial_blame import clean_board
from tests.test_serial_link import abs_model, injected

pytest.importorskip("serial")

X = np.arange(32, dtype=np.float32).reshape(4, 8) - 16


def test_the_timer_follows_rfc_6298():
    timer = RetransmitTimer(initial=2.0, floor=0.1, ceiling=2.0)
    assert timer.rto() == 2.0  # nothing measured yet
    timer.sample(0.04)
    assert (timer.srtt, timer.rttvar) == (0.04, 0.02)
    assert timer.rto() == pytest.approx(0.04 + 0.1)  # K x RTTVAR = 0.08 < floor
    timer.sample(0.2)
    assert timer.rttvar == pytest.approx(0.75 * 0.02 + 0.25 * 0.16)
    assert timer.srtt == pytest.approx(0.875 * 0.04 + 0.125 * 0.2)
    assert timer.rto() == pytest.approx(timer.srtt + 4 * timer.rttvar)
    measured = timer.rto()
    timer.expired()
    assert timer.rto() == pytest.approx(2 * measured)  # backed off
    for _ in range(40):
        timer.expired()
    assert timer.rto() == 2.0  # bounded by the ceiling
    timer.sample(0.01)  # a clean round trip clears the backoff
    assert timer.backoff == 0 and timer.rto() < 1.0
    with pytest.raises(ValueError, match="floor"):
        RetransmitTimer(initial=1.0, floor=0.0, ceiling=1.0)


def run_lossy(tmp_path, min_rto: float, rounds: int) -> tuple[SerialLink, int]:
    """Loads, INFERs and UNLOADs through ``shipei sim board --fault drop=0.2`` with the
    default 2 s ``timeout``; returns the link and the answers the board dropped."""
    events = tmp_path / "events.jsonl"
    process = SimProcess("board", "--seed", "4", "--fault", "drop=0.2", "--events", str(events),
                         log=tmp_path / "sim.log", lifetime=120)
    try:
        link = SerialLink(LinkSettings(process.url, timeout=2.0, min_rto=min_rto))
        client = BoardClient(link, chunk=256)
        with link:
            for _ in range(3):  # the first IDENTITY may be dropped too (3 attempts each)
                try:
                    client.identify()
                    break
                except DeviceTimeout:
                    continue
            for i in range(rounds):
                loaded = client.load(abs_model(), "abs", 256)
                outputs, _ = client.infer(loaded.handle, [("x", X * (i + 1))])
                np.testing.assert_array_equal(outputs[0][1], np.abs(X * (i + 1)))
                client.unload(loaded.handle)
    finally:
        process.stop()
    dropped = sum(e["kind"] == "drop" for e in injected(events))
    return link, dropped


def test_a_lost_answer_costs_a_round_trip_not_the_link_timeout(tmp_path):
    """With 1 answer in 5 dropped, every loss is repaired by one retransmission, sent
    after the learned timeout: the silence waited out is a small part of the 2 s per
    loss the fixed schedule took (a bound 4x above what the timer waits here)."""
    link, dropped = run_lossy(tmp_path, min_rto=0.1, rounds=12)
    assert dropped >= 8
    assert link.stats.silent_attempts >= dropped  # each loss seen, none unrepaired
    assert link.stats.retransmissions == link.stats.silent_attempts
    assert link.stats.silence_s < dropped * 2.0 / 4, (link.stats, link.timer_states())
    learned = link.timer_states()
    assert learned["INFER"]["samples"] > 0 and learned["INFER"]["srtt_s"] < 0.5


@pytest.mark.slow
def test_the_fixed_schedule_costs_the_link_timeout_per_lost_answer(tmp_path):
    """The counterpart: ``min_rto`` equal to ``timeout`` is revision 1.4's fixed
    schedule, where each loss costs the whole 2 s (what the test above bounds)."""
    link, dropped = run_lossy(tmp_path, min_rto=2.0, rounds=4)
    assert dropped >= 2
    assert link.stats.silence_s >= 0.9 * dropped * 2.0


def test_the_probes_link_repairs_are_in_the_target_description():
    """The availability probe's IDENTIFY lost its first answer: run.json's target
    description says so (the cases' records carry their own repairs)."""
    identifies: list[int] = []

    def lose_first_identity(frame: Frame, peer: ScriptedPeer) -> bytes | None:
        if frame.type == MsgType.IDENTIFY:
            identifies.append(frame.seq)
            if len(identifies) == 1:
                return None
        return clean_board(frame, peer)

    with ScriptedPeer(lose_first_identity) as peer:
        target = SerialBoardTarget(url=peer.url, timeout=0.2)
        assert target.availability().available
        described = target.describe()
        target.close()
    assert described["probe_link_repairs"]["retransmissions"] == 1
    assert described["probe_link_repairs"]["unanswered_attempts"] == 1
    assert described["available"] is True
