"""A board on a labgrid place: acquired for a run, its serial port resolved to a
pyserial URL, its power cycled, released on every exit path.

::

    with acquire_place("rk3588-01", "lab:20408", wait=300) as place:
        place.serial_url   # rfc2217://exporter-host:port?ign_set_control
        place.identity     # {place, coordinator, exporter, exporter_host, resource, ...}
        place.power_cycle("before the run")

The place is held by a holder process (:mod:`harness.lab.holder`) that releases it
when told to, and on its own when this process ends in any way (stdin at end of
file), so neither a crash nor SIGKILL leaves a board acquired. A place held by
someone else is refused at once naming the holder (:class:`PlaceBusy`), or waited
for up to ``wait`` seconds; it is never taken from them.

Processes this one starts (a run's workers) inherit what it holds through
``SHIPEI_LAB_HELD``: :func:`acquire_place` there borrows the place (same serial URL,
same identity) instead of acquiring it again, and releasing a borrowed place does
nothing. :func:`hold_place` keeps one acquisition per place for the whole process and
releases it at exit; that is what a target uses.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from harness.lab.coordinator import (
    Coordinator,
    LabError,
    LabUnavailable,
    PlaceBusy,
    PlaceState,
    Resource,
    coordinator_address,
    me,
)

HELD_ENV = "SHIPEI_LAB_HELD"
#: labgrid's resource classes a ``labgrid-client power`` drives
POWER_CLASSES = ("NetworkPowerPort", "PDUDaemonPort", "TasmotaPowerPort",
                 "NetworkUSBPowerPort", "NetworkSiSPMPowerPort", "NetworkYKUSHPowerPort",
                 "NetworkSysfsGPIO")
SERIAL_CLASSES = ("NetworkSerialPort",)
#: seconds the holder may take to start and acquire, beyond the wait for the place
ACQUIRE_MARGIN_S = 90.0
#: seconds a release may take before the holder is stopped (it then releases on its own)
RELEASE_TIMEOUT_S = 60.0
#: seconds between power off and on in a power cycle
POWER_OFF_S = 1.0

__all__ = ["AcquiredPlace", "LabError", "LabUnavailable", "PlaceBusy", "acquire_place",
           "hold_place", "release_all"]


@dataclass
class AcquiredPlace:
    """A place this process holds (or borrows from the process that started it)."""

    name: str
    coordinator: str
    state: PlaceState
    borrowed: bool = False
    resource: str | None = None
    #: every power action on this place by this process, in order
    power_log: list[dict[str, Any]] = field(default_factory=list)
    _holder: subprocess.Popen[str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- what it has ---------------------------------------------------------------------
    def serial_port(self) -> Resource:
        """The place's exported serial port (``resource=NAME`` picks one of several)."""
        ports = self.state.of_class(*SERIAL_CLASSES)
        if self.resource is not None:
            ports = [p for p in ports if self.resource in (p.name, p.path)]
        if len(ports) != 1:
            found = ", ".join(p.path for p in self.state.of_class(*SERIAL_CLASSES)) or "none"
            which = f" named {self.resource!r}" if self.resource else ""
            raise LabError(f"place {self.name!r} needs exactly one serial port{which} "
                           f"(labgrid NetworkSerialPort); it has: {found}")
        port = ports[0]
        if not port.avail or not port.params.get("host"):
            raise LabError(f"place {self.name!r}: serial port {port.path} is not available "
                           "(its exporter is gone or the device is unplugged)")
        if (port.params.get("extra") or {}).get("proxy_required"):
            raise LabError(f"place {self.name!r}: serial port {port.path} is reachable only "
                           "through an SSH proxy to its exporter, which Shipei does not set up")
        return port

    @property
    def serial_url(self) -> str:
        """A pyserial URL for the serial port: ``rfc2217://`` for ser2net's RFC 2217
        (``ign_set_control``: a pty or a USB adapter without modem lines would never
        acknowledge DTR/RTS), ``socket://`` for a raw TCP port."""
        port = self.serial_port()
        host, number = port.params["host"], port.params.get("port")
        if port.params.get("protocol", "rfc2217") == "raw":
            return f"socket://{host}:{number}"
        return f"rfc2217://{host}:{number}?ign_set_control"

    @property
    def baud(self) -> int | None:
        speed = self.serial_port().params.get("speed")
        return int(speed) if isinstance(speed, int) else None

    def power_port(self) -> Resource | None:
        ports = self.state.of_class(*POWER_CLASSES)
        return ports[0] if ports else None

    @property
    def identity(self) -> dict[str, Any]:
        """Where the board stood: recorded in run.json and certificates."""
        port = self.serial_port()
        power = self.power_port()
        return {
            "place": self.name,
            "coordinator": self.coordinator,
            "exporter": port.exporter,
            "exporter_host": port.params.get("host"),
            "resource": port.path,
            "device_path": (port.params.get("extra") or {}).get("path"),
            "tags": dict(self.state.tags),
            "acquired_by": self.state.acquired,
            "power": {"resource": power.path if power else None,
                      "actions": list(self.power_log)},
        }

    # -- what it does ---------------------------------------------------------------------
    def power_cycle(self, why: str, off_s: float = POWER_OFF_S) -> dict[str, Any]:
        """Power the board off and on (``labgrid-client power cycle``) and log it; a
        :class:`LabError` when the place has no power resource or the cycle fails."""
        power = self.power_port()
        if power is None:
            raise LabError(f"place {self.name!r} has no power resource to cycle")
        event: dict[str, Any] = {"action": "cycle", "why": why, "resource": power.path,
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            Coordinator(self.coordinator).checked(
                ["power", "cycle", "-t", f"{off_s:g}"], place=self.name)
        except LabError as exc:
            event["error"] = str(exc)
            self.power_log.append(event)
            raise
        event["ok"] = True
        self.power_log.append(event)
        return event

    def release(self) -> dict[str, Any]:
        """Release the place (nothing for a borrowed one); idempotent."""
        with self._lock:
            holder, self._holder = self._holder, None
        if holder is None:
            return {"released": False, "why": "borrowed" if self.borrowed else "released"}
        _forget(self)
        with _HELD_LOCK:  # a place released by hand is acquired afresh next time
            if _HELD.get(_key(self.coordinator, self.name)) is self:
                del _HELD[_key(self.coordinator, self.name)]
        try:
            assert holder.stdin is not None and holder.stdout is not None
            with contextlib.suppress(BrokenPipeError, OSError):
                holder.stdin.write("release\n")
                holder.stdin.close()
            holder.wait(RELEASE_TIMEOUT_S)
            lines = [line for line in holder.stdout.read().splitlines() if line.strip()]
            return json.loads(lines[-1]) if lines else {"released": False,
                                                        "why": "the holder said nothing"}
        except (subprocess.TimeoutExpired, ValueError) as exc:
            holder.terminate()  # it releases on SIGTERM too
            return {"released": False, "why": f"{type(exc).__name__}: {exc}"}

    def __enter__(self) -> AcquiredPlace:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


def acquire_place(name: str, coordinator: str | None = None, wait: float = 0.0,
                  resource: str | None = None) -> AcquiredPlace:
    """Acquire place ``name`` at ``coordinator`` (else ``LG_COORDINATOR``), waiting up
    to ``wait`` seconds while someone else holds it. Inherited from the process that
    started this one, the place is borrowed instead. Raises :class:`PlaceBusy` (naming
    the holder), :class:`LabUnavailable` or :class:`LabError`; all are ``InfraError``."""
    address = coordinator_address(coordinator)
    inherited = _inherited().get(_key(address, name))
    if inherited is not None:
        state = _state_from(inherited["state"])
        return AcquiredPlace(name, address, state, borrowed=True, resource=resource)
    with tempfile.TemporaryFile() as stderr:  # the holder's traceback, should it fail
        holder = subprocess.Popen(
            [sys.executable, "-m", "harness.lab.holder", address, name,
             f"{max(wait, 0.0):g}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, text=True, start_new_session=True, env=_holder_env())
        answer = _first_line(holder, max(wait, 0.0) + ACQUIRE_MARGIN_S)
        if not answer.get("acquired"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(10)
            stderr.seek(0)
            said = stderr.read().decode(errors="replace").strip().splitlines()[-1:]
    if not answer.get("acquired"):
        error = answer.get("error") or (f"the place holder for {name!r} failed: "
                                        f"{said[0] if said else 'no answer'}")
        if answer.get("holder"):
            raise PlaceBusy(error, answer["holder"])
        raise (LabUnavailable if "cannot reach" in error else LabError)(error)
    place = AcquiredPlace(name, address, _state_from(answer["place"]), resource=resource,
                          _holder=holder)
    _remember(place)
    return place


# -- one acquisition per place for the whole process -----------------------------------
_HELD: dict[str, AcquiredPlace] = {}
_HELD_LOCK = threading.RLock()


def hold_place(name: str, coordinator: str | None = None, wait: float = 0.0,
               resource: str | None = None, cycle_power: bool = True) -> AcquiredPlace:
    """The place this process holds for ``name`` (acquired on first use, its board
    power-cycled then when it has a power resource and ``cycle_power``), released
    when the process exits (:func:`release_all`)."""
    address = coordinator_address(coordinator)
    with _HELD_LOCK:
        place = _HELD.get(_key(address, name))
        if place is None:
            place = acquire_place(name, address, wait, resource)
            _HELD[_key(address, name)] = place
            if cycle_power and not place.borrowed and place.power_port() is not None:
                try:
                    place.power_cycle("before the run")
                except LabError:
                    place.release()
                    raise
        return place


def release_all() -> None:
    """Release every place this process holds (at exit, and for a test)."""
    with _HELD_LOCK:
        places = list(_HELD.values())
        _HELD.clear()
    for place in places:
        place.release()


atexit.register(release_all)


# -- handing held places down to child processes ---------------------------------------
def _key(address: str, name: str) -> str:
    return f"{address}|{name}"


def _inherited() -> dict[str, Any]:
    try:
        data = json.loads(os.environ.get(HELD_ENV, "") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _remember(place: AcquiredPlace) -> None:
    held = _inherited()
    held[_key(place.coordinator, place.name)] = {
        "state": _state_dict(place.state), "holder": me(), "pid": os.getpid()}
    os.environ[HELD_ENV] = json.dumps(held)


def _forget(place: AcquiredPlace) -> None:
    held = _inherited()
    entry = held.get(_key(place.coordinator, place.name))
    if entry is not None and entry.get("pid") == os.getpid():
        del held[_key(place.coordinator, place.name)]
        if held:
            os.environ[HELD_ENV] = json.dumps(held)
        else:
            os.environ.pop(HELD_ENV, None)


def _holder_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _state_dict(state: PlaceState) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(state)


def _state_from(data: Mapping[str, Any]) -> PlaceState:
    return PlaceState(
        name=data["name"], acquired=data.get("acquired"), tags=dict(data.get("tags") or {}),
        resources=tuple(Resource(**r) for r in data.get("resources") or ()),
        reservation=data.get("reservation"))


def _first_line(holder: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The holder's first JSON line, read within ``timeout`` seconds (the holder is
    stopped, and so releases, when it takes longer)."""
    result: list[str] = []
    assert holder.stdout is not None
    reader = threading.Thread(target=lambda: result.append(holder.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        holder.terminate()
        raise LabUnavailable(f"acquiring the place took longer than {timeout:g} s")
    try:
        answer = json.loads(result[0]) if result[0].strip() else {}
    except ValueError:
        holder.kill()
        raise LabError(f"the place holder failed: {result[0].strip()}") from None
    return answer if isinstance(answer, dict) else {}
