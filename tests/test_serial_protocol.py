"""The serial wire protocol: frames, checksums, payloads, the resynchronising
receiver, fault plans, pacing, ground truth, and the worked examples of
docs/protocol.md. No processes, no ports."""

from __future__ import annotations

import math
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

from targets.serial import docgen
from targets.serial.board import SerialBoardTarget
from targets.serial.groundtruth import (
    FigureEight,
    MovingReflector,
    TruthError,
    declaration,
    from_declaration,
    read_csv,
    write_csv,
)
from targets.serial.pacing import Pacer
from targets.serial.protocol import (
    DTYPE_CODES,
    HEADER_SIZE,
    V1_DTYPES,
    WIRE_DTYPES,
    DeviceClass,
    Frame,
    Identity,
    ImuSample,
    MsgType,
    ProtocolError,
    RangeSample,
    Reader,
    crc16,
    crc32,
    decode_error,
    decode_infer,
    decode_result,
    decode_sample,
    decode_tensor,
    encode_error,
    encode_frame,
    encode_infer,
    encode_result,
    encode_sample,
    encode_tensor,
    parse_header,
)
from targets.serial.receiver import Damage, FrameReceiver, Stray
from targets.serial.sim.faults import FaultPlan, FaultSpecError, parse_faults
from tests.test_worker_wire import same_bits, sample

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_checksums_match_the_catalogue_check_values():
    assert crc16(b"123456789") == 0x29B1
    assert crc32(b"123456789") == 0xCBF43926


def test_frame_layout_is_little_endian_with_both_checks():
    frame = encode_frame(MsgType.PING, 0x01020304, b"\xaa\xbb")
    assert frame[:2] == b"\xa5\x5a" and frame[2] == 1 and frame[3] == 0x02
    assert frame[4:8] == bytes([4, 3, 2, 1]) and frame[8:12] == bytes([2, 0, 0, 0])
    assert int.from_bytes(frame[12:14], "little") == crc16(frame[2:12])
    assert frame[14:16] == b"\xaa\xbb"
    assert int.from_bytes(frame[16:20], "little") == crc32(frame[2:16])
    header = parse_header(frame)
    assert (header.type, header.seq, header.length, header.total) == (2, 0x01020304, 2, 20)


def test_docs_carry_the_generated_worked_examples():
    text = DOC.read_text(encoding="utf-8")
    for name, _, frame in docgen.examples():
        block = re.search(rf"<!-- example: {name} -->.*?```text\n(.*?)```", text, re.S)
        assert block, f"docs/protocol.md lacks the worked example {name!r}"
        assert block.group(1).strip() == docgen.hex_lines(frame), (
            f"worked example {name!r} in docs/protocol.md differs from the encoder; "
            f"regenerate with python -m targets.serial.docgen")
        hex_bytes = bytes.fromhex(" ".join(line[8:] for line in block.group(1).splitlines()))
        assert FrameReceiver().feed(hex_bytes)[0].payload == frame[HEADER_SIZE:-4]


def test_docs_field_by_field_checksums_are_right():
    text = DOC.read_text(encoding="utf-8")
    assert f"= 0x{crc16(bytes.fromhex('01 01 01 00 00 00 00 00 00 00')):04X}" in text
    assert f"= 0x{crc32(bytes.fromhex('01 01 01 00 00 00 00 00 00 00 8c 22')):08X}" in text


# -- payloads ---------------------------------------------------------------------

def test_identity_round_trip():
    ident = Identity(DeviceClass.SENSOR, "Vendor 供应商", "M", "1.2.3", "SN1",
                     {"rate_hz": "400", "sensor": "imu"})
    assert Identity.decode(ident.encode()) == ident


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
def test_tensor_round_trip_for_every_wire_dtype(dtype):
    """Every bit pattern survives, and the data is the ONNX ``raw_data`` layout (4- and
    2-bit elements packed low bits first)."""
    array = sample(dtype)
    encoded = encode_tensor("t", array)
    name, back = decode_tensor(Reader(encoded))
    assert name == "t" and same_bits(back, array)
    assert encoded.endswith(numpy_helper.from_array(array).raw_data)


def test_a_tensor_whose_byte_count_disagrees_with_its_packed_size_is_refused():
    encoded = bytearray(encode_tensor("t", sample("int4", 5)))  # 5 x 4 bits = 3 bytes
    size_at = len(encoded) - 3 - 4
    encoded[size_at:size_at + 4] = struct.pack("<I", 5)
    with pytest.raises(ProtocolError, match=r"5 data bytes .* \(expected 3\)"):
        decode_tensor(Reader(bytes(encoded) + b"\0\0"))


def test_a_board_that_declares_no_dtypes_is_taken_at_revision_1_0s_table():
    target = SerialBoardTarget(url="unused")
    assert target.capabilities().dtypes == V1_DTYPES
    assert "bfloat16" not in V1_DTYPES and set(V1_DTYPES) <= set(WIRE_DTYPES)


def test_scalar_and_empty_tensors_round_trip():
    for array in (np.float32(3.5), np.zeros((0, 3), np.int64)):
        _, back = decode_tensor(Reader(encode_tensor("s", np.asarray(array))))
        np.testing.assert_array_equal(back, np.asarray(array))


def test_unsendable_tensors_are_refused():
    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode_tensor("s", np.array(["a"]))


def test_infer_and_result_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    handle, tensors = decode_infer(encode_infer(7, [("x", x), ("k", np.array(5))]))
    assert handle == 7 and [n for n, _ in tensors] == ["x", "k"]
    handle, ns, outputs = decode_result(encode_result(7, 123456789012, [("y", x * 2)]))
    assert (handle, ns) == (7, 123456789012)
    np.testing.assert_array_equal(outputs[0][1], x * 2)


@pytest.mark.parametrize("payload, message", [
    (encode_infer(1, [("x", np.zeros(2, np.float32))])[:-3], "truncated"),
    (encode_infer(1, []) + b"\x00", "trailing"),
    (b"\x01\x00\x00\x00\x01\x00" + b"\x01\x00x" + bytes([99, 0]) + b"\x00" * 4,
     "unknown dtype"),
    (b"\x01\x00\x00\x00\x01\x00" + b"\x01\x00x" + bytes([1, 1]) + b"\x02\x00\x00\x00"
     + b"\x04\x00\x00\x00" + b"\x00" * 4, "expected 8"),
])
def test_malformed_payloads_raise_protocol_error(payload, message):
    with pytest.raises(ProtocolError, match=message):
        decode_infer(payload)


def test_error_and_samples_round_trip():
    assert decode_error(encode_error(0x14, "no kernel")) == (0x14, "no kernel")
    imu = ImuSample((1, -2, 2048, 0, 5, -32768), 0.0048, 0.001)
    frame = Frame(MsgType.SAMPLE, 9, encode_sample(1000, imu))
    sample = decode_sample(frame)
    assert (sample.seq, sample.timestamp_us, sample.body.raw) == (9, 1000, imu.raw)
    assert sample.body.values()["az"] == pytest.approx(2048 * 0.0048, rel=1e-6)
    ranged = decode_sample(Frame(MsgType.SAMPLE, 1, encode_sample(5, RangeSample(1234, 9, 1))))
    assert ranged.body.distance_mm == 1234 and not ranged.body.valid
    with pytest.raises(ProtocolError, match="payload type"):
        decode_sample(Frame(MsgType.SAMPLE, 1, b"\x00" * 8 + b"\x09"))


# -- the receiver -------------------------------------------------------------------

def frames(count, payload=b"0123456789abcdef"):
    return [encode_frame(MsgType.SAMPLE, i, payload + bytes([i % 256])) for i in range(count)]


def kinds(events):
    return [type(e).__name__ if not isinstance(e, Damage) else f"Damage:{e.kind}"
            for e in events]


def test_receiver_passes_a_clean_stream_fed_byte_by_byte():
    data = b"".join(frames(5))
    receiver = FrameReceiver()
    events = [e for byte in data for e in receiver.feed(bytes([byte]))]
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert receiver.counters.stray_bytes == 0 and receiver.pending == 0


def test_receiver_skips_garbage_and_counts_it():
    f = frames(3)
    events = FrameReceiver().feed(b"\x00\xa5\x11junk" + f[0] + b"\xa5" + f[1] + f[2])
    assert kinds(events) == ["Stray", "Frame", "Stray", "Frame", "Frame"]
    assert [e.nbytes for e in events if isinstance(e, Stray)] == [7, 1]


def test_bit_error_in_the_payload_is_a_crc_damage_and_the_next_frame_survives():
    f = frames(3)
    hit = bytearray(f[1])
    hit[20] ^= 0x10
    receiver = FrameReceiver()
    events = receiver.feed(f[0] + bytes(hit) + f[2])
    assert kinds(events) == ["Frame", "Damage:crc", "Frame"]
    assert events[1].header.seq == 1 and events[1].nbytes == len(f[1])
    assert receiver.counters.damaged == {"crc": 1}


def test_a_dropped_byte_makes_a_short_frame_and_the_next_frame_is_found():
    f = frames(3)
    shortened = f[1][:25] + f[1][26:]
    events = FrameReceiver().feed(f[0] + shortened + f[2])
    assert kinds(events) == ["Frame", "Damage:short", "Frame"]
    assert events[1].missing == 1 and [e.seq for e in events if isinstance(e, Frame)] == [0, 2]


def test_a_hit_header_turns_the_frame_into_stray_bytes():
    f = frames(3)
    hit = bytearray(f[1])
    hit[6] ^= 0x01  # inside SEQ: the header check fails
    events = FrameReceiver().feed(f[0] + bytes(hit) + f[2])
    assert kinds(events) == ["Frame", "Stray", "Frame"]
    assert events[1].nbytes == len(f[1])


def test_a_truncated_last_frame_expires_as_short():
    f = frames(2)
    receiver = FrameReceiver()
    assert kinds(receiver.feed(f[0] + f[1][:20])) == ["Frame"]
    assert receiver.needed() == len(f[1]) - 20
    events = receiver.expire()
    assert kinds(events) == ["Damage:short"] and events[0].missing == len(f[1]) - 20
    assert receiver.pending == 0


def test_an_oversize_header_is_rejected_without_waiting_for_it():
    big = encode_frame(MsgType.RESULT, 1, bytes(100))
    receiver = FrameReceiver(max_payload=50)
    assert kinds(receiver.feed(big[:HEADER_SIZE])) == ["Damage:oversize"]


def test_reset_forgets_a_partial_frame():
    receiver = FrameReceiver()
    receiver.feed(frames(1)[0][:10])
    assert receiver.reset() == 10 and receiver.pending == 0


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_receiver_survives_random_corruption_and_keeps_every_intact_frame(seed):
    rng = np.random.default_rng(seed)
    f = frames(400)
    stream = bytearray()
    intact = []
    for i, frame in enumerate(f):
        data = bytearray(frame)
        roll = rng.random()
        if roll < 0.1:
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        elif roll < 0.2:
            del data[rng.integers(len(data))]
        elif roll < 0.25:
            data = data[: rng.integers(1, len(data))]
        else:
            intact.append(i)
        if rng.random() < 0.05:
            stream += bytes(rng.integers(0, 256, 5, dtype=np.uint8)).replace(b"\xa5", b"\x00")
        stream += data
    receiver = FrameReceiver()
    events = []
    for start in range(0, len(stream), 97):
        events += receiver.feed(bytes(stream[start:start + 97]))
    events += receiver.expire()
    got = [e.seq for e in events if isinstance(e, Frame)]
    assert got == intact


# -- faults ---------------------------------------------------------------------------

def test_fault_plans_are_deterministic_and_hit_one_frame_per_block():
    plan = FaultPlan({"drop": 0.01}, seed=5)
    hits = [i for i in range(10_000) if plan.hits("drop", i)]
    assert len(hits) == 100
    assert all(100 * k <= h < 100 * (k + 1) for k, h in enumerate(hits))
    assert hits == [i for i in range(10_000) if FaultPlan({"drop": 0.01}, seed=5).hits("drop", i)]
    assert hits != [i for i in range(10_000) if FaultPlan({"drop": 0.01}, seed=6).hits("drop", i)]
    for start in (0, 123, 4567):
        window = sum(plan.hits("drop", i) for i in range(start, start + 350))
        assert 3 <= window <= 4


def test_fault_damage_is_logged_per_frame(tmp_path):
    plan = FaultPlan({"bit_errors": 0.5, "garbage": 0.25}, seed=1, log_path=tmp_path / "f.jsonl")
    out = [plan.damage(encode_frame(MsgType.SAMPLE, i, b"x" * 10), i, seq=i) for i in range(8)]
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert plan.counts == {"bit_errors": 4, "garbage": 2} and len(lines) == 6
    assert all(b"\xa5" not in o[: len(o) - 28] for o in out if len(o) > 28)


@pytest.mark.parametrize("spec, message", [
    (["warp=1"], "unknown fault"), (["drop"], "needs a value"), (["drop=x"], "not a number"),
    (["drop=2"], "at most 1"), (["noise=-1"], ">= 0")])
def test_bad_fault_specs_are_refused(spec, message):
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec, ("drop", "noise"))


# -- pacing ------------------------------------------------------------------------

def test_pacing_never_delivers_faster_than_the_line_rate():
    pacer = Pacer(baud=115200, bits_per_byte=10)
    arrivals = []
    started = time.perf_counter()
    pacer.write(lambda chunk: arrivals.append((time.perf_counter(), len(chunk))), bytes(2000))
    delivered = 0
    for when, size in arrivals:
        delivered += size
        assert when - started >= delivered * 10 / 115200 - 1e-4
    assert delivered == 2000


# -- ground truth ------------------------------------------------------------------

def test_figure_eight_gyro_is_the_body_rate_of_its_rotation():
    motion = FigureEight()
    for t in (0.3, 1.7, 4.2):
        h = 1e-5
        derivative = (motion.rotation(t + h) - motion.rotation(t - h)) / (2 * h)
        omega = motion.rotation(t).T @ derivative  # skew-symmetric: body rates
        rates = motion.at(np.array([t]))
        assert omega[2, 1] == pytest.approx(rates["gx"][0], abs=1e-6)
        assert omega[0, 2] == pytest.approx(rates["gy"][0], abs=1e-6)
        assert omega[1, 0] == pytest.approx(rates["gz"][0], abs=1e-6)


def test_figure_eight_accelerometer_reads_gravity_plus_motion():
    motion = FigureEight()
    t = np.linspace(0, 20, 2001)
    values = motion.at(t)
    norm = np.sqrt(values["ax"] ** 2 + values["ay"] ** 2 + values["az"] ** 2)
    w = 2 * math.pi / motion.period_s
    horizontal = np.hypot(motion.radius_m * w * w * np.sin(w * t),
                          2 * motion.radius_m * w * w * np.sin(2 * w * t))
    np.testing.assert_allclose(norm, np.hypot(9.80665, horizontal), rtol=1e-9)


def test_declared_truth_models_round_trip():
    for model in (FigureEight(radius_m=0.3), MovingReflector(center_m=2.0)):
        assert from_declaration(declaration(model)) == model
    assert from_declaration({}) is None
    with pytest.raises(TruthError, match="unknown truth model"):
        from_declaration({"truth_model": "teleport"})


def test_truth_csv_round_trip_interpolates_and_knows_its_span(tmp_path):
    path = tmp_path / "truth.csv"
    rows = write_csv(path, MovingReflector(), 1.0, 3.0, 1000)
    recorded = read_csv(path)
    assert rows == 2001 and recorded.channels == ("distance_m",)
    t = np.array([0.5, 1.2345, 2.5, 3.5])
    got = recorded.at(t)["distance_m"]
    assert np.isnan(got[0]) and np.isnan(got[3])
    np.testing.assert_allclose(got[1:3], MovingReflector().at(t[1:3])["distance_m"], atol=1e-5)


@pytest.mark.parametrize("content, message", [
    ("", "cannot read"), ("time,distance_m\n0,1\n1,1\n", "first column"),
    ("timestamp_us,speed\n0,1\n1,1\n", "columns must be"),
    ("timestamp_us,distance_m\n0,1\n", "at least two rows"),
    ("timestamp_us,distance_m\n5,1\n5,1\n", "increase strictly"),
    ("timestamp_us,distance_m\n0,x\n1,1\n", "could not convert")])
def test_bad_truth_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TruthError, match=message):
        read_csv(path)


def test_the_specs_dtype_table_is_the_wire_table():
    """docs/protocol.md section 5.4 lists every code the reference codec carries, with
    its element bits, and nothing else."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    section = text[text.index("### 5.4 Tensors"):text.index("### 5.5 INFER")]
    rows = re.findall(r"^\| (\d+) \| (\w+)[^|]* \| (\d+) \| 1\.[0-2] \|$", section, re.M)
    assert {int(code): (name, int(bits)) for code, name, bits in rows} == {
        code: (kind.name, kind.bits) for code, kind in DTYPE_CODES.items()}
