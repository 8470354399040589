"""The Shipei serial wire protocol, version 1: frames and message payloads.

``docs/protocol.md`` is the normative description (a firmware engineer implements
the device side from it); this module is the reference implementation the host
and the simulators share. Everything on the wire is little-endian.

Frame::

    offset  size  field
    0       2     SYNC     0xA5 0x5A
    2       1     VERSION  0x01
    3       1     TYPE     message type
    4       4     SEQ      u32
    8       4     LENGTH   u32, payload bytes
    12      2     HCRC     u16, CRC-16/CCITT-FALSE over bytes 2..11
    14      N     PAYLOAD
    14+N    4     CRC      u32, CRC-32 (IEEE 802.3) over bytes 2..14+N-1
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.isolation.tensors import (
    ELEMENT_TYPES,
    ElementType,
    element_count,
    from_packed_bytes,
    packed_bytes,
)

SYNC = b"\xa5\x5a"
#: the frame format version carried in every header (unchanged by revisions 1.1 to 1.4)
VERSION = 1
#: the revision of docs/protocol.md this implementation follows; a device declares
#: the one it follows in the ``protocol`` capability (absent: "1.0")
REVISION = "1.4"
#: the longest PING payload a device must echo
MAX_PING = 256
HEADER = struct.Struct("<2sBBIIH")  # sync, version, type, seq, length, hcrc
HEADER_SIZE = HEADER.size  # 14
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
#: the largest payload any version-1 device or host may send (16 MiB)
ABSOLUTE_MAX_PAYLOAD = 16 * 1024 * 1024
NO_SEQ = 0xFFFFFFFF


class ProtocolError(Exception):
    """A frame or payload that does not follow the protocol."""


class MsgType(enum.IntEnum):
    IDENTIFY = 0x01
    PING = 0x02
    LOAD_BEGIN = 0x10
    LOAD_CHUNK = 0x11
    LOAD_END = 0x12
    UNLOAD = 0x13
    INFER = 0x20
    STREAM_START = 0x30
    STREAM_STOP = 0x31
    IDENTITY = 0x81
    PONG = 0x82
    LOAD_READY = 0x90
    CHUNK_ACK = 0x91
    LOADED = 0x92
    UNLOADED = 0x93
    RESULT = 0xA0
    STREAM_STARTED = 0xB0
    STREAM_STOPPED = 0xB1
    SAMPLE = 0xC0
    ERROR = 0xFF


def response_type(request: int) -> int:
    """A request's response type: the request type with bit 7 set."""
    return request | 0x80


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 0x0001  # payload CRC-32 mismatch: the host retransmits
    VERSION = 0x0002
    UNKNOWN_TYPE = 0x0003
    BAD_PAYLOAD = 0x0004
    TOO_LARGE = 0x0005
    BUSY = 0x0006
    NOT_SUPPORTED = 0x0007  # a message this device class does not implement
    NO_MODEL = 0x0010
    BAD_OFFSET = 0x0011
    SIZE_MISMATCH = 0x0012
    MODEL_REJECTED = 0x0013
    UNSUPPORTED_MODEL = 0x0014
    NO_SLOT = 0x0015
    BAD_INPUT = 0x0020
    INFER_FAILED = 0x0021
    BAD_RATE = 0x0030
    INTERNAL = 0x00FF


class DeviceClass(enum.IntEnum):
    BOARD = 1
    SENSOR = 2


class PayloadType(enum.IntEnum):
    IMU6 = 0x01
    RANGE = 0x02


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout)."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes | memoryview) -> int:
    """CRC-32 as in IEEE 802.3 / zlib (reflected poly 0xEDB88320, init and xorout ~0)."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes
    version: int = VERSION

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def type_name(value: int) -> str:
    try:
        return MsgType(value).name
    except ValueError:
        return f"0x{value:02X}"


def encode_header(msg_type: int, seq: int, length: int, version: int = VERSION) -> bytes:
    body = struct.pack("<BBII", version, msg_type, seq & 0xFFFFFFFF, length)
    return SYNC + body + struct.pack("<H", crc16(body))


def encode_frame(msg_type: int, seq: int, payload: bytes = b"", version: int = VERSION
                 ) -> bytes:
    if len(payload) > ABSOLUTE_MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {ABSOLUTE_MAX_PAYLOAD}")
    header = encode_header(msg_type, seq, len(payload), version)
    crc = zlib.crc32(payload, zlib.crc32(header[2:])) & 0xFFFFFFFF
    return header + payload + struct.pack("<I", crc)


@dataclass(frozen=True)
class Header:
    version: int
    type: int
    seq: int
    length: int

    @property
    def total(self) -> int:
        return HEADER_SIZE + self.length + TRAILER_SIZE


def parse_header(data: bytes | bytearray | memoryview) -> Header | None:
    """The header at the start of ``data`` if its sync and HCRC are right, else None."""
    if len(data) < HEADER_SIZE or bytes(data[:2]) != SYNC:
        return None
    sync, version, msg_type, seq, length, hcrc = HEADER.unpack_from(data, 0)
    if crc16(bytes(data[2:12])) != hcrc:
        return None
    return Header(version, msg_type, seq, length)


def frame_crc_ok(data: bytes | bytearray | memoryview, header: Header) -> bool:
    end = HEADER_SIZE + header.length
    (crc,) = struct.unpack_from("<I", data, end)
    return crc32(memoryview(data)[2:end]) == crc


# -- payload primitives -----------------------------------------------------------

class Reader:
    """Cursor over a payload; every read checks bounds and raises ProtocolError."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError(f"payload truncated: needs {size} more bytes at offset "
                                f"{self.pos}, has {len(self.data) - self.pos}")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        st = struct.Struct("<" + fmt)
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def u64(self) -> int:
        return self.unpack("Q")[0]

    def string(self, lenient: bool = False) -> str:
        """A ``str`` field; ``lenient``: bytes that are not UTF-8 become U+FFFD
        instead of failing (for text only shown to a person, such as ERROR's)."""
        size = self.u16()
        raw = bytes(self.take(size))
        if lenient:
            return raw.decode("utf-8", errors="replace")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string is not UTF-8: {exc}") from None

    def rest(self) -> bytes:
        return bytes(self.take(len(self.data) - self.pos))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.pos} unexpected trailing payload bytes")


def pack_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ProtocolError("string longer than 65535 bytes")
    return struct.pack("<H", len(raw)) + raw


# -- identity ---------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    device_class: int
    vendor: str
    model: str
    firmware: str
    serial_number: str = ""
    capabilities: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        parts = [struct.pack("<B", self.device_class), pack_str(self.vendor),
                 pack_str(self.model), pack_str(self.firmware), pack_str(self.serial_number),
                 struct.pack("<H", len(self.capabilities))]
        for key, value in self.capabilities.items():
            parts += [pack_str(key), pack_str(str(value))]
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Identity:
        r = Reader(payload)
        device_class = r.u8()
        vendor, model, firmware, serial = r.string(), r.string(), r.string(), r.string()
        caps = {}
        for _ in range(r.u16()):
            key = r.string()
            caps[key] = r.string()
        r.end()
        return cls(device_class, vendor, model, firmware, serial, caps)

    def cap_int(self, key: str, default: int) -> int:
        try:
            return int(self.capabilities.get(key, default))
        except ValueError:
            raise ProtocolError(f"capability {key}={self.capabilities[key]!r} is not an integer"
                                ) from None

    def cap_float(self, key: str, default: float) -> float:
        try:
            return float(self.capabilities.get(key, default))
        except ValueError:
            raise ProtocolError(f"capability {key}={self.capabilities[key]!r} is not a number"
                                ) from None


# -- errors -----------------------------------------------------------------------

def encode_error(code: int, text: str) -> bytes:
    return struct.pack("<H", code) + pack_str(text[:1000])


def decode_error(payload: bytes) -> tuple[int, str]:
    """ERROR's code and text. A text that is not UTF-8 keeps the code: its bad bytes
    are shown as U+FFFD (docs/protocol.md section 5.6)."""
    r = Reader(payload)
    code, text = r.u16(), r.string(lenient=True)
    r.end()
    return code, text


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:04X}"


# -- model loading ----------------------------------------------------------------

def encode_load_begin(size: int, sha256: bytes, name: str) -> bytes:
    return struct.pack("<I32s", size, sha256) + pack_str(name)


def decode_load_begin(payload: bytes) -> tuple[int, bytes, str]:
    r = Reader(payload)
    size, digest = r.unpack("I32s")
    name = r.string()
    r.end()
    return size, digest, name


def encode_chunk(handle: int, offset: int, data: bytes) -> bytes:
    return struct.pack("<II", handle, offset) + data


def decode_chunk(payload: bytes) -> tuple[int, int, bytes]:
    r = Reader(payload)
    handle, offset = r.unpack("II")
    return handle, offset, r.rest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- tensors ----------------------------------------------------------------------

#: ONNX TensorProto.DataType code -> element type, for every type the wire carries:
#: every ONNX tensor type but strings (revision 1.2; revisions 1.0 and 1.1 carried
#: V1_DTYPES only). Data is ONNX ``raw_data``: little-endian, sub-byte types packed.
DTYPE_CODES: dict[int, ElementType] = {
    kind.onnx: kind for kind in ELEMENT_TYPES.values() if kind.name != "string"}
CODE_OF_DTYPE: dict[str, int] = {kind.name: code for code, kind in DTYPE_CODES.items()}
#: the element type names of every wire dtype (what a board declares at most)
WIRE_DTYPES: tuple[str, ...] = tuple(kind.name for kind in DTYPE_CODES.values())
#: what a board that declares no ``dtypes`` capability takes: revision 1.0's table
V1_DTYPES: tuple[str, ...] = ("float32", "uint8", "int8", "uint16", "int16", "int32",
                              "int64", "bool", "float16", "float64", "uint32", "uint64")


def data_size(kind: ElementType, dims: Sequence[int]) -> int:
    """Bytes of a tensor's data: ceil(elements x bits / 8)."""
    return (element_count(tuple(dims)) * kind.bits + 7) // 8


def encode_tensor(name: str, array: np.ndarray) -> bytes:
    array = np.asarray(array)
    code = CODE_OF_DTYPE.get(array.dtype.name)
    if code is None:
        raise ProtocolError(f"tensor {name!r}: dtype {array.dtype} cannot be sent "
                            f"(wire dtypes: {', '.join(WIRE_DTYPES)})")
    if array.ndim > 255:
        raise ProtocolError(f"tensor {name!r}: rank {array.ndim} exceeds 255")
    if any(d > 0xFFFFFFFF for d in array.shape):
        raise ProtocolError(f"tensor {name!r}: a dimension exceeds 2^32-1")
    raw = packed_bytes(array)
    return (pack_str(name) + struct.pack("<BB", code, array.ndim)
            + struct.pack(f"<{array.ndim}I", *array.shape) + struct.pack("<I", len(raw)) + raw)


def decode_tensor(r: Reader) -> tuple[str, np.ndarray]:
    name = r.string()
    code, rank = r.unpack("BB")
    if code not in DTYPE_CODES:
        raise ProtocolError(f"tensor {name!r}: unknown dtype code {code}")
    dims = r.unpack(f"{rank}I") if rank else ()
    nbytes = r.u32()
    kind = DTYPE_CODES[code]
    expected = data_size(kind, dims)
    if nbytes != expected:
        raise ProtocolError(f"tensor {name!r}: {nbytes} data bytes for shape {list(dims)} "
                            f"of {kind.name} (expected {expected})")
    return name, from_packed_bytes(kind.name, dims, r.take(nbytes))


def encode_tensors(tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    return struct.pack("<H", len(tensors)) + b"".join(encode_tensor(n, a) for n, a in tensors)


def decode_tensors(r: Reader) -> list[tuple[str, np.ndarray]]:
    return [decode_tensor(r) for _ in range(r.u16())]


def encode_infer(handle: int, tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    return struct.pack("<I", handle) + encode_tensors(tensors)


def decode_infer(payload: bytes) -> tuple[int, list[tuple[str, np.ndarray]]]:
    r = Reader(payload)
    handle = r.u32()
    tensors = decode_tensors(r)
    r.end()
    return handle, tensors


def encode_result(handle: int, compute_ns: int, tensors: Sequence[tuple[str, np.ndarray]]
                  ) -> bytes:
    return struct.pack("<IQ", handle, compute_ns) + encode_tensors(tensors)


def decode_result(payload: bytes) -> tuple[int, int, list[tuple[str, np.ndarray]]]:
    r = Reader(payload)
    handle, compute_ns = r.unpack("IQ")
    tensors = decode_tensors(r)
    r.end()
    return handle, compute_ns, tensors


# -- sensor samples ---------------------------------------------------------------

IMU_BODY = struct.Struct("<6hff")
RANGE_BODY = struct.Struct("<HBB")
SAMPLE_HEAD = struct.Struct("<QB")  # timestamp_us, payload type


@dataclass(frozen=True)
class ImuSample:
    raw: tuple[int, int, int, int, int, int]  # ax, ay, az, gx, gy, gz in LSB
    accel_scale: float  # m/s^2 per LSB
    gyro_scale: float  # rad/s per LSB

    @property
    def accel(self) -> tuple[float, float, float]:
        return tuple(v * self.accel_scale for v in self.raw[:3])  # type: ignore[return-value]

    @property
    def gyro(self) -> tuple[float, float, float]:
        return tuple(v * self.gyro_scale for v in self.raw[3:])  # type: ignore[return-value]

    def values(self) -> dict[str, float]:
        ax, ay, az = self.accel
        gx, gy, gz = self.gyro
        return {"ax": ax, "ay": ay, "az": az, "gx": gx, "gy": gy, "gz": gz}


RANGE_NO_ECHO = 0x01  # flags bit 0: no echo / out of range; distance_mm is meaningless


@dataclass(frozen=True)
class RangeSample:
    distance_mm: int
    echo_strength: int  # 0..255, relative amplitude of the echo
    flags: int = 0

    @property
    def valid(self) -> bool:
        return not self.flags & RANGE_NO_ECHO

    def values(self) -> dict[str, float]:
        return {"distance_m": self.distance_mm / 1000.0}


@dataclass(frozen=True)
class Sample:
    seq: int
    timestamp_us: int
    body: ImuSample | RangeSample

    @property
    def payload_type(self) -> int:
        return PayloadType.IMU6 if isinstance(self.body, ImuSample) else PayloadType.RANGE


def encode_sample(timestamp_us: int, body: ImuSample | RangeSample) -> bytes:
    if isinstance(body, ImuSample):
        return SAMPLE_HEAD.pack(timestamp_us, PayloadType.IMU6) + IMU_BODY.pack(
            *body.raw, body.accel_scale, body.gyro_scale)
    return SAMPLE_HEAD.pack(timestamp_us, PayloadType.RANGE) + RANGE_BODY.pack(
        body.distance_mm, body.echo_strength, body.flags)


def decode_sample(frame: Frame) -> Sample:
    r = Reader(frame.payload)
    timestamp_us, kind = r.unpack("QB")
    if kind == PayloadType.IMU6:
        *raw, accel_scale, gyro_scale = r.unpack("6hff")
        body: ImuSample | RangeSample = ImuSample(tuple(raw), accel_scale, gyro_scale)
    elif kind == PayloadType.RANGE:
        distance, echo, flags = r.unpack("HBB")
        body = RangeSample(distance, echo, flags)
    else:
        raise ProtocolError(f"unknown sample payload type 0x{kind:02X}")
    r.end()
    return Sample(frame.seq, timestamp_us, body)


def sample_frame_size(payload_type: int) -> int:
    body = IMU_BODY.size if payload_type == PayloadType.IMU6 else RANGE_BODY.size
    return OVERHEAD + SAMPLE_HEAD.size + body


# -- streams ----------------------------------------------------------------------

def encode_stream_start(rate_mhz: int) -> bytes:
    return struct.pack("<I", rate_mhz)


def encode_stream_started(rate_mhz: int, next_seq: int) -> bytes:
    return struct.pack("<II", rate_mhz, next_seq)


def decode_stream_started(payload: bytes) -> tuple[int, int]:
    r = Reader(payload)
    rate_mhz, next_seq = r.unpack("II")
    r.end()
    return rate_mhz, next_seq


def encode_stream_stopped(last_seq: int) -> bytes:
    return struct.pack("<I", last_seq)


def encode_u32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def decode_u32s(payload: bytes, count: int) -> tuple[int, ...]:
    r = Reader(payload)
    values = r.unpack(f"{count}I")
    r.end()
    return values


def encode_loaded(handle: int, digest: bytes, load_us: int) -> bytes:
    return struct.pack("<I32sI", handle, digest, min(load_us, 0xFFFFFFFF))


def decode_loaded(payload: bytes) -> tuple[int, bytes, int]:
    r = Reader(payload)
    handle, digest, load_us = r.unpack("I32sI")
    r.end()
    return handle, digest, load_us
