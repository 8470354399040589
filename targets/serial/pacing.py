"""Timing on a serial line: holding writes to a line rate, and when to send again.

A pseudo-terminal or a TCP socket moves bytes as fast as the kernel can; a UART
at 921600 baud with 8N1 framing moves one byte per 10 bit times. :class:`Pacer`
hands each chunk over only when its last byte would have left a real line, so a
receiver never sees data earlier than it could on the wire.

:class:`RetransmitTimer` is the link's retransmission schedule: how long the host
waits in silence before it sends a request again, learned from the round trips
the link measures (RFC 6298), so a lost answer costs about one round trip, not
the link's whole ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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


#: RFC 6298's gains for the smoothed round trip and its variation, and its K
ALPHA, BETA, K = 1 / 8, 1 / 4, 4
#: backoff doublings kept at most (the ceiling bounds the timeout long before)
MAX_BACKOFF = 16


@dataclass
class RetransmitTimer:
    """RFC 6298 retransmission timeout for one kind of request.

    Before the first round trip is measured the timeout is ``initial``. Each
    measured round trip (only of requests answered on their first transmission:
    Karn's rule) updates SRTT and RTTVAR and clears the backoff; the timeout is
    ``SRTT + max(floor, K x RTTVAR)``. Each attempt that ends in silence doubles it
    (the backoff is kept until a round trip is measured again, so a timeout that is
    too short grows instead of staying wrong). It never leaves ``[floor, ceiling]``.
    """

    initial: float
    floor: float
    ceiling: float
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling:
            raise ValueError(f"a retransmission timeout needs 0 < floor ({self.floor:g}) "
                             f"<= ceiling ({self.ceiling:g})")

    def rto(self) -> float:
        """Seconds of silence after which the request is sent again."""
        base = self.initial if self.srtt is None else \
            self.srtt + max(self.floor, K * self.rttvar)
        return min(max(base * 2 ** self.backoff, self.floor), self.ceiling)

    def sample(self, rtt: float) -> None:
        """A round trip measured on a request answered at its first transmission."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.samples += 1
        self.backoff = 0

    def expired(self) -> None:
        """An attempt ended in silence: back off."""
        self.backoff = min(self.backoff + 1, MAX_BACKOFF)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"rto_s": round(self.rto(), 6),
                "srtt_s": None if self.srtt is None else round(self.srtt, 6),
                "rttvar_s": round(self.rttvar, 6), "samples": self.samples,
                "backoff": self.backoff}
