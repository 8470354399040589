"""Finding targets: the ``shipei.targets`` entry-point group.

A driver distribution declares, in its ``pyproject.toml``::

    [project.entry-points."shipei.targets"]
    myvendor = "myvendor_shipei:provide_targets"

``provide_targets()`` returns an iterable of :class:`TargetSpec`. The built-in
drivers register exactly this way. For development, ``SHIPEI_PLUGINS`` entries
``targets=module:callable`` (or the older ``module:callable``) add providers without
installing a package, the way ``PYTEST_PLUGINS`` does for pytest
(:mod:`harness.plugin_entries`).

A target is requested by a string ``NAME[:CONFIGURATION][,key=value...]``, e.g.
``openvino-cpu:bf16`` or ``onnxruntime-cpu,intra_op_threads=1``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from harness.driver.target import Target
from harness.plugin_entries import NAME_THE_GROUP, PluginEntryError, entries_for, plugin_entries
from harness.plugin_entries import PLUGINS_ENV as PLUGINS_ENV

ENTRY_POINT_GROUP = "shipei.targets"
#: the target a run uses when none is requested: the embedded default
DEFAULT_TARGET = "onnxruntime-cpu"


class RegistryError(Exception):
    """An unknown target, a bad request string or a broken provider."""


@dataclass(frozen=True)
class TargetSpec:
    """How to build one registered target; importable by reference so a worker
    process can rebuild it."""

    name: str
    factory: str  # "module:attribute"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    configurations: tuple[str, ...] = ("default",)
    summary: str = ""
    origin: str = ""

    def build(self, configuration: str = "default", options: Mapping[str, Any] | None = None
              ) -> Target:
        if configuration not in self.configurations:
            raise RegistryError(
                f"target {self.name!r} has no configuration {configuration!r}; "
                f"known: {', '.join(self.configurations)}"
            )
        factory = load_object(self.factory)
        return factory(**dict(self.kwargs), configuration=configuration, **dict(options or {}))


@dataclass(frozen=True)
class TargetRequest:
    """A parsed ``NAME[:CONFIGURATION][,key=value...]`` string."""

    label: str
    name: str
    configuration: str
    options: Mapping[str, Any]

    @classmethod
    @functools.lru_cache(maxsize=256)  # parsed once per label: every case asks several times
    def parse(cls, text: str) -> TargetRequest:
        head, *option_parts = [p.strip() for p in text.split(",")]
        name, _, configuration = head.partition(":")
        if not name:
            raise RegistryError(f"empty target name in {text!r}")
        options: dict[str, Any] = {}
        for part in option_parts:
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise RegistryError(f"target option {part!r} in {text!r} is not key=value")
            options[key.strip()] = _coerce(value.strip())
        return cls(text.strip(), name, configuration or "default", options)


def _coerce(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def load_object(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else []:
        obj = getattr(obj, part)
    return obj


@dataclass
class Registry:
    specs: dict[str, TargetSpec] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # provider -> reason

    def add(self, spec: TargetSpec) -> None:
        if spec.name in self.specs:
            other = self.specs[spec.name]
            raise RegistryError(
                f"target {spec.name!r} registered twice: by {other.origin} and by {spec.origin}"
            )
        self.specs[spec.name] = spec

    def spec(self, name: str) -> TargetSpec:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(sorted(self.specs)) or "none"
            raise RegistryError(f"unknown target {name!r}; known targets: {known}") from None

    def build(self, request: TargetRequest | str) -> Target:
        if isinstance(request, str):
            request = TargetRequest.parse(request)
        return self.spec(request.name).build(request.configuration, request.options)

    def names(self) -> list[str]:
        return sorted(self.specs)


def _provider_sources() -> Iterable[tuple[str, Callable[[], Any], bool]]:
    """(origin, loader, named as a target provider) for each provider."""
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist else ep.value
        yield f"entry point {ep.name!r} ({origin})", ep.load, True
    for entry in entries_for("targets"):
        yield (entry.origin, lambda ref=entry.reference: load_object(ref),
               entry.group is not None)


def discover() -> Registry:
    """Load every provider. A provider that fails is listed in ``broken``, not fatal, and
    so is a ``SHIPEI_PLUGINS`` entry that cannot be read."""
    registry = Registry()
    for unreadable in plugin_entries():
        if isinstance(unreadable, PluginEntryError):
            registry.broken[unreadable.origin] = f"PluginEntryError: {unreadable}"
    for origin, load, named in _provider_sources():
        try:
            provider = load()
            if not callable(provider):
                if named:
                    raise RegistryError("a target provider is a callable returning "
                                        "TargetSpec objects")
                continue  # an entry without a group naming a suite or hook plugin object
            specs = list(provider())
            if not all(isinstance(spec, TargetSpec) for spec in specs):
                raise RegistryError("a provider must return TargetSpec objects")
        except Exception as exc:  # a vendor's broken package must not take the harness down
            advice = "" if named else f" ({NAME_THE_GROUP})"
            registry.broken[origin] = f"{type(exc).__name__}: {exc}{advice}"
            continue
        for spec in specs:
            if not spec.origin:
                spec = TargetSpec(spec.name, spec.factory, spec.kwargs, spec.configurations,
                                  spec.summary, origin)
            try:
                registry.add(spec)
            except RegistryError as exc:  # a duplicate name: the first registration stands
                registry.broken[origin] = str(exc)
    return registry
