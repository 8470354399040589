"""The holder of one acquired place: a small process of its own that acquires the
place, says so on one JSON line, and releases it when told to (a ``release`` line on
stdin) or when the process that started it is gone (end of file on stdin: a normal
exit, a crash, SIGKILL, a lost terminal alike). So a place is released on every exit
path of a run, including the ones no handler in the run itself survives.

``python -m harness.lab.holder COORDINATOR PLACE WAIT_S``

The first line on stdout is ``{"acquired": true, "place": {...}}`` or
``{"acquired": false, "error": "...", "holder": "host/user" or null}``. A place held
by someone else is waited for up to ``WAIT_S`` seconds (0: refused at once); it is
never taken from them (no ``--kick``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from typing import Any

from harness.lab.coordinator import LabError, LabSession, PlaceBusy, me

#: seconds between looks at a place someone else holds
POLL_S = 0.5
#: seconds a place held by this very user on this host is waited for at least: a run
#: that just ended may still be releasing it (its holder does so as it sees the run go)
OWN_GRACE_S = 10.0


def acquire(address: str, name: str, wait_s: float) -> dict[str, Any]:
    """Acquire ``name`` (its state, acquired), waiting up to ``wait_s`` for its holder to
    release it; :class:`PlaceBusy` when it stays held, :class:`LabError` for any other
    refusal."""
    session = LabSession(address, name)
    try:
        started = time.monotonic()
        deadline = started + max(wait_s, 0.0)
        while True:
            state = session.state()
            if not state["acquired"]:
                try:
                    session.acquire()
                    return session.state()
                except LabError:
                    state = session.state()  # taken meanwhile, reserved, or refused
                    if not state["acquired"] and not state["reservation"]:
                        raise
            if state["acquired"] == me() and wait_s < OWN_GRACE_S:
                deadline = max(deadline, started + OWN_GRACE_S)
            if time.monotonic() >= deadline:
                raise busy(state, address, time.monotonic() - started)
            session.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
    finally:
        session.close()


def busy(state: dict[str, Any], address: str, waited_s: float) -> PlaceBusy:
    """The refusal of a place acquired, or reserved, by someone else."""
    holder = state["acquired"] or f"a reservation ({state['reservation']}) of someone else"
    ours = " (that is this user on this host: another run?)" if holder == me() else ""
    waited = f" after waiting {waited_s:.0f} s" if waited_s >= 0.5 else \
        "; add wait=SECONDS to wait for it"
    return PlaceBusy(f"place {state['name']!r} at {address} is acquired by {holder}{ours}"
                     f"{waited}; it is not taken from them", holder)


def release(address: str, name: str) -> dict[str, Any]:
    """Release ``name`` if it is still ours; what happened, as a JSON-ready dict."""
    try:
        session = LabSession(address, name)
    except LabError as exc:
        return {"released": False, "why": str(exc)}
    try:
        holder = session.state()["acquired"]
        if holder != me():
            return {"released": False, "why": f"held by {holder or 'nobody'}"}
        session.release()
    except LabError as exc:
        return {"released": False, "why": str(exc)}
    finally:
        session.close()
    return {"released": True}


def main(argv: list[str] | None = None) -> int:
    address, name, wait = (argv if argv is not None else sys.argv[1:])[:3]
    # a terminal's Ctrl-C is the run's to handle; SIGTERM to the holder releases too
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        state = acquire(address, name, float(wait))
    except LabError as exc:
        _say({"acquired": False, "error": str(exc),
              "holder": getattr(exc, "holder", None)})
        return 1
    released = False
    try:
        _say({"acquired": True, "place": state})
        for line in sys.stdin:
            if line.strip() == "release":
                break
        _say(release(address, name))
        released = True
    finally:
        if not released:
            release(address, name)
    return 0


def _say(data: dict[str, Any]) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):  # whoever listened is gone
        print(json.dumps(data), flush=True)


if __name__ == "__main__":
    sys.exit(main())
