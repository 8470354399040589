"""``serial-board``: a chip on a development board, reached over a serial line.

``Target.compile`` sends the model (LOAD_BEGIN, LOAD_CHUNK..., LOAD_END; the
device acknowledges the model's sha256); ``Executable.run`` sends INFER and
receives RESULT with the device's own compute time. Each case's record carries,
in ``placement``, the device-side compute time and the host round-trip time::

    --target serial-board,url=/dev/ttyUSB0
    --target serial-board,url=socket://127.0.0.1:5555,timeout=5,retries=2

Options: ``url`` (required), ``baud``, ``timeout`` (the longest silence before a
retransmission; the link learns a shorter one from its round trips, never under
``min_rto``), ``retries``, ``inter_byte_timeout``, ``load_timeout`` and
``infer_timeout`` (seconds the device may take to compile / to answer INFER),
``chunk`` (model chunk bytes, capped by the device's ``max_chunk``),
``pace_baud`` and ``bits_per_byte`` (hold host writes to a line rate, for links
with no baud rate of their own such as a pty), ``lost_after`` (requests in a row
without an answer after which the board counts as lost and the remaining cases
are recorded as ``infra_error`` without being tried; default 3, 0: never).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import onnx

from harness.driver.target import (
    Availability,
    Capabilities,
    CapabilityExceeded,
    Executable,
    InfraError,
    InputMismatchError,
    Target,
    TargetError,
    TargetIdentity,
    UnsupportedModelError,
)
from harness.isolation.tensors import BY_ONNX_CODE
from targets.common import EXPECTATIONS_DIR, driver_version
from targets.serial.protocol import (
    ABSOLUTE_MAX_PAYLOAD,
    V1_DTYPES,
    WIRE_DTYPES,
    DeviceClass,
    ErrorCode,
    Frame,
    Identity,
    MsgType,
    ProtocolError,
    decode_loaded,
    decode_result,
    decode_u32s,
    encode_chunk,
    encode_infer,
    encode_load_begin,
    encode_u32s,
    sha256,
)
from targets.serial.transport import (
    DeviceError,
    DeviceLost,
    DeviceProtocolError,
    DeviceTimeout,
    LinkDropped,
    LinkError,
    LinkSettings,
    SerialLink,
)

DEFAULT_CHUNK = 4096
#: the most INFER requests the host keeps in flight, whatever a device declares
MAX_PIPELINE = 8
#: LOAD_CHUNK's handle and offset before the model bytes
CHUNK_HEADER = 8
T = TypeVar("T")
#: named tensors, as INFER carries them and RESULT returns them
Tensors = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class LoadedModel:
    handle: int
    sha256: bytes
    device_load_s: float
    host_load_s: float
    chunks: int
    #: uploads begun again from LOAD_BEGIN because the device forgot the handle
    #: mid-upload (a reset: NO_MODEL to LOAD_CHUNK or LOAD_END)
    restarts: int = 0


class BoardClient:
    """The board messages of the protocol over one :class:`SerialLink`."""

    def __init__(self, link: SerialLink, infer_timeout: float = 10.0,
                 load_timeout: float = 30.0, chunk: int = DEFAULT_CHUNK) -> None:
        self.link = link
        self.infer_timeout = infer_timeout
        self.load_timeout = load_timeout
        self.chunk = chunk
        #: the device's declared max_payload (set from IDENTITY)
        self.max_payload = ABSOLUTE_MAX_PAYLOAD
        #: INFER requests in flight in :meth:`infer_many`: the device's declared
        #: ``pipeline`` (1 when absent), at most MAX_PIPELINE (set from IDENTITY)
        self.pipeline = 1

    def identify(self) -> Identity:
        frame = self.link.request(MsgType.IDENTIFY)
        identity = _decoded(Identity.decode, frame.payload, "IDENTITY")
        declared = identity.cap_int("max_payload", ABSOLUTE_MAX_PAYLOAD)
        self.max_payload = max(CHUNK_HEADER + 1, min(declared, ABSOLUTE_MAX_PAYLOAD))
        self.pipeline = max(1, min(identity.cap_int("pipeline", 1), MAX_PIPELINE))
        return identity

    def chunk_size(self, declared_chunk: int, ready_chunk: int) -> int:
        """Model bytes per LOAD_CHUNK (docs/protocol.md section 5.3): the smallest of
        the host's ``chunk`` option, the capability ``max_chunk``, LOAD_READY's
        ``max_chunk`` (0 there: the capability's) and what ``max_payload`` leaves."""
        limits = [self.chunk, self.max_payload - CHUNK_HEADER]
        limits += [value for value in (declared_chunk, ready_chunk) if value > 0]
        return max(1, min(limits))

    def load(self, model: bytes, name: str, max_chunk: int) -> LoadedModel:
        """Upload and compile ``model`` (docs/protocol.md section 5.3). A device that
        forgets the load midway (NO_MODEL to LOAD_CHUNK or LOAD_END: it was reset) is
        sent the model again from LOAD_BEGIN, once."""
        started = time.perf_counter()
        try:
            loaded = self._upload(model, name, max_chunk, started)
        except DeviceError as exc:
            if exc.code != ErrorCode.NO_MODEL:
                raise
            loaded = self._upload(model, name, max_chunk, started)
            return LoadedModel(loaded.handle, loaded.sha256, loaded.device_load_s,
                               loaded.host_load_s, loaded.chunks, restarts=1)
        return loaded

    def _upload(self, model: bytes, name: str, max_chunk: int, started: float
                ) -> LoadedModel:
        digest = sha256(model)
        ready = self.link.request(MsgType.LOAD_BEGIN, encode_load_begin(len(model), digest, name))
        handle, device_chunk = _decoded(_two_u32, ready.payload, "LOAD_READY")
        size = self.chunk_size(max_chunk, device_chunk)
        chunks = 0
        for offset in range(0, len(model), size):
            piece = model[offset:offset + size]
            ack = self.link.request(MsgType.LOAD_CHUNK, encode_chunk(handle, offset, piece))
            ack_handle, received = _decoded(_two_u32, ack.payload, "CHUNK_ACK")
            if ack_handle != handle or received != offset + len(piece):
                raise DeviceProtocolError(
                    f"CHUNK_ACK for handle {ack_handle} at {received} bytes, expected handle "
                    f"{handle} at {offset + len(piece)}")
            chunks += 1
        loaded = self.link.request(MsgType.LOAD_END, encode_u32s(handle),
                                   first_byte_timeout=self.load_timeout)
        ack_handle, ack_digest, load_us = _decoded(decode_loaded, loaded.payload, "LOADED")
        if ack_digest != digest:
            raise TargetError(f"device acknowledged sha256 {ack_digest.hex()} for a model "
                              f"whose sha256 is {digest.hex()}: the model was corrupted")
        return LoadedModel(ack_handle, digest, load_us / 1e6, time.perf_counter() - started,
                           chunks)

    def infer(self, handle: int, tensors: Tensors) -> tuple[Tensors, float]:
        """The outputs of one INFER and the device's compute time in seconds."""
        payload = self._infer_payload(handle, tensors)
        frame = self.link.request(MsgType.INFER, payload, first_byte_timeout=self.infer_timeout)
        return _result(frame, handle)

    def infer_many(self, handle: int, inputs: Sequence[Tensors]
                   ) -> list[tuple[Tensors, float]]:
        """:meth:`infer` for each tensor list, in order, with up to :attr:`pipeline`
        requests in flight (docs/protocol.md section 3.2; :meth:`identify` sets
        :attr:`pipeline` from the board's declaration, at most ``MAX_PIPELINE``).

        ``inputs`` holds one ``[(name, array), ...]`` list per INFER; the result is
        one ``(outputs, compute_s)`` per INFER, in the same order. Every payload is
        checked against ``max_payload`` before the first is sent
        (:class:`~harness.driver.target.CapabilityExceeded`); the first request that fails
        raises as :meth:`infer` would and ends the batch. The public entry for
        measuring pipelining on a board (docs/serial.md, ``bench/serial_throughput.py
        --device URL``)."""
        payloads = [self._infer_payload(handle, tensors) for tensors in inputs]
        frames = self.link.request_many(MsgType.INFER, payloads, self.pipeline,
                                        first_byte_timeout=self.infer_timeout)
        return [_result(frame, handle) for frame in frames]

    def _infer_payload(self, handle: int, tensors: Tensors) -> bytes:
        payload = encode_infer(handle, tensors)
        if len(payload) > self.max_payload:
            raise CapabilityExceeded(
                f"the inputs make an INFER payload of {len(payload):,} bytes; the device "
                f"declares max_payload {self.max_payload:,}, so it was not sent")
        return payload

    def unload(self, handle: int) -> None:
        self.link.request(MsgType.UNLOAD, encode_u32s(handle))


def _who(identity: Identity) -> str:
    return f"{identity.vendor} {identity.model} #{identity.serial_number}"


def _result(frame: Frame, handle: int) -> tuple[Tensors, float]:
    """RESULT's outputs and compute seconds, for the model ``handle``."""
    got_handle, compute_ns, outputs = _decoded(decode_result, frame.payload, "RESULT")
    if got_handle != handle:
        raise DeviceProtocolError(f"RESULT for handle {got_handle}, expected {handle}")
    return outputs, compute_ns / 1e9


def _two_u32(payload: bytes) -> tuple[int, ...]:
    return decode_u32s(payload, 2)


def _decoded(decoder: Any, payload: bytes, what: str) -> Any:
    try:
        return decoder(payload)
    except ProtocolError as exc:
        raise DeviceProtocolError(f"malformed {what} payload: {exc}") from None


def _io_problem(model: onnx.ModelProto, dtypes: tuple[str, ...]) -> str | None:
    """Why this model's inputs or outputs cannot cross the wire, or None."""
    initializers = {i.name for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{value.name!r} is a {kind or 'untyped value'}; the wire carries tensors only"
        elem = value.type.tensor_type.elem_type
        element = BY_ONNX_CODE.get(elem)
        name = element.name if element else f"ONNX type {elem}"
        if name not in dtypes:
            return f"{value.name!r} has dtype {name}, which the device does not take"
    return None


class BoardExecutable(Executable):
    def __init__(self, target: SerialBoardTarget, model: onnx.ModelProto, raw: bytes,
                 loaded: LoadedModel, link_before: dict[str, Any],
                 connect_repairs: Mapping[str, int] | None = None) -> None:
        self.target = target
        self.link_before = link_before
        #: what the link repaired while IDENTIFY opened a session for this case
        self.connect_repairs = dict(connect_repairs or {})
        self.raw = raw
        self.loaded = loaded
        initializers = {i.name for i in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in model.graph.output]
        self.runs = 0
        self.device_compute_s = 0.0
        self.round_trip_s = 0.0
        self.reloads = 0
        self.earlier_unloads = target.take_unload_log()

    def _tensors(self, inputs: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise InputMismatchError(f"unknown input name(s) {unknown}; the model takes "
                                     f"{self.input_names}")
        tensors = []
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:
                continue  # an omitted optional input
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
            if value.dtype == object or value.dtype.kind in "US":
                raise UnsupportedModelError(f"input {name!r}: string tensors do not cross "
                                            "the wire")
            tensors.append((name, value))
        return tensors

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        tensors = self._tensors(inputs)
        client = self.target.client()
        started = time.perf_counter()
        try:
            outputs, compute_s = self.target.reached(
                lambda: client.infer(self.loaded.handle, tensors))
        except DeviceError as exc:
            if exc.code != ErrorCode.NO_MODEL:
                raise
            # the device lost the model (reset, evicted): load it again, once
            self.reloads += 1
            self.loaded = self.target.load(self.raw)
            started = time.perf_counter()
            outputs, compute_s = self.target.reached(
                lambda: client.infer(self.loaded.handle, tensors))
        self.round_trip_s += time.perf_counter() - started
        self.device_compute_s += compute_s
        self.runs += 1
        names = [name for name, _ in outputs]
        if names != self.output_names:
            raise DeviceProtocolError(f"RESULT carries outputs {names}, the model has "
                                      f"{self.output_names}")
        return dict(outputs)

    def placement(self) -> dict[str, Any]:
        link = self.target.link_stats()
        return {
            "device": self.target.device_name(),
            "link": self.target.settings.url,
            "runs": self.runs,
            "device_compute_s": self.device_compute_s,
            "round_trip_s": self.round_trip_s,
            "link_overhead_s": max(self.round_trip_s - self.device_compute_s, 0.0),
            "model_load_s": self.loaded.host_load_s,
            "device_model_load_s": self.loaded.device_load_s,
            "model_chunks": self.loaded.chunks,
            "model_load_restarts": self.loaded.restarts,
            "model_sha256": self.loaded.sha256.hex(),
            "model_reloads": self.reloads,
            # link trouble since this model's load began (and its connection's IDENTIFY)
            **added(self.connect_repairs, link_repairs(self.link_before, link)),
            # UNLOADs of earlier models, sent after their own case was recorded
            "earlier_unloads": self.earlier_unloads,
        }

    def close(self) -> None:
        self.target.unload(self.loaded.handle)


def link_repairs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """What the link repaired between two :meth:`SerialBoardTarget.link_stats`:
    requests sent again, frames damaged in transit, bytes of line noise, answers that
    came twice (a retransmission's, from the device's cache) and stale answers."""
    def receiver(stats: dict[str, Any], key: str) -> int:
        return int(stats["receiver"].get(key, 0))

    def link(stats: dict[str, Any], key: str) -> int:
        return int(stats.get(key, 0))

    return {"retransmissions": link(after, "retransmissions") - link(before,
                                                                     "retransmissions"),
            # attempts that ended in silence: an answer lost on the line (or late)
            "unanswered_attempts": link(after, "silent_attempts") - link(before,
                                                                         "silent_attempts"),
            "damaged_frames": receiver(after, "damaged_total") - receiver(before,
                                                                          "damaged_total"),
            "stray_bytes": receiver(after, "stray_bytes") - receiver(before, "stray_bytes"),
            "duplicate_answers": link(after, "duplicate_answers") - link(before,
                                                                         "duplicate_answers"),
            "stale_answers": link(after, "stale_frames") - link(before, "stale_frames")}


def added(first: Mapping[str, int], second: Mapping[str, int]) -> dict[str, int]:
    """Two :func:`link_repairs` summed, key by key."""
    return {key: first.get(key, 0) + second.get(key, 0) for key in {**first, **second}}


def describe_repairs(repairs: Mapping[str, int]) -> str:
    """``2 retransmissions, 1 duplicate answer``: the non-zero repairs, or ''."""
    return ", ".join(f"{n} {key.replace('_', ' ').rstrip('s')}{'s' if n != 1 else ''}"
                     for key, n in repairs.items() if n)


class SerialBoardTarget(Target):
    def __init__(self, configuration: str = "default", url: str = "", baud: int = 921600,
                 timeout: float = 2.0, retries: int = 3, inter_byte_timeout: float = 0.2,
                 infer_timeout: float = 10.0, load_timeout: float = 30.0,
                 chunk: int = DEFAULT_CHUNK, pace_baud: float = 0.0,
                 bits_per_byte: float = 10.0, lost_after: int = 3,
                 min_rto: float = 0.1) -> None:
        self.configuration = configuration
        self.url = str(url)
        self.settings = LinkSettings(
            url=self.url or "unset", baudrate=int(baud), timeout=float(timeout),
            retries=int(retries), inter_byte_timeout=float(inter_byte_timeout),
            pace_baud=float(pace_baud), bits_per_byte=float(bits_per_byte),
            lost_after=int(lost_after), min_rto=float(min_rto))
        self.infer_timeout = float(infer_timeout)
        self.load_timeout = float(load_timeout)
        self.chunk = int(chunk)
        self._link: SerialLink | None = None
        self._client: BoardClient | None = None
        self._identity: Identity | None = None
        self._availability: Availability | None = None
        #: handles whose UNLOAD failed (tried again before the next load)
        self._stale_handles: list[int] = []
        self._unload_log: list[dict[str, Any]] = []
        #: what the link repaired while the availability probe identified the board
        self._probe_repairs: dict[str, int] = {}

    @property
    def expectations_file(self) -> Path:  # type: ignore[override]
        """Known non-passes of the identified board: ``serial-board-<model>.toml``
        (every board speaks through this one driver, so the file is per model)."""
        model = self._identity.model if self._identity else "unknown"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower() or "unknown"
        return EXPECTATIONS_DIR / f"serial-board-{slug}.toml"

    # -- the link ------------------------------------------------------------------
    def client(self) -> BoardClient:
        """The client on an open link. Every connection (the first and each one after
        a drop) begins with IDENTIFY, which starts a session on the device: its
        last-answer cache is cleared, so a new host's SEQ 1 never meets an answer from
        an earlier session."""
        if self._client is None:
            self._link = SerialLink(self.settings)
            self._client = BoardClient(self._link, self.infer_timeout, self.load_timeout,
                                       self.chunk)
        assert self._link is not None
        link = self._link
        if link.lost_reason is not None:
            link.close()
            raise DeviceLost(link.lost_reason)
        if not link.is_open:
            link.open()
            try:
                identity = self._checked_identity(self._client.identify())
            except DeviceTimeout as exc:
                link.close()
                raise self._unreachable(f"it did not answer IDENTIFY on a new connection "
                                        f"({exc})") from None
            except BaseException:
                link.close()  # the next call starts a new session with IDENTIFY again
                raise
            if self._identity is not None and _who(identity) != _who(self._identity):
                raise DeviceProtocolError(
                    f"a different device answered at {self.url} after reconnecting: "
                    f"{_who(identity)}, was {_who(self._identity)}")
            self._identity = identity
        return self._client

    def link_is_open(self) -> bool:
        return self._link is not None and self._link.is_open

    def link_stats(self) -> dict[str, Any]:
        if self._link is None:
            return {"retransmissions": 0, "receiver": {}}
        stats = self._link.stats.as_dict()
        stats["receiver"] = self._link.receiver.counters.as_dict()
        return stats

    def _checked_identity(self, identity: Identity) -> Identity:
        if identity.device_class != DeviceClass.BOARD:
            raise TargetError(f"the device at {self.url} is not a board "
                              f"(device class {identity.device_class})")
        return identity

    def load(self, model: bytes) -> LoadedModel:
        client = self.client()
        assert self._identity is not None
        max_chunk = self._identity.cap_int("max_chunk", 0)
        return self.reached(lambda: client.load(model, "model.onnx", max_chunk))

    def reached(self, call: Callable[[], T]) -> T:
        """``call()``; when a request of it goes unanswered (:class:`DeviceTimeout`), a
        PING tells a device that is up but did not answer (its own ``error``) from one
        that cannot be reached at all (:class:`DeviceLost`: ``infra_error``, and the
        remaining requests are not tried)."""
        try:
            return call()
        except DeviceTimeout as exc:
            self._after_silence(exc)

    def _after_silence(self, silence: DeviceTimeout) -> NoReturn:
        link = self._link
        assert link is not None
        try:
            link.request(MsgType.PING, b"shipei: still there?")
        except DeviceLost as exc:  # the PING was the lost_after-th unanswered request
            raise exc from None
        except (DeviceTimeout, LinkError):
            raise self._unreachable(f"it answered neither a request ({silence}) nor a "
                                    "PING after it") from None
        except TargetError:
            pass  # it answered, if only to refuse: it is there
        raise silence

    def unload(self, handle: int) -> None:
        """UNLOAD ``handle``, logging how it went for the next case's record (its own
        case is recorded before its executable is closed). A failed UNLOAD leaves the
        handle to be unloaded again before the next load."""
        if not self.link_is_open():
            return  # the link dropped: the device is unreachable, nothing to release
        before = self.link_stats()
        try:
            self.client().unload(handle)
            outcome = "unloaded"
        except DeviceError as exc:
            outcome = "already gone (NO_MODEL)" if exc.code == ErrorCode.NO_MODEL else \
                f"failed: {exc}"
        except (TargetError, LinkError) as exc:
            outcome = f"failed: {type(exc).__name__}: {exc}"
        if outcome.startswith("failed") and self._link_lost() is None:
            self._stale_handles.append(handle)
        self._unload_log.append({"handle": handle, "outcome": outcome,
                                 **link_repairs(before, self.link_stats())})

    def _unreachable(self, why: str) -> DeviceLost:
        """The device cannot be reached (``why``): an infrastructure failure. The link
        is marked lost, so the remaining requests fail at once, unless ``lost_after``
        is 0 (never give up): then each later case tries again."""
        link = self._link
        assert link is not None
        if not self.settings.lost_after:
            return DeviceLost(f"device at {self.url} cannot be reached: {why}")
        link.lost_reason = (f"device at {self.url} cannot be reached: {why}; the remaining "
                            "requests are not tried")
        return DeviceLost(link.lost_reason)

    def _link_lost(self) -> str | None:
        return self._link.lost_reason if self._link is not None else None

    def take_unload_log(self) -> list[dict[str, Any]]:
        log, self._unload_log = self._unload_log, []
        return log

    # -- Target --------------------------------------------------------------------
    def device_name(self) -> str:
        ident = self._identity
        return f"{ident.vendor} {ident.model}" if ident else "serial board (not queried)"

    @property
    def identity(self) -> TargetIdentity:
        ident = self._identity
        return TargetIdentity(
            name="serial-board", kind="chip",
            vendor=ident.vendor if ident else "unknown (device not queried)",
            driver_version=driver_version(),
            runtime=ident.capabilities.get("runtime", ident.model) if ident else "serial",
            runtime_version=ident.firmware if ident else "unknown",
            device=ident.model if ident else "serial",
            configuration=self.configuration,
            driver_distribution="shipei",
        )

    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> Availability:
        """Available when the port opens and a board identifies. A port that opens but
        drops before answering is available too: its cases record the link failure as
        ``infra_error`` (a wrong URL or a non-board is a configuration error)."""
        if not self.url:
            return Availability.no("no device given: use --target serial-board,url=PORT_OR_URL")
        before = self.link_stats()
        try:
            self.client()
        except LinkDropped:
            return Availability.yes()
        except DeviceLost as exc:
            return Availability.no(f"the device at {self.url} did not identify: {exc}")
        except LinkError as exc:  # cannot open, or nothing but line noise
            return Availability.no(str(exc))
        except TargetError as exc:
            return Availability.no(f"the device at {self.url} did not identify: {exc}")
        finally:
            self._probe_repairs = link_repairs(before, self.link_stats())
            self.close()  # a worker process opens its own link
        return Availability.yes()

    def describe(self) -> dict[str, Any]:
        """The target's description (run.json), with what the link repaired while the
        availability probe identified the board (records carry their cases' own)."""
        data = super().describe()
        data["probe_link_repairs"] = dict(self._probe_repairs)
        return data

    def capabilities(self) -> Capabilities:
        ident = self._identity
        caps = ident.capabilities if ident else {}
        declared = [d.strip() for d in caps.get("dtypes", "").split(",") if d.strip()]
        # a board that declares none takes revision 1.0's table
        dtypes = tuple(d for d in declared if d in WIRE_DTYPES) or V1_DTYPES
        return Capabilities(
            opset_min=int(caps.get("opset_min", 1)),
            opset_max=int(caps.get("opset_max", onnx.defs.onnx_opset_version())),
            dtypes=dtypes,
            devices=(ident.model if ident else "serial",),
            precision=caps.get("precision", "fp32"),
            thread_safe=False,
            extra={"url": self.url, "firmware": ident.firmware if ident else "",
                   "serial_number": ident.serial_number if ident else "",
                   "device_capabilities": dict(caps)},
        )

    def compile(self, model: bytes) -> BoardExecutable:
        try:
            proto = onnx.load_from_string(model)
        except Exception as exc:
            raise TargetError(f"not an ONNX model: {exc}") from None
        connecting = self.link_stats()
        self.client()
        # IDENTIFY on a new connection: this case's too
        connect = link_repairs(connecting, self.link_stats())
        problem = _io_problem(proto, self.capabilities().dtypes)
        if problem:
            raise UnsupportedModelError(problem)
        for handle in self._stale_handles[:]:
            self._stale_handles.remove(handle)
            self.unload(handle)
        before = self.link_stats()
        try:
            loaded = self.load(model)
        except (TargetError, InfraError) as exc:
            # the load failed: what the link repaired meanwhile goes into its message
            repairs = describe_repairs(added(connect, link_repairs(before, self.link_stats())))
            if repairs and exc.args:
                exc.args = (f"{exc.args[0]} [link repairs during the load: {repairs}]",
                            *exc.args[1:])
            raise
        return BoardExecutable(self, proto, model, loaded, before, connect)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
