"""A framework target on a labgrid place's SSH host: ``--target onnxruntime-cpu,place=NAME``.

A target whose driver takes no ``place=`` option of its own (every framework target: its
worker is a :class:`~harness.isolation.host.ProcessHost`) runs on the machine a place
names with labgrid's ``NetworkService`` resource (:mod:`harness.lab.hosts`):

1. the place is held for the whole process (:func:`harness.lab.place.hold_place`: a
   holder process that releases it on every exit path; worker processes borrow it);
2. one ``python -m harness.lab.host_facts`` over ssh reports what the target is *there*
   (identity, availability, capabilities, as that machine's runtime says) and that
   machine's environment (interpreter, architecture, packages: its fingerprint);
3. the pool launches the target's worker with the host's ssh launcher, so every case
   runs there over the worker wire.

The place's options (:data:`HOST_OPTIONS`) are taken out of the request; the others go to
the driver, on both machines. What is recorded (run.json ``targets.<label>.place``) is
:meth:`HostPlace.identity`: the place, its coordinator and exporter, the resource, the
ssh host and the remote machine's facts and fingerprint.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.driver.registry import RegistryError, TargetRequest, TargetSpec, load_object
from harness.driver.target import (
    Availability,
    Capabilities,
    Executable,
    InfraError,
    Target,
    TargetIdentity,
)
from harness.lab.coordinator import LabError

#: the options a host place takes; the rest go to the target's driver
HOST_OPTIONS = ("place", "coordinator", "wait", "resource", "python", "pythonpath",
                "ssh_config")
#: seconds the remote facts may take (an ssh connect, an interpreter, the target's probe)
FACTS_TIMEOUT_S = 120.0
FACTS_MODULE = "harness.lab.host_facts"

_FACTS: dict[str, dict[str, Any]] = {}
_FACTS_LOCK = threading.Lock()


def takes_place(spec: TargetSpec) -> bool:
    """Whether the driver handles ``place=`` itself (a serial target's board on a place),
    as its factory's signature says."""
    try:
        return "place" in inspect.signature(load_object(spec.factory)).parameters
    except (TypeError, ValueError, ImportError, AttributeError):
        return False


def on_host_request(spec: TargetSpec, request: TargetRequest) -> bool:
    """Whether ``request`` puts a framework target on a place's SSH host."""
    return "place" in request.options and not takes_place(spec)


def build_on_host(spec: TargetSpec, request: TargetRequest) -> Target:
    """The target of ``request`` (``place=`` and the other :data:`HOST_OPTIONS` taken
    out) on its place's SSH host. A place that cannot be had makes the target
    unavailable (the run stops before its first case, naming it); bad options are a
    :class:`RegistryError`."""
    own = {k: v for k, v in request.options.items() if k in HOST_OPTIONS}
    rest = {k: v for k, v in request.options.items() if k not in HOST_OPTIONS}
    try:
        inner = spec.build(request.configuration, rest)
    except TypeError as exc:
        raise RegistryError(f"bad options for target {request.label!r}: {exc} (on a place, "
                            f"{', '.join(HOST_OPTIONS)} are the place's)") from None
    try:
        wait = float(own.get("wait") or 0.0)
    except ValueError:
        raise RegistryError(f"target {request.label!r}: wait= must be seconds, not "
                            f"{own.get('wait')!r}") from None
    host = HostPlace(name=str(own["place"]), spec=spec, configuration=request.configuration,
                     target_options=rest, coordinator=_text(own.get("coordinator")),
                     wait=wait, resource=_text(own.get("resource")),
                     python=_text(own.get("python")) or "python3",
                     pythonpath=_text(own.get("pythonpath")),
                     ssh_config=_text(own.get("ssh_config")))
    host.attach()
    return _adopt(inner, host)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class HostPlace:
    """A place's SSH host, held for this process, and what runs there."""

    name: str
    spec: TargetSpec
    configuration: str
    target_options: Mapping[str, Any]
    coordinator: str | None = None
    wait: float = 0.0
    resource: str | None = None
    python: str = "python3"
    pythonpath: str | None = None
    ssh_config: str | None = None
    error: str = ""
    place: Any = field(default=None, repr=False)
    host: Any = field(default=None, repr=False)

    def attach(self) -> None:
        """Hold the place and find its SSH host; :attr:`error` says why not."""
        from harness.lab.hosts import ssh_host
        from harness.lab.place import hold_place

        try:
            # a server is not power-cycled: it would not be back before the first case
            self.place = hold_place(self.name, self.coordinator, self.wait,
                                    cycle_power=False)
            self.host = ssh_host(self.place, self.resource)
        except LabError as exc:
            self.error = f"labgrid place {self.name!r}: {exc}"
            if self.place is not None and not self.place.borrowed:
                self.place.release()
            self.place = self.host = None

    def ssh(self) -> list[str]:
        return ["ssh", *(["-F", self.ssh_config] if self.ssh_config else [])]

    def launcher(self) -> list[str]:
        """The argv prefix of the worker's interpreter on the host."""
        if self.host is None:
            raise InfraError(self.error or f"labgrid place {self.name!r} is not held")
        return self.host.launcher(self.python, self.pythonpath, ssh=self.ssh())

    def facts(self) -> dict[str, Any]:
        """What the host says (:mod:`harness.lab.host_facts`), asked once per process;
        ``{"error": ...}`` when it cannot be asked."""
        if self.error:
            return {"error": self.error}
        request = {"spec": {**asdict(self.spec),
                            "configurations": list(self.spec.configurations)},
                   "configuration": self.configuration, "options": dict(self.target_options)}
        key = json.dumps([self.place.coordinator, self.name, request], sort_keys=True,
                         default=str)
        with _FACTS_LOCK:
            if key not in _FACTS:
                _FACTS[key] = self._ask(request)
            return _FACTS[key]

    def _ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        argv = [*self.launcher(), "-m", FACTS_MODULE]
        where = f"{self.host.username}@{self.host.address}:{self.host.port}"
        try:
            done = subprocess.run(argv, input=json.dumps(request, default=str),
                                  capture_output=True, text=True, timeout=FACTS_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"labgrid place {self.name!r}: its host {where} did not answer "
                             f"within {FACTS_TIMEOUT_S:g} s"}
        except OSError as exc:
            return {"error": f"labgrid place {self.name!r}: cannot run ssh: {exc}"}
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            said = [line for line in done.stderr.splitlines() if line.strip()][-1:]
            return {"error": f"labgrid place {self.name!r}: ssh to {where} "
                             f"failed (exit {done.returncode}): "
                             f"{said[0] if said else 'no answer'}"}
        return answer if isinstance(answer, dict) else {"error": f"bad answer: {answer!r}"}

    def identity(self) -> dict[str, Any]:
        """Where the target stood: recorded in run.json and certificates."""
        if self.place is None:
            return {"place": self.name, "error": self.error}
        facts = self.facts()
        host = self.host
        service = next((r for r in self.place.state.resources if r.path == host.resource),
                       None)
        return {
            "place": self.name,
            "coordinator": self.place.coordinator,
            "exporter": service.exporter if service else None,
            "resource": host.resource,
            "ssh_host": {"address": host.address, "username": host.username,
                         "port": host.port},
            "tags": dict(self.place.state.tags),
            "acquired_by": self.place.state.acquired,
            "worker": {"launcher": "ssh", "python": self.python,
                       "pythonpath": self.pythonpath, **(facts.get("host") or {})},
            "environment": facts.get("environment"),
            **({"error": facts["error"]} if "error" in facts else {}),
        }


def _remote(target: Any) -> dict[str, Any]:
    return target.lab_host.facts()


def _identity(self: Any) -> TargetIdentity:
    found = _remote(self).get("identity")
    if isinstance(found, dict):
        return TargetIdentity(**found)
    return super(type(self), self).identity  # type: ignore[no-any-return]


def _availability(self: Any) -> Availability:
    facts = _remote(self)
    if "error" in facts:
        return Availability.no(str(facts["error"]))
    if not facts.get("available"):
        return Availability.no(f"on place {self.lab_host.name!r} "
                               f"({self.lab_host.host.address}): {facts.get('reason')}")
    return Availability.yes()


def _capabilities(self: Any) -> Capabilities:
    found = _remote(self).get("capabilities")
    if not isinstance(found, dict):
        return super(type(self), self).capabilities()  # type: ignore[no-any-return]
    return Capabilities(**{**found, "dtypes": tuple(found.get("dtypes") or ()),
                           "devices": tuple(found.get("devices") or ())})


def _compile(self: Any, model: bytes) -> Executable:
    raise InfraError(f"target on place {self.lab_host.name!r} runs its cases in a worker "
                     "on the place's host (over ssh), never in this process")


def _describe(self: Any) -> dict[str, Any]:
    data: dict[str, Any] = super(type(self), self).describe()
    data["place"] = self.lab_host.identity()
    return data


_CLASSES: dict[type, type] = {}


def _on_host_class(cls: type) -> type:
    """``cls`` on a place's SSH host: its identity, availability and capabilities are the
    host's (asked there once), its description names the place, and it never compiles
    in this process. A subclass of ``cls`` that adds no state, so a built instance of
    ``cls`` takes it as it is; it keeps ``cls``'s module, so run.json digests the same
    driver file either way."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"{cls.__name__}OnHost", (cls,), {
            "__module__": cls.__module__,
            "__doc__": f"{cls.__name__} on a labgrid place's SSH host",
            "identity": property(_identity), "availability": _availability,
            "capabilities": _capabilities, "compile": _compile, "describe": _describe})
    return _CLASSES[cls]


def _adopt(inner: Target, host: HostPlace) -> Target:
    inner.__class__ = _on_host_class(type(inner))  # the driver's state, the host's answers
    inner.lab_host = host  # type: ignore[attr-defined]
    return inner


def host_of(target: Target) -> HostPlace | None:
    """The place's host a target runs on, or None for a target here."""
    return target.lab_host if type(target) in _CLASSES.values() else None  # type: ignore[attr-defined]
