"""Holding writes to a serial line rate.

A pseudo-terminal or a TCP socket moves bytes as fast as the kernel can; a UART
at 921600 baud with 8N1 framing moves one byte per 10 bit times. :class:`Pacer`
hands each chunk over only when its last byte would have left a real line, so a
receiver never sees data earlier than it could on the wire.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_CHUNK = 64
#: how early to wake before the last chunk is due, then spin (timer slack is ~0.1 ms)
SPIN_S = 0.0003


class Pacer:
    def __init__(self, baud: float = 0.0, bits_per_byte: float = 10.0,
                 chunk: int = DEFAULT_CHUNK) -> None:
        if baud < 0 or bits_per_byte <= 0:
            raise ValueError("baud must be >= 0 and bits_per_byte > 0")
        self.baud = float(baud)
        self.bits_per_byte = float(bits_per_byte)
        self.byte_time = bits_per_byte / baud if baud else 0.0
        self.chunk = max(1, int(chunk))
        self._free_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.byte_time > 0

    @property
    def bytes_per_second(self) -> float:
        return 1.0 / self.byte_time if self.byte_time else float("inf")

    def transfer_time(self, nbytes: int) -> float:
        return nbytes * self.byte_time

    def write(self, write: Callable[[bytes], object], data: bytes) -> None:
        if not self.byte_time:
            write(data)
            return
        self._free_at = max(self._free_at, time.perf_counter())
        view = memoryview(data)
        for start in range(0, len(view), self.chunk):
            piece = view[start:start + self.chunk]
            self._free_at += len(piece) * self.byte_time
            last = start + self.chunk >= len(view)
            # the schedule is absolute, so oversleeping a middle chunk costs nothing;
            # the last one is held to the microsecond (sleep, then spin the rest)
            delay = self._free_at - time.perf_counter() - (SPIN_S if last else 0.0)
            if delay > 0:
                time.sleep(delay)
            while last and time.perf_counter() < self._free_at:
                pass
            write(bytes(piece))
