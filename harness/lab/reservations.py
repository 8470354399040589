"""Reserving every place that matches a tag filter, through labgrid's reservations.

A reservation is labgrid's fair queue for places: the coordinator allocates a free
place whose tags match the filter to the oldest waiting reservation of the highest
priority, and only the reservation's owner may then acquire it. :func:`reserve_places`
asks for one reservation per matching place (at most ``max_places``), waits up to
``wait_s`` for them to be allocated, cancels the ones still waiting, and returns the
allocated ones; the caller acquires those places (:func:`harness.lab.place.acquire_place`,
as the same ``host/user``), and cancels the reservations when done
(:func:`cancel_reservations`). An acquired reservation does not expire; a released one
expires a minute later unless cancelled.

As in :mod:`harness.lab.coordinator`, labgrid's client session runs in a subprocess
(``python -m harness.lab.reservations ADDRESS WAIT_S MAX KEY=VALUE...`` prints one JSON
line), so its event loop and gRPC channel stay out of the harness's process.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.lab.coordinator import (
    CLIENT_TIMEOUT_S,
    Coordinator,
    LabError,
    LabUnavailable,
    child_answer,
)

#: labgrid's rule for tag keys (labgrid.remote.common.TAG_KEY); values: no separators
TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")
TAG_VALUE = re.compile(r"[A-Za-z0-9_.:-]+")
#: seconds between polls of a waiting reservation (a poll also keeps it alive)
POLL_S = 0.5


@dataclass(frozen=True)
class Allocation:
    """A reservation the coordinator allocated: its token and the place it holds."""

    token: str
    place: str
    tags: Mapping[str, str]


def parse_filter(text: str) -> dict[str, str]:
    """``--places`` text (``KEY=VALUE[,KEY=VALUE...]``) as a labgrid tag filter; a
    ValueError naming the bad pair."""
    found: dict[str, str] = {}
    for pair in [p.strip() for p in text.split(",") if p.strip()]:
        key, sep, value = pair.partition("=")
        if not sep or not TAG_KEY.fullmatch(key) or not TAG_VALUE.fullmatch(value):
            raise ValueError(f"--places {text!r}: {pair!r} is not TAG=VALUE (labgrid tags: "
                             "keys: lower-case letters, digits and '_', starting with a letter; "
                             "values: no ',', '=' or spaces)")
        found[key] = value
    if not found:
        raise ValueError("--places needs at least one TAG=VALUE")
    return found


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """:class:`LabUnavailable` at once when nothing listens at ``address`` (labgrid's
    session would retry for minutes before it says so)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        host, port = address, "20408"  # labgrid's default port
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except OSError as exc:
        raise LabUnavailable(f"cannot reach the labgrid coordinator at {address}: "
                             f"{exc.strerror or exc}") from None


def reserve_places(address: str, tags: Mapping[str, str], max_places: int = 0,
                   wait_s: float = 60.0, timeout: float = 0.0) -> list[Allocation]:
    """Reserve up to ``max_places`` (0: all) places whose tags include ``tags``; the
    allocated ones, in place-name order. A :class:`LabError` when none matches or none
    was allocated within ``wait_s`` (every reservation is cancelled then)."""
    check_reachable(address)
    answer = child_answer(
        ["harness.lab.reservations", address, f"{wait_s:g}", str(max_places),
         *(f"{k}={v}" for k, v in tags.items())],
        f"reserving places at {address}", timeout or wait_s + CLIENT_TIMEOUT_S)
    return [Allocation(a["token"], a["place"], a.get("tags") or {})
            for a in answer["allocated"]]


def cancel_reservations(address: str, tokens: Sequence[str]) -> list[str]:
    """Cancel each reservation; the problems, one line each (a reservation already gone
    is not one)."""
    problems = []
    coordinator = Coordinator(address)
    for token in tokens:
        try:
            coordinator.checked(["cancel-reservation", token])
        except LabError as exc:
            if "does not exist" not in str(exc):
                problems.append(str(exc))
    return problems


# -- the reserving subprocess -----------------------------------------------------------
def _reserve(address: str, wait_s: float, max_places: int, tags: dict[str, str]
             ) -> dict[str, Any]:
    import asyncio

    from labgrid.remote.client import start_session
    from labgrid.remote.common import Reservation, ReservationState
    from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        session = start_session(address, loop=loop)
    except Exception as exc:  # gRPC's and labgrid's errors alike: nobody answered
        return {"error": f"cannot reach the labgrid coordinator at {address}: {exc}",
                "unreachable": True}
    stub = session.stub
    try:
        matching = sorted(name for name, place in session.places.items()
                          if all(place.tags.get(k) == v for k, v in tags.items()))
        wanted = ", ".join(f"{k}={v}" for k, v in tags.items())
        if not matching:
            return {"error": f"no place at {address} has the tags {wanted}"}
        count = min(len(matching), max_places) if max_places > 0 else len(matching)
        tokens = []
        for _ in range(count):
            request = pb2.CreateReservationRequest(
                filters={"main": pb2.Reservation.Filter(filter=tags)}, prio=0.0)
            made = loop.run_until_complete(stub.CreateReservation(request))
            tokens.append(made.reservation.token)
        allocated: dict[str, str] = {}
        deadline = time.monotonic() + wait_s
        while True:
            for token in [t for t in tokens if t not in allocated]:
                polled = loop.run_until_complete(
                    stub.PollReservation(pb2.PollReservationRequest(token=token)))
                res = Reservation.from_pb2(polled.reservation)
                if res.state in (ReservationState.allocated, ReservationState.acquired):
                    allocated[token] = res.allocations["main"][0]
            if len(allocated) == len(tokens) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        for token in [t for t in tokens if t not in allocated]:
            loop.run_until_complete(
                stub.CancelReservation(pb2.CancelReservationRequest(token=token)))
        if not allocated:
            return {"error": f"none of the {len(matching)} place(s) with the tags {wanted} "
                             f"({', '.join(matching)}) was free within {wait_s:g} s"}
        return {"matching": matching, "allocated": sorted(
            ({"token": t, "place": p, "tags": dict(session.places[p].tags)}
             for t, p in allocated.items()), key=lambda a: a["place"])}
    finally:
        loop.run_until_complete(session.stop())
        loop.run_until_complete(session.close())
        loop.close()


def main(argv: list[str] | None = None) -> int:
    address, wait, count, *pairs = argv if argv is not None else sys.argv[1:]
    tags = dict(pair.split("=", 1) for pair in pairs)
    try:
        answer = _reserve(address, float(wait), int(count), tags)
    except Exception as exc:  # labgrid's gRPC errors: one line for the parent
        details = exc.details() if hasattr(exc, "details") else str(exc)
        answer = {"error": f"reserving places at {address} failed: "
                           f"{type(exc).__name__}: {details}"}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
