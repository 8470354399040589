"""``shipei sim board``: a development board that executes models with onnxruntime.

It keeps up to ``slots`` models (LOAD_BEGIN frees abandoned half-done loads, then
evicts the least recently used model: docs/protocol.md section 5.3), measures its own
compute time around ``InferenceSession.run`` and reports it in RESULT. It takes
up to ``pipeline`` requests in flight (capability ``pipeline``, docs/protocol.md
section 3.2); 1 simulates a stop-and-wait device of revision 1.2 or older.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from targets.ort_values import ORT_DTYPES, needs_raw_io, run_raw
from targets.serial.protocol import (
    REVISION,
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
    encode_loaded,
    encode_result,
    encode_u32s,
    sha256,
)
from targets.serial.sim.server import Reply, Simulator, error_reply, pong

DEFAULT_MAX_CHUNK = 4096
#: requests in flight the board accepts unless told otherwise
DEFAULT_PIPELINE = 4
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: what the board declares: every wire dtype its onnxruntime takes
BOARD_DTYPES = tuple(name for name in WIRE_DTYPES if name in ORT_DTYPES)


@dataclass
class Slot:
    size: int
    digest: bytes
    name: str
    data: bytearray = field(default_factory=bytearray)
    session: Any = None
    output_names: list[str] = field(default_factory=list)
    #: the session has inputs or outputs numpy cannot exchange: run it on OrtValues
    raw_io: bool = False

    @property
    def loaded(self) -> bool:
        return self.session is not None


def _error(code: int, text: str) -> list[Reply]:
    return error_reply(code, text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


#: onnxruntime messages that mean "a valid model with something this runtime lacks"
_UNSUPPORTED_MARKS = ("NOT_IMPLEMENTED", "Could not find an implementation", "not supported",
                      "is not a registered function/op", "No opset import for domain",
                      "Unsupported model IR version")


def unsupported_operator(model_bytes: bytes) -> str | None:
    """Why a parsable model uses an operator this device does not know, or None;
    raises ``onnx`` parse errors for bytes that are no model (MODEL_REJECTED)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        if (node.domain, node.op_type) in local or domain not in ("ai.onnx", "ai.onnx.ml"):
            continue
        try:
            onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), node.domain)
        except onnx.defs.SchemaError:
            return f"operator {domain}::{node.op_type} at opset {opsets.get(domain)} is unknown"
    return None


def _valid(model_bytes: bytes) -> bool:
    """Whether the model keeps the ONNX IR rules (``onnx.checker`` with shape and type
    inference): a valid model the runtime cannot compile is UNSUPPORTED_MODEL, an
    invalid one MODEL_REJECTED (section 5.3)."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
    except Exception:
        return False
    return True


class BoardSimulator(Simulator):
    device_name = "board"

    def __init__(self, *args: Any, slots: int = 4, max_chunk: int = DEFAULT_MAX_CHUNK,
                 ready_chunk: int | None = None, jitter_s: float = 0.0, noise: float = 0.0,
                 pipeline: int = DEFAULT_PIPELINE, **kwargs: Any) -> None:
        super().__init__(*args, pipeline=pipeline, **kwargs)
        self.slots: OrderedDict[int, Slot] = OrderedDict()
        self.max_slots = max(1, slots)
        self.max_chunk = max_chunk
        #: LOAD_READY's max_chunk (default: the declared one); the smaller one applies
        self.ready_chunk = max_chunk if ready_chunk is None else ready_chunk
        self.jitter_s = jitter_s
        self.noise = noise
        self._next_handle = 1
        self._infers = 0
        #: INFER requests executed (not answered from the cache, not BUSY)
        self.infers_executed = 0

    def identity(self) -> Identity:
        import onnx
        import onnxruntime as ort

        return Identity(
            DeviceClass.BOARD, vendor="Shipei simulators", model="sim-npu-1",
            firmware=f"sim-board 1.0 (onnxruntime {ort.__version__})",
            serial_number="SIM-BOARD-0001",
            capabilities={
                "protocol": REVISION,
                "max_payload": str(self.receiver.max_payload),
                "max_chunk": str(self.max_chunk),
                "model_slots": str(self.max_slots),
                "pipeline": str(self.pipeline),
                "max_model_bytes": str(MAX_MODEL_BYTES),
                "dtypes": ",".join(BOARD_DTYPES),
                "opset_max": str(onnx.defs.onnx_opset_version()),
                "precision": "fp32",
                "runtime": "onnxruntime",
            })

    def answer(self, frame: Frame) -> list[Reply]:
        handlers = {
            MsgType.IDENTIFY: lambda f: [Reply(MsgType.IDENTITY, self.identity().encode())],
            MsgType.PING: pong,
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

    def on_session_start(self) -> None:
        """A new host session: loads left half-done by the previous host are freed;
        loaded models stay (section 5.3)."""
        for handle in [h for h, slot in self.slots.items() if not slot.loaded]:
            del self.slots[handle]

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
        # the host loads one model at a time: a load begun and not finished is
        # abandoned; then, if every slot is taken, the least recently used model goes
        for abandoned in [h for h, slot in self.slots.items() if not slot.loaded]:
            del self.slots[abandoned]
        while len(self.slots) >= self.max_slots:
            self.slots.popitem(last=False)
        handle = self._next_handle
        self._next_handle += 1
        self.slots[handle] = Slot(size, digest, name)
        return [Reply(MsgType.LOAD_READY, encode_u32s(handle, self.ready_chunk))]

    def _abandon(self, handle: int, code: int, text: str) -> list[Reply]:
        """A load that failed: the slot is freed and the handle unknown from now on."""
        del self.slots[handle]
        return _error(code, f"{text}; load abandoned")

    def _load_chunk(self, frame: Frame) -> list[Reply]:
        handle, offset, data = decode_chunk(frame.payload)
        slot = self._slot(handle)
        if slot is None:
            return _error(ErrorCode.NO_MODEL, f"no model load in progress for handle {handle}")
        if slot.loaded:
            return _error(ErrorCode.BAD_OFFSET, f"handle {handle} is loaded already; "
                                                "the model is unchanged")
        if not data:
            return self._abandon(handle, ErrorCode.BAD_PAYLOAD, "a chunk of zero bytes")
        limit = min(self.max_chunk, self.ready_chunk)
        if len(data) > limit:
            return self._abandon(handle, ErrorCode.TOO_LARGE,
                                 f"chunk of {len(data)} bytes exceeds max_chunk {limit}")
        received = len(slot.data)
        if offset + len(data) <= received:  # wholly inside what arrived: a duplicate
            return [Reply(MsgType.CHUNK_ACK, encode_u32s(handle, received))]
        if offset != received:
            return self._abandon(handle, ErrorCode.BAD_OFFSET,
                                 f"chunk at offset {offset}; expected {received}")
        if received + len(data) > slot.size:
            return self._abandon(handle, ErrorCode.SIZE_MISMATCH,
                                 f"chunk ends at {received + len(data)}, model is "
                                 f"{slot.size} bytes")
        slot.data += data
        return [Reply(MsgType.CHUNK_ACK, encode_u32s(handle, len(slot.data)))]

    def _load_end(self, frame: Frame) -> list[Reply]:
        (handle,) = decode_u32s(frame.payload, 1)
        slot = self._slot(handle)
        if slot is None:
            return _error(ErrorCode.NO_MODEL, f"no model load in progress for handle {handle}")
        if len(slot.data) != slot.size:
            return self._abandon(handle, ErrorCode.SIZE_MISMATCH,
                                 f"received {len(slot.data)} of {slot.size} bytes")
        started = time.perf_counter()
        if not slot.loaded:
            failure = self._compile(slot)
            if failure is not None:
                return self._abandon(handle, *failure)
        load_us = int((time.perf_counter() - started) * 1e6)
        return [Reply(MsgType.LOADED, encode_loaded(handle, sha256(bytes(slot.data)), load_us))]

    def _compile(self, slot: Slot) -> tuple[int, str] | None:
        """Make the slot's session; on failure (error code, text). The rule of
        section 5.3: bytes that are no valid model are MODEL_REJECTED; a valid model
        with an operator, data type or opset this device lacks is UNSUPPORTED_MODEL."""
        import onnxruntime as ort

        raw = bytes(slot.data)
        try:
            unknown = unsupported_operator(raw)
        except Exception as exc:  # onnx cannot parse it
            return ErrorCode.MODEL_REJECTED, f"not an ONNX model: {_first_line(exc)}"
        if unknown:
            return ErrorCode.UNSUPPORTED_MODEL, unknown
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            slot.session = ort.InferenceSession(raw, sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            text = _first_line(exc)
            unsupported = any(mark in text for mark in _UNSUPPORTED_MARKS)
            return (ErrorCode.UNSUPPORTED_MODEL if unsupported or _valid(raw)
                    else ErrorCode.MODEL_REJECTED), text
        slot.output_names = [o.name for o in slot.session.get_outputs()]
        slot.raw_io = needs_raw_io((*slot.session.get_inputs(), *slot.session.get_outputs()))
        return None

    def _unload(self, frame: Frame) -> list[Reply]:
        (handle,) = decode_u32s(frame.payload, 1)
        if self.slots.pop(handle, None) is None:
            return _error(ErrorCode.NO_MODEL, f"no model with handle {handle}")
        return [Reply(MsgType.UNLOADED, encode_u32s(handle))]

    # -- inference -----------------------------------------------------------------
    def _infer(self, frame: Frame) -> list[Reply]:
        self.infers_executed += 1
        handle, tensors = decode_infer(frame.payload)
        slot = self._slot(handle)
        if slot is None or not slot.loaded:
            return _error(ErrorCode.NO_MODEL, f"no loaded model with handle {handle}")
        inputs = {i.name for i in slot.session.get_inputs()}
        unknown = sorted({name for name, _ in tensors} - inputs)
        if unknown:
            return _error(ErrorCode.BAD_INPUT, f"unknown input(s) {unknown}")
        feeds = dict(tensors)
        started = time.perf_counter()
        try:
            if slot.raw_io:
                values = run_raw(slot.session, slot.output_names, feeds)
            else:
                values = slot.session.run(slot.output_names, feeds)
        except Exception as exc:
            text = _first_line(exc)
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
