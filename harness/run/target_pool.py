"""The targets of a pytest session: built once per request label, with their
availability, capabilities, worker hosts and expectations."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from harness.driver.registry import Registry, RegistryError, TargetRequest, discover
from harness.driver.target import Availability, Capabilities, InfraError, Target
from harness.environments.target_envs import worker_launch
from harness.isolation.host import Host, InlineHost, ProcessHost
from harness.verdicts.expectations import Expectations


class TargetPool:
    """Targets by request label. ``isolation`` is ``process`` (a worker subprocess per
    target, the default) or ``inline``; ``explicit_expectations`` replace every target's
    own file when given; ``memory_limit`` is the ceiling (bytes) each worker puts on its
    memory (:mod:`harness.isolation.memory_limit`), None for none."""

    def __init__(self, labels: list[str], isolation: str = "process",
                 explicit_expectations: list[Path] | None = None,
                 memory_limit: int | None = None) -> None:
        self.requests = [TargetRequest.parse(label) for label in dict.fromkeys(labels)]
        self.isolation = isolation
        self.memory_limit = memory_limit
        self.explicit_expectations = list(explicit_expectations or [])
        self._registry: Registry | None = None
        self._targets: dict[str, Target] = {}
        self._caps: dict[str, Capabilities] = {}
        self._availability: dict[str, Availability] = {}
        self._hosts: dict[str, Host] = {}
        self._expectations: dict[str, Expectations] = {}

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = discover()
        return self._registry

    def target(self, request: TargetRequest) -> Target:
        """Build (once) the target a request names; :class:`RegistryError` if it cannot."""
        if request.label not in self._targets:
            try:
                self._targets[request.label] = build_target(self.registry, request)
            except TypeError as exc:
                raise RegistryError(f"bad options for target {request.label!r}: {exc}") from None
        return self._targets[request.label]

    def availability(self, request: TargetRequest) -> Availability:
        if request.label not in self._availability:
            self._availability[request.label] = self.target(request).availability()
        return self._availability[request.label]

    def capabilities(self, request: TargetRequest) -> Capabilities:
        if request.label not in self._caps:
            self._caps[request.label] = self.target(request).capabilities()
        return self._caps[request.label]

    def host(self, request: TargetRequest) -> Host:
        if request.label not in self._hosts:
            target = self.target(request)
            inline = self.isolation == "inline" and _place_host(target) is None
            self._hosts[request.label] = (InlineHost(target) if inline
                                          else self.fresh_process_host(request))
        return self._hosts[request.label]

    def fresh_process_host(self, request: TargetRequest) -> ProcessHost:
        """A new worker host for ``request``, launched as the shared one is (the target's
        own environment, or a labgrid place's SSH host; the memory ceiling), for a check
        that must kill or close its own."""
        target = self.target(request)
        launcher, env = worker_launch(target)
        options = request.options
        on_host = _place_host(target)
        if on_host is not None:  # on a labgrid place's SSH host (harness.lab.host_place)
            launcher, env, options = on_host.launcher(), {}, on_host.target_options
        return ProcessHost(self.registry.spec(request.name), request.configuration,
                           options, launcher=launcher, env=env,
                           memory_limit=self.memory_limit)

    def worker_restarts(self, label: str) -> int:
        host = self._hosts.get(label)
        return host.restarts if host else 0

    def expectations_paths(self, request: TargetRequest) -> list[Path]:
        """The files a target is judged against: ``--expectations`` when given, else the
        driver's own (:meth:`harness.driver.target.Target.expectations_path`) when it exists."""
        if self.explicit_expectations:
            return self.explicit_expectations
        own = self.target(request).expectations_path()
        return [own] if own is not None and own.exists() else []

    def expectations(self, request: TargetRequest) -> Expectations:
        """The target's expectations; :class:`~harness.verdicts.expectations.ExpectationsError`
        when a file is missing or malformed."""
        if request.label not in self._expectations:
            self._expectations[request.label] = Expectations.load(
                self.expectations_paths(request))
        return self._expectations[request.label]

    def close(self) -> None:
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()


def build_target(registry: Registry, request: TargetRequest) -> Target:
    """The target ``request`` names. With ``place=`` a driver does not take itself (a
    framework target), it is the target on that labgrid place's SSH host
    (:mod:`harness.lab.host_place`), its worker launched there over ssh."""
    if "place" in request.options:
        from harness.lab.host_place import build_on_host, on_host_request

        spec = registry.spec(request.name)
        if on_host_request(spec, request):
            return build_on_host(spec, request)
    return registry.build(request)


def _place_host(target: Target) -> Any:
    """The labgrid place's SSH host ``target`` runs on, or None (most targets: here)."""
    module = sys.modules.get("harness.lab.host_place")  # not imported: no such target
    return module.host_of(target) if module is not None else None


def set_up(host: Host) -> float:
    """A target's set-up before its first case, in seconds: its worker started (one
    launched ahead is waited for). An emulator's start-up is the target's set-up, never
    its first case's time or timeout. A worker that will not start is left to the first
    case to meet and record (as ``infra_error``)."""
    started = time.perf_counter()
    ready = getattr(host, "ready", None)
    if ready is not None:
        with contextlib.suppress(InfraError):
            ready()
    return round(time.perf_counter() - started, 3)
