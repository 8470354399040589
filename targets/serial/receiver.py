"""Turning a byte stream into frames, resynchronising after garbage and damage.

:class:`FrameReceiver` is pure (no I/O): bytes go in through :meth:`feed`, events
come out in stream order:

- :class:`~targets.serial.protocol.Frame`: a frame whose header check (CRC-16)
  and frame check (CRC-32) both hold;
- :class:`Damage`: a frame whose header was intact (so its type, sequence number
  and length are known) but whose body was not: ``crc`` (right length, CRC-32
  mismatch: bit errors), ``short`` (the next intact header starts before this
  frame's declared end: bytes were lost or the frame was cut off), ``oversize``
  (longer than this receiver accepts);
- :class:`Stray`: bytes that belong to no intact header (line noise, or a frame
  whose header itself was hit), reported just before the next event.

After damage the receiver rescans from the byte after the damaged frame's sync,
so a frame that followed a shortened one is still found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from targets.serial.protocol import (
    ABSOLUTE_MAX_PAYLOAD,
    HEADER_SIZE,
    SYNC,
    Frame,
    Header,
    frame_crc_ok,
    parse_header,
)

_COMPACT_AT = 1 << 16


@dataclass(frozen=True)
class Damage:
    kind: str  # "crc" | "short" | "oversize"
    nbytes: int  # bytes discarded with this frame
    header: Header
    missing: int = 0  # for "short": declared length minus what arrived


@dataclass(frozen=True)
class Stray:
    nbytes: int


Event = Frame | Damage | Stray


@dataclass
class ReceiverCounters:
    frames: int = 0
    damaged: dict[str, int] = field(default_factory=dict)
    stray_bytes: int = 0
    received_bytes: int = 0

    @property
    def damaged_total(self) -> int:
        return sum(self.damaged.values())

    def as_dict(self) -> dict[str, object]:
        return {"frames": self.frames, "damaged": dict(self.damaged),
                "damaged_total": self.damaged_total, "stray_bytes": self.stray_bytes,
                "received_bytes": self.received_bytes}


class FrameReceiver:
    def __init__(self, max_payload: int = ABSOLUTE_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.counters = ReceiverCounters()
        self._buf = bytearray()
        self._start = 0
        self._stray = 0

    @property
    def pending(self) -> int:
        """Bytes held that are not yet an event (a partial frame, a possible sync)."""
        return len(self._buf) - self._start + self._stray

    def needed(self) -> int:
        """Bytes still missing for the frame at the head of the buffer (0 if unknown)."""
        header = parse_header(bytes(self._buf[self._start:self._start + HEADER_SIZE]))
        if header is None or header.length > self.max_payload:
            return 0
        return max(0, header.total - (len(self._buf) - self._start))

    def feed(self, data: bytes) -> list[Event]:
        self.counters.received_bytes += len(data)
        self._buf += data
        events: list[Event] = []
        while True:
            event = self._next()
            if event is None:
                break
            events.append(event)
        self._compact()
        return events

    def expire(self) -> list[Event]:
        """The line went quiet with bytes pending: the partial frame is lost.

        An intact header with too few bytes after it is a ``short`` frame; any
        other leftover is stray.
        """
        events: list[Event] = []
        header = parse_header(bytes(self._buf[self._start:self._start + HEADER_SIZE]))
        if header is not None and header.length <= self.max_payload:
            size = len(self._buf) - self._start
            self._start = len(self._buf)
            events += self._flush_stray() + [
                self._damage(Damage("short", size, header, header.total - size))]
        else:
            self._stray += len(self._buf) - self._start
            self._start = len(self._buf)
            events += self._flush_stray()
        self._compact()
        return events

    def reset(self) -> int:
        """Forget everything held (the link dropped); returns the bytes discarded."""
        lost = len(self._buf) - self._start + self._stray
        self._buf.clear()
        self._start = 0
        self._stray = 0
        return lost

    # -- internals -----------------------------------------------------------------
    def _compact(self) -> None:
        if self._start and (self._start >= _COMPACT_AT or self._start == len(self._buf)):
            del self._buf[:self._start]
            self._start = 0

    def _flush_stray(self) -> list[Event]:
        if not self._stray:
            return []
        stray, self._stray = self._stray, 0
        self.counters.stray_bytes += stray
        return [Stray(stray)]

    def _damage(self, damage: Damage) -> Damage:
        self.counters.damaged[damage.kind] = self.counters.damaged.get(damage.kind, 0) + 1
        return damage

    def _skip_to_sync(self) -> bool:
        """Advance to the next sync; False when no complete sync is buffered."""
        index = self._buf.find(SYNC, self._start)
        if index < 0:
            keep = 1 if self._buf.endswith(SYNC[:1]) else 0
            self._stray += len(self._buf) - self._start - keep
            self._start = len(self._buf) - keep
            return False
        self._stray += index - self._start
        self._start = index
        return True

    def _next_intact_header(self, begin: int, end: int) -> int | None:
        """Position of the first intact header starting in [begin, end); -1 when a
        sync there still lacks the rest of its header (wait for more bytes)."""
        pos = begin
        while True:
            pos = self._buf.find(SYNC, pos, end + 1)
            if pos < 0 or pos >= end:
                return None
            if pos + HEADER_SIZE > len(self._buf):
                return -1
            if parse_header(bytes(self._buf[pos:pos + HEADER_SIZE])) is not None:
                return pos
            pos += 1

    def _next(self) -> Event | None:
        while True:
            if not self._skip_to_sync():
                return None
            available = len(self._buf) - self._start
            if available < HEADER_SIZE:
                return None
            view = memoryview(self._buf)[self._start:]
            header = parse_header(view)
            if header is None:
                self._stray += 1
                self._start += 1
                continue
            if self._stray:  # stray bytes are reported before the frame that ends them
                return self._flush_stray()[0]
            if header.length > self.max_payload:
                self._start += HEADER_SIZE
                return self._damage(Damage("oversize", HEADER_SIZE, header))
            if available < header.total:
                return None
            if frame_crc_ok(view, header):
                payload = bytes(view[HEADER_SIZE:HEADER_SIZE + header.length])
                self._start += header.total
                self.counters.frames += 1
                return Frame(header.type, header.seq, payload, header.version)
            following = self._next_intact_header(self._start + 1, self._start + header.total)
            if following == -1:
                return None  # a header may start inside this frame: wait for its bytes
            if following is not None:
                size = following - self._start
                self._start = following
                return self._damage(Damage("short", size, header, header.total - size))
            self._start += header.total
            return self._damage(Damage("crc", header.total, header))
