"""Talking to a labgrid coordinator.

What changes a place (acquire, release, power) goes through ``labgrid-client``, the
interface labgrid documents and keeps stable, run as a subprocess of the interpreter
that has labgrid installed: its own event loop, its own gRPC channel and its own
signal handling stay out of the harness's process, a hung coordinator costs one
bounded subprocess, and the coordinator sees exactly what a person at a shell would
do. Reading a place (who holds it, its tags, the resources it matched and their
parameters) goes through labgrid's client session in a subprocess too
(``python -m harness.lab.coordinator ADDRESS PLACE`` prints it as JSON), because
``labgrid-client show`` prints Python reprs meant for people.

The coordinator is ``coordinator=HOST:PORT`` or ``LG_COORDINATOR``, as for labgrid.
Who "we" are is labgrid's own rule: ``LG_HOSTNAME``/``LG_USERNAME`` or the host name
and login name; a place acquired as ``host/user`` is ours only when both match.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from getpass import getuser
from typing import Any

from harness.driver.target import InfraError

COORDINATOR_ENV = "LG_COORDINATOR"
#: seconds one ``labgrid-client`` call may take (connect, act, sync)
CLIENT_TIMEOUT_S = 60.0
_CLIENT = "from labgrid.remote.client import main; main()"


class LabError(InfraError):
    """A lab's infrastructure failed or refused: no coordinator, an unknown place, an
    exporter gone. Never the device's fault: cases record it as ``infra_error``."""


class LabUnavailable(LabError):
    """labgrid is not installed, or the coordinator cannot be reached."""


class PlaceBusy(LabError):
    """The place is acquired by someone else (``holder`` is labgrid's ``host/user``)."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Resource:
    """One exported resource of a place: where it is (``exporter/group/cls/name``) and
    the parameters the exporter published (host, port, ...)."""

    exporter: str
    group: str
    cls: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    avail: bool = True

    @property
    def path(self) -> str:
        return f"{self.exporter}/{self.group}/{self.cls}/{self.name}"


@dataclass(frozen=True)
class PlaceState:
    """A place as the coordinator knows it now. ``resources`` are the acquired ones
    when it is acquired, else those its matches would take."""

    name: str
    acquired: str | None
    tags: Mapping[str, str]
    resources: tuple[Resource, ...]
    reservation: str | None = None

    def of_class(self, *classes: str) -> list[Resource]:
        return [r for r in self.resources if r.cls in classes]


def me() -> str:
    """Who labgrid says we are: ``host/user``."""
    host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
    user = os.environ.get("LG_USERNAME") or getuser()
    return f"{host}/{user}"


def coordinator_address(explicit: str | None = None) -> str:
    """``explicit`` (the ``coordinator=`` option), else ``LG_COORDINATOR``; a
    :class:`LabError` when neither names one."""
    address = (explicit or os.environ.get(COORDINATOR_ENV) or "").strip()
    if not address:
        raise LabError("no labgrid coordinator: give coordinator=HOST:PORT or set "
                       f"{COORDINATOR_ENV}")
    return address


def labgrid_missing() -> str | None:
    """Why labgrid cannot be used from this interpreter, or None."""
    try:
        import labgrid.remote.client  # noqa: F401
    except ImportError as exc:
        return f"labgrid is not installed for {sys.executable} ({exc}): pip install labgrid"
    return None


class Coordinator:
    """One coordinator at ``address``; each call is a bounded subprocess."""

    def __init__(self, address: str, timeout: float = CLIENT_TIMEOUT_S) -> None:
        self.address = address
        self.timeout = timeout

    def client(self, args: Sequence[str], place: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        """``labgrid-client [-p PLACE] ARGS`` against this coordinator."""
        argv = [sys.executable, "-c", _CLIENT, "-x", self.address]
        if place is not None:
            argv += ["-p", place]
        return self._run([*argv, *args])

    def checked(self, args: Sequence[str], place: str | None = None) -> str:
        """:meth:`client`, its stdout; a :class:`LabError` with labgrid's own words when
        it fails."""
        done = self.client(args, place)
        if done.returncode != 0:
            raise LabError(f"labgrid-client {' '.join(args)}"
                           f"{f' on place {place!r}' if place else ''} at {self.address} "
                           f"failed: {_last_words(done)}")
        return done.stdout

    def place(self, name: str) -> PlaceState:
        """The place ``name`` as the coordinator knows it now."""
        data = child_answer(["harness.lab.coordinator", self.address, name],
                            f"reading place {name!r} at {self.address}", self.timeout)
        return PlaceState(
            name=data["name"], acquired=data.get("acquired"), tags=data.get("tags", {}),
            resources=tuple(Resource(**r) for r in data.get("resources", [])),
            reservation=data.get("reservation"))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        missing = labgrid_missing()
        if missing:
            raise LabUnavailable(missing)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  env=_client_env(), stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise LabUnavailable(f"the labgrid coordinator at {self.address} did not answer "
                                 f"within {self.timeout:g} s") from None


def child_answer(module_args: Sequence[str], what: str,
                 timeout: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS...`` (one of harness.lab's labgrid children: it prints
    one JSON line last) and return that line as a dict. :class:`LabUnavailable` when
    labgrid is missing, the child takes longer than ``timeout`` seconds or says nothing
    readable (``what``, e.g. "reading the lab at HOST:PORT", names the attempt); an answer
    ``{"error": ...}`` is raised as :class:`LabUnavailable` when it also says
    ``"unreachable": true``, else as :class:`LabError`."""
    missing = labgrid_missing()
    if missing:
        raise LabUnavailable(missing)
    try:
        done = subprocess.run([sys.executable, "-m", *module_args], capture_output=True,
                              text=True, timeout=timeout, env=_client_env(),
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise LabUnavailable(f"{what}: no answer within {timeout:g} s") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if not isinstance(answer, dict):
        raise LabUnavailable(f"{what} failed: {_last_words(done)}")
    if "error" in answer:
        raise (LabUnavailable if answer.get("unreachable") else LabError)(str(answer["error"]))
    return answer


def _client_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _last_words(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines()
             if line.strip() and not line.startswith(("Traceback", "  "))]
    return lines[-1] if lines else f"exit status {done.returncode}"


# -- labgrid's client session, in a process of ours that does nothing else -------------
class LabSession:
    """labgrid's ``ClientSession`` on an event loop of its own, for one place: what the
    holder and the reading subprocess use (never the harness's own process)."""

    def __init__(self, address: str, place: str) -> None:
        import argparse
        import asyncio

        from labgrid.remote.client import start_session

        self.address = address
        self.name = place
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # what labgrid-client's acquire and release read: never --kick, no unmatched
        args = argparse.Namespace(place=place, allow_unmatched=False, kick=False)
        try:
            # in a context of its own: labgrid stashes "the" event loop in a context
            # variable and refuses a second one, and each session here has its own
            self.session = contextvars.Context().run(
                start_session, address, loop=self.loop, extra={"args": args})
        except Exception as exc:  # gRPC's and labgrid's errors alike: nobody answered
            self.loop.close()
            raise LabUnavailable(f"cannot reach the labgrid coordinator at {address}: "
                                 f"{exc}") from None

    def state(self) -> dict[str, Any]:
        """The place as JSON-ready data; :class:`LabError` when there is no such place."""
        place = self.session.places.get(self.name)
        if place is None:
            known = ", ".join(sorted(self.session.places)) or "none"
            raise LabError(f"the labgrid coordinator at {self.address} has no place "
                           f"{self.name!r} (places: {known})")
        return {"name": place.name, "acquired": place.acquired or None,
                "tags": dict(place.tags), "reservation": place.reservation or None,
                "resources": _resources(self.session, place)}

    def acquire(self) -> None:
        self._act(self.session.acquire())

    def release(self) -> None:
        self._act(self.session.release())

    def sleep(self, seconds: float) -> None:
        """Let the session take the coordinator's updates for ``seconds``."""
        import asyncio

        self.loop.run_until_complete(asyncio.sleep(seconds))

    def _act(self, coroutine: Any) -> None:
        from labgrid.remote.client import Error

        try:
            with contextlib.redirect_stdout(sys.stderr):  # labgrid prints what it did
                self.loop.run_until_complete(coroutine)
        except Error as exc:
            raise LabError(f"labgrid at {self.address}, place {self.name!r}: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.session.stop())
            self.loop.run_until_complete(self.session.close())
        self.loop.close()


def _read_place(address: str, name: str) -> dict[str, Any]:
    try:
        session = LabSession(address, name)
    except LabUnavailable as exc:
        return {"error": str(exc), "unreachable": True}
    try:
        return session.state()
    except LabError as exc:
        return {"error": str(exc)}
    finally:
        session.close()


def _resources(session: Any, place: Any) -> list[dict[str, Any]]:
    """The acquired resources of an acquired place (one whose exporter is gone is
    listed with ``avail`` false and no parameters), else the ones its matches take."""
    if place.acquired:
        paths = [tuple(p) for p in place.acquired_resources]
    else:
        paths = []
        for exporter, groups in sorted(session.resources.items()):
            for group_name, group in sorted(groups.items()):
                for resource_name, resource in sorted(group.items()):
                    seen = _entry(resource)
                    path = (exporter, group_name, seen[0] if seen else "", resource_name)
                    if seen is not None and place.getmatch(path):
                        paths.append(path)
    found = []
    for exporter, group_name, cls, resource_name in paths:
        seen = _entry(session.resources.get(exporter, {}).get(group_name, {})
                      .get(resource_name))
        cls, params, avail = seen if seen is not None else (cls, {}, False)
        found.append({"exporter": exporter, "group": group_name, "cls": cls,
                      "name": resource_name, "params": params, "avail": avail})
    return found


def _entry(resource: Any) -> tuple[str, dict[str, Any], bool] | None:
    """A resource entry's class, parameters and availability; None for the empty
    entries an exporter that went away leaves behind."""
    try:
        return resource.cls, _plain(resource.params), bool(resource.avail)
    except (AttributeError, KeyError):
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    address, name = (argv if argv is not None else sys.argv[1:])[:2]
    print(json.dumps(_read_place(address, name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
