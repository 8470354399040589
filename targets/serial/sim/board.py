"""``shipei sim board``: a development board that executes models with onnxruntime.

It keeps up to ``slots`` models (least recently used evicted), measures its own
compute time around ``InferenceSession.run`` and reports it in RESULT.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from targets.serial.protocol import (
    ABSOLUTE_MAX_PAYLOAD,
    WIRE_DTYPES,
    DeviceClass,
    ErrorCode,
    Frame,
    Identity,
    MsgType,
    decode_chunk,
    decode_infer,
    decode_load_begin,
    decode_u32s,
    encode_error,
    encode_loaded,
    encode_result,
    encode_u32s,
    sha256,
)
from targets.serial.sim.server import Reply, Simulator

DEFAULT_MAX_CHUNK = 4096
MAX_MODEL_BYTES = 256 * 1024 * 1024


@dataclass
class Slot:
    size: int
    digest: bytes
    name: str
    data: bytearray = field(default_factory=bytearray)
    session: Any = None
    output_names: list[str] = field(default_factory=list)


def _error(code: int, text: str) -> list[Reply]:
    return [Reply(MsgType.ERROR, encode_error(code, text))]


class BoardSimulator(Simulator):
    device_name = "board"

    def __init__(self, *args: Any, slots: int = 4, max_chunk: int = DEFAULT_MAX_CHUNK,
                 jitter_s: float = 0.0, noise: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots: OrderedDict[int, Slot] = OrderedDict()
        self.max_slots = max(1, slots)
        self.max_chunk = max_chunk
        self.jitter_s = jitter_s
        self.noise = noise
        self._next_handle = 1
        self._infers = 0

    def identity(self) -> Identity:
        import onnx
        import onnxruntime as ort

        return Identity(
            DeviceClass.BOARD, vendor="Shipei simulators", model="sim-npu-1",
            firmware=f"sim-board 1.0 (onnxruntime {ort.__version__})",
            serial_number="SIM-BOARD-0001",
            capabilities={
                "max_payload": str(ABSOLUTE_MAX_PAYLOAD),
                "max_chunk": str(self.max_chunk),
                "model_slots": str(self.max_slots),
                "max_model_bytes": str(MAX_MODEL_BYTES),
                "dtypes": ",".join(WIRE_DTYPES),
                "opset_max": str(onnx.defs.onnx_opset_version()),
                "precision": "fp32",
                "runtime": "onnxruntime",
            })

    def answer(self, frame: Frame) -> list[Reply]:
        handlers = {
            MsgType.IDENTIFY: lambda f: [Reply(MsgType.IDENTITY, self.identity().encode())],
            MsgType.PING: lambda f: [Reply(MsgType.PONG, f.payload)],
            MsgType.LOAD_BEGIN: self._load_begin,
            MsgType.LOAD_CHUNK: self._load_chunk,
            MsgType.LOAD_END: self._load_end,
            MsgType.UNLOAD: self._unload,
            MsgType.INFER: self._infer,
        }
        handler = handlers.get(frame.type)
        if handler is None:
            if frame.type in (MsgType.STREAM_START, MsgType.STREAM_STOP):
                return _error(ErrorCode.NOT_SUPPORTED, "a board does not stream")
            return _error(ErrorCode.UNKNOWN_TYPE, f"unknown message type 0x{frame.type:02X}")
        return handler(frame)

    # -- loading -------------------------------------------------------------------
    def _slot(self, handle: int) -> Slot | None:
        slot = self.slots.get(handle)
        if slot is not None:
            self.slots.move_to_end(handle)
        return slot

    def _load_begin(self, frame: Frame) -> list[Reply]:
        size, digest, name = decode_load_begin(frame.payload)
        if size > MAX_MODEL_BYTES:
            return _error(ErrorCode.TOO_LARGE, f"model of {size} bytes exceeds "
                                               f"{MAX_MODEL_BYTES}")
        while len(self.slots) >= self.max_slots:
            self.slots.popitem(last=False)
        handle = self._next_handle
        self._next_handle += 1
        self.slots[handle] = Slot(size, digest, name)
        return [Reply(MsgType.LOAD_READY, encode_u32s(handle, self.max_chunk))]

    def _load_chunk(self, frame: Frame) -> list[Reply]:
        handle, offset, data = decode_chunk(frame.payload)
        slot = self._slot(handle)
        if slot is None:
            return _error(ErrorCode.NO_MODEL, f"no model load in progress for handle {handle}")
        received = len(slot.data)
        if offset == received:
            if received + len(data) > slot.size:
                return _error(ErrorCode.SIZE_MISMATCH, f"chunk ends at {received + len(data)}"
                                                       f", model is {slot.size} bytes")
            slot.data += data
        elif offset + len(data) > received:
            return _error(ErrorCode.BAD_OFFSET, f"chunk at offset {offset}; expected {received}")
        return [Reply(MsgType.CHUNK_ACK, encode_u32s(handle, len(slot.data)))]

    def _load_end(self, frame: Frame) -> list[Reply]:
        (handle,) = decode_u32s(frame.payload, 1)
        slot = self._slot(handle)
        if slot is None:
            return _error(ErrorCode.NO_MODEL, f"no model load in progress for handle {handle}")
        if len(slot.data) != slot.size:
            return _error(ErrorCode.SIZE_MISMATCH, f"received {len(slot.data)} of "
                                                   f"{slot.size} bytes")
        started = time.perf_counter()
        if slot.session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                slot.session = ort.InferenceSession(bytes(slot.data), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
            except Exception as exc:
                del self.slots[handle]
                text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else "failed"
                unsupported = any(s in text for s in ("NOT_IMPLEMENTED", "Could not find an "
                                                      "implementation", "not supported"))
                return _error(ErrorCode.UNSUPPORTED_MODEL if unsupported
                              else ErrorCode.MODEL_REJECTED, text)
            slot.output_names = [o.name for o in slot.session.get_outputs()]
        load_us = int((time.perf_counter() - started) * 1e6)
        return [Reply(MsgType.LOADED, encode_loaded(handle, sha256(bytes(slot.data)), load_us))]

    def _unload(self, frame: Frame) -> list[Reply]:
        (handle,) = decode_u32s(frame.payload, 1)
        if self.slots.pop(handle, None) is None:
            return _error(ErrorCode.NO_MODEL, f"no model with handle {handle}")
        return [Reply(MsgType.UNLOADED, encode_u32s(handle))]

    # -- inference -----------------------------------------------------------------
    def _infer(self, frame: Frame) -> list[Reply]:
        handle, tensors = decode_infer(frame.payload)
        slot = self._slot(handle)
        if slot is None or slot.session is None:
            return _error(ErrorCode.NO_MODEL, f"no loaded model with handle {handle}")
        inputs = {i.name for i in slot.session.get_inputs()}
        unknown = sorted({name for name, _ in tensors} - inputs)
        if unknown:
            return _error(ErrorCode.BAD_INPUT, f"unknown input(s) {unknown}")
        feeds = dict(tensors)
        started = time.perf_counter()
        try:
            values = slot.session.run(slot.output_names, feeds)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else "failed"
            code = ErrorCode.BAD_INPUT if "INVALID_ARGUMENT" in text else ErrorCode.INFER_FAILED
            return _error(code, text)
        compute_ns = int((time.perf_counter() - started) * 1e9)
        outputs = []
        for name, value in zip(slot.output_names, values, strict=True):
            if not isinstance(value, np.ndarray):
                return _error(ErrorCode.INFER_FAILED, f"output {name!r} is not a tensor")
            outputs.append((name, self._noisy(value)))
        self._infers += 1
        if self.jitter_s > 0:
            delay = self.faults.rng("jitter", self._infers).random() * self.jitter_s
            self.faults.record("jitter", index=self._infers, seconds=delay)
            time.sleep(delay)
        return [Reply(MsgType.RESULT, encode_result(handle, compute_ns, outputs))]

    def _noisy(self, value: np.ndarray) -> np.ndarray:
        if self.noise <= 0 or value.dtype.kind != "f" or value.size == 0:
            return value
        rng = np.random.default_rng([self.faults.seed, self._infers])
        scale = np.abs(value).astype(np.float64) * self.noise + self.noise * 1e-3
        self.faults.record("noise", index=self._infers, elements=int(value.size))
        return (value + rng.normal(0.0, 1.0, value.shape) * scale).astype(value.dtype)
