"""A host on a place: labgrid's ``NetworkService`` resource (an address, a user name, an
SSH port) names a machine that a framework target's worker can run on, over ssh.

The worker wire starts from an argv (:class:`harness.isolation.host.ProcessHost`'s
``launcher``), so a worker on an aarch64 server is ``ssh -p PORT -l USER ADDRESS env
PYTHONPATH=... python3 -m harness.isolation.worker_main``: the target is measured where
it stands, and the worker reports that machine's interpreter and architecture.

Only key-based logins are used (``BatchMode``): a ``NetworkService`` with a password
is refused, since Shipei will not type passwords into ssh.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.lab.coordinator import LabError
from harness.lab.place import AcquiredPlace

SERVICE_CLASSES = ("NetworkService",)
#: ssh options every launcher gets: no prompts, a bounded connect
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15")


@dataclass(frozen=True)
class SshHost:
    """An SSH-reachable machine on a place."""

    place: str
    resource: str
    address: str
    username: str
    port: int = 22

    @property
    def identity(self) -> dict[str, Any]:
        return {"place": self.place, "resource": self.resource, "address": self.address,
                "username": self.username, "port": self.port}

    def launcher(self, python: str = "python3", pythonpath: str | None = None,
                 env: Mapping[str, str] | None = None,
                 ssh: Sequence[str] = ("ssh",)) -> list[str]:
        """The argv prefix that starts ``python`` on this host (ProcessHost appends
        ``-m harness.isolation.worker_main``). ``pythonpath``: where the harness's
        source lies there, when it is not installed; ``env``: more variables for the
        remote process; ``ssh``: the client and options of this side (an identity file,
        a known-hosts file)."""
        remote = dict(env or {})
        remote.setdefault("PYTHONUNBUFFERED", "1")
        if pythonpath:
            remote["PYTHONPATH"] = pythonpath
        command = ["env", *(f"{k}={v}" for k, v in sorted(remote.items())), python]
        return [*ssh, *SSH_OPTIONS, "-p", str(self.port), "-l", self.username,
                self.address, "--", *(shlex.quote(part) for part in command)]


def ssh_host(place: AcquiredPlace, resource: str | None = None) -> SshHost:
    """The place's SSH host (``resource``: which one, when it has several); a
    :class:`LabError` naming the place when it has none, or needs a password."""
    services = place.state.of_class(*SERVICE_CLASSES)
    if resource is not None:
        services = [s for s in services if resource in (s.name, s.path)]
    if len(services) != 1:
        found = ", ".join(s.path for s in place.state.of_class(*SERVICE_CLASSES)) or "none"
        raise LabError(f"place {place.name!r} needs exactly one SSH host (labgrid "
                       f"NetworkService){f' named {resource!r}' if resource else ''}; "
                       f"it has: {found}")
    service = services[0]
    params = service.params
    if not service.avail or not params.get("address"):
        raise LabError(f"place {place.name!r}: host {service.path} is not available "
                       "(its exporter is gone)")
    if params.get("password"):
        raise LabError(f"place {place.name!r}: host {service.path} has a password; Shipei "
                       "logs in with keys only (BatchMode): install a key for "
                       f"{params.get('username')}@{params.get('address')}")
    return SshHost(place=place.name, resource=service.path, address=str(params["address"]),
                   username=str(params.get("username") or ""),
                   port=int(params.get("port") or 22))
