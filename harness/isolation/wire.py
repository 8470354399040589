"""The worker wire: length-prefixed frames of a JSON header plus raw tensor buffers.

One frame (all integers big-endian)::

    b"SHPW"  u32 header_length  u32 buffer_count  buffer_count x u64 buffer_length
    header_length bytes of UTF-8 JSON   then each buffer's bytes, in order

The JSON header is a plain JSON value in which a few one-``$``-key objects stand
for what JSON cannot hold (see :func:`encode`): tensors (element type name,
shape, index of the buffer holding its ONNX ``raw_data`` bytes; see
:mod:`harness.isolation.tensors`), bytes, tuples, non-finite floats and dicts whose keys
are not plain strings. Nothing is pickled, so either end may run any Python 3.9+
with any numpy. ``docs/worker-wire.md`` describes the requests.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import struct
import time
from typing import Any, BinaryIO

import numpy as np

from harness.isolation.tensors import (
    TensorCodecError,
    element_type,
    from_packed_bytes,
    numpy_dtype,
    packed_bytes,
)

MAGIC = b"SHPW"
WIRE_VERSION = 1
_PREFIX = struct.Struct(">4sII")
_LENGTH = struct.Struct(">Q")
#: a header larger than this is a corrupt stream, not a message
MAX_HEADER = 256 * 1024 * 1024


class WireError(Exception):
    """A malformed frame or a value the wire cannot carry."""


class WireClosed(WireError):
    """The other end closed the stream (a worker that died)."""


class WireTimeout(WireError):
    """No complete frame arrived before the deadline."""


# -- values ------------------------------------------------------------------------

def encode(value: Any) -> tuple[Any, list[bytes]]:
    """``value`` as (a JSON-ready header value, the buffers it refers to)."""
    buffers: list[bytes] = []
    return _encode(value, buffers), buffers


def _buffer(buffers: list[bytes], data: bytes) -> int:
    buffers.append(data)
    return len(buffers) - 1


def _encode(value: Any, buffers: list[bytes]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.ndarray):
        return _encode_array(value, buffers, scalar=False)
    if isinstance(value, np.generic):
        return _encode_array(np.asarray(value), buffers, scalar=True)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": _buffer(buffers, bytes(value))}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(item, buffers) for item in value]}
    if isinstance(value, list):
        return [_encode(item, buffers) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, buffers) for k, v in value.items()}
        return {"$dict": [[_encode(k, buffers), _encode(v, buffers)] for k, v in value.items()]}
    raise WireError(f"the worker wire cannot carry a {type(value).__module__}."
                    f"{type(value).__qualname__}")


def _encode_array(array: np.ndarray, buffers: list[bytes], scalar: bool) -> dict[str, Any]:
    try:
        kind = element_type(array)
    except TensorCodecError as exc:
        raise WireError(str(exc)) from None
    header: dict[str, Any] = {"$tensor": kind.name, "shape": list(array.shape)}
    if scalar:
        header["scalar"] = True
    if kind.name == "string":
        header["items"] = [_encode(_string_item(item), buffers) for item in array.reshape(-1)]
    else:
        header["buffer"] = _buffer(buffers, packed_bytes(array))
    return header


def _string_item(item: Any) -> str | bytes:
    if isinstance(item, (bytes, str)):
        return item
    if isinstance(item, np.str_):
        return str(item)
    raise WireError(f"string tensor element of type {type(item).__name__}")


def decode(header: Any, buffers: list[memoryview]) -> Any:
    """Inverse of :func:`encode`. Raises :class:`TensorCodecError` for an element type
    this process cannot hold and :class:`WireError` for a malformed value."""
    if isinstance(header, list):
        return [decode(item, buffers) for item in header]
    if not isinstance(header, dict):
        return header
    if "$tensor" in header:
        return _decode_array(header, buffers)
    if "$bytes" in header:
        return bytes(_pick(buffers, header["$bytes"]))
    if "$tuple" in header:
        return tuple(decode(item, buffers) for item in header["$tuple"])
    if "$float" in header:
        return float(header["$float"])
    if "$dict" in header:
        return {decode(k, buffers): decode(v, buffers) for k, v in header["$dict"]}
    return {k: decode(v, buffers) for k, v in header.items()}


def _pick(buffers: list[memoryview], index: Any) -> memoryview:
    if not isinstance(index, int) or not 0 <= index < len(buffers):
        raise WireError(f"frame refers to buffer {index!r} of {len(buffers)}")
    return buffers[index]


def _decode_array(header: dict[str, Any], buffers: list[memoryview]) -> Any:
    name, shape = header["$tensor"], header["shape"]
    if name == "string":
        items = [decode(item, buffers) for item in header["items"]]
        array = np.empty(len(items), dtype=object)
        array[:] = items
        array = array.reshape(shape)
    else:
        numpy_dtype(name)  # TensorCodecError if this process cannot hold it
        array = from_packed_bytes(name, shape, _pick(buffers, header["buffer"]))
    return array[()] if header.get("scalar") else array


# -- frames ------------------------------------------------------------------------

def frame(header: Any, buffers: list[bytes]) -> list[bytes]:
    """The pieces of one frame, in order, ready to write."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    lengths = b"".join(_LENGTH.pack(len(b)) for b in buffers)
    return [_PREFIX.pack(MAGIC, len(text), len(buffers)), lengths, text, *buffers]


def message(header_value: Any) -> list[bytes]:
    """Encode a value and frame it."""
    header, buffers = encode(header_value)
    return frame(header, buffers)


def _parse(read_exact: Any) -> Any:
    magic, header_length, count = _PREFIX.unpack(read_exact(_PREFIX.size))
    if magic != MAGIC:
        raise WireError(f"not a Shipei wire frame (starts {magic!r})")
    if header_length > MAX_HEADER:
        raise WireError(f"frame header of {header_length} bytes")
    lengths = [_LENGTH.unpack(read_exact(_LENGTH.size))[0] for _ in range(count)]
    header = json.loads(bytes(read_exact(header_length)).decode("utf-8"))
    buffers = [memoryview(read_exact(n)) for n in lengths]
    return decode(header, buffers)


class StreamEnd:
    """The blocking end used inside a worker: file objects, no deadlines."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer

    def _read_exact(self, size: int) -> bytes:
        data = self.reader.read(size)
        if data is None or len(data) < size:
            raise WireClosed("stream closed")
        return data

    def receive(self) -> Any:
        return _parse(self._read_exact)

    def send(self, value: Any) -> None:
        for piece in message(value):
            self.writer.write(piece)
        self.writer.flush()


class DeadlineEnd:
    """The controller's end: raw pipe descriptors, every read and write bounded."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        os.set_blocking(write_fd, False)
        # what was read past the frame being parsed: answers sent ahead arrive together,
        # and one read for all of them costs one system call, not one per field
        self._pending = bytearray()
        self._offset = 0

    def send(self, value: Any, deadline: float) -> None:
        self.send_pieces(message(value), deadline)

    def send_pieces(self, pieces: list[bytes], deadline: float) -> None:
        """Write a frame already built by :func:`message` (so its size is known first)."""
        for piece in pieces:
            view = memoryview(piece)
            while view:
                try:  # the descriptor does not block: write first, wait only when it is full
                    written = os.write(self.write_fd, view)
                except BlockingIOError:
                    self._wait(self.write_fd, deadline, writable=True)
                    continue
                except (BrokenPipeError, OSError) as exc:
                    raise WireClosed(f"worker stream closed: {exc}") from None
                view = view[written:]

    def readable(self) -> bool:
        """Whether :meth:`receive` can start without blocking: bytes already read and
        not yet parsed, data in the pipe, or its end (reading tells what happened)."""
        if len(self._pending) > self._offset:
            return True
        try:
            return bool(select.select([self.read_fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def receive(self, deadline: float) -> Any:
        return _parse(lambda size: self._read_exact(size, deadline))

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._pending) - self._offset < size:
            self._wait(self.read_fd, deadline, writable=False)
            wanted = size - (len(self._pending) - self._offset)
            chunk = os.read(self.read_fd, min(max(wanted, 1 << 16), 1 << 20))
            if not chunk:
                raise WireClosed("worker stream closed")
            if self._offset:
                del self._pending[:self._offset]
                self._offset = 0
            self._pending += chunk
        start = self._offset
        self._offset += size
        data = bytes(self._pending[start:self._offset])
        if self._offset == len(self._pending):
            self._pending.clear()
            self._offset = 0
        return data

    @staticmethod
    def _wait(fd: int, deadline: float, writable: bool) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireTimeout("deadline passed")
            ready = select.select([], [fd], [], left) if writable else select.select(
                [fd], [], [], left)
            if ready[1] or ready[0]:
                return

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
