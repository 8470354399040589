"""The target driver API: what a framework, chip or sensor driver implements.

A driver is a :class:`Target`. It states who it is (:class:`TargetIdentity`),
whether it can run on this machine (:class:`Availability`) and what it supports
(:class:`Capabilities`). ``compile`` turns ONNX model bytes into an
:class:`Executable`; ``Executable.run`` maps named inputs to named outputs.

Targets reach the harness through the ``shipei.targets`` entry-point group (see
:mod:`harness.driver.registry`); the harness never imports a driver by name.

Value types accepted by ``run`` and returned from it: ``numpy.ndarray`` for
tensors, ``list`` of arrays for ONNX sequences, ``None`` for an empty optional.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

TargetKind = Literal["framework", "chip", "sensor"]
TARGET_KINDS: tuple[str, ...] = ("framework", "chip", "sensor")


#: who refused a model or a case (a record's ``refused_by``): the vendor runtime itself,
#: its model converter, Shipei's driver (a limit of the driver, not of the runtime) or
#: the harness
REFUSERS: tuple[str, ...] = ("runtime", "converter", "driver", "harness")
_REFUSED_BY = re.compile(r"\[refused by: (" + "|".join(REFUSERS) + r")\]")


class TargetError(Exception):
    """A target refused or failed a request; the case is recorded as ``error``.

    ``refused_by`` (one of :data:`REFUSERS`) names who refused, when the driver knows:
    the message then starts with ``[refused by: WHO]``, so it survives the trip from
    the worker as text and :func:`refused_by_of` reads it back.
    """

    refused_by: str = ""

    def __init__(self, *args: object, refused_by: str = "") -> None:
        if refused_by and refused_by not in REFUSERS:
            raise ValueError(f"refused_by must be one of {', '.join(REFUSERS)}, "
                             f"not {refused_by!r}")
        super().__init__(*args)
        if refused_by:
            self.refused_by = refused_by

    def __str__(self) -> str:
        text = super().__str__()
        return f"[refused by: {self.refused_by}] {text}" if self.refused_by else text


def refused_by_of(message: str) -> str:
    """Who a recorded message says refused (one of :data:`REFUSERS`), or ``""``."""
    found = _REFUSED_BY.search(message or "")
    return found.group(1) if found else ""


class UnsupportedModelError(TargetError):
    """The target knows it cannot run this model (an op, dtype or opset it lacks)."""


class CapabilityExceeded(UnsupportedModelError):
    """A case goes past a limit the target declared (an INFER payload over the device's
    ``max_payload``): nothing was sent, and the case is recorded as ``skip`` with the
    reason, like any declared capability gap."""


class InputMismatchError(TargetError):
    """Inputs do not match the compiled model: unknown name, wrong dtype or shape."""


class InfraError(Exception):
    """Not the target's fault: the harness could not provide a working worker, or a
    target's infrastructure (a serial link, a network bench) failed. A driver raises a
    subclass of it for such failures; the case is recorded as ``infra_error``."""


@dataclass(frozen=True)
class InputSpec:
    """A compiled model's input as a driver knows it: ONNX element type name
    (``float``, ``int64``, ``bfloat16``, ... or ``None`` when not a tensor/unknown) and
    shape (ints for fixed dimensions, anything else for a free one)."""

    name: str
    elem_type: str | None
    shape: Sequence[Any] | None = None
    optional: bool = False


def check_feeds(inputs: Mapping[str, InputSpec], feeds: Mapping[str, Any],
                dtype_name: Any = None, require_all: bool = False) -> dict[str, Any]:
    """Validate named feeds against a compiled model's inputs; raise
    :class:`InputMismatchError` for an unknown name, a missing input (``require_all``), a
    wrong element type, rank or fixed dimension. ``None`` feeds (empty optionals) are
    dropped. ``dtype_name(value) -> str | None`` maps a value to the element type name the
    driver's ``InputSpec`` uses (default: numpy's dtype name); None skips the value."""
    unknown = sorted(set(feeds) - set(inputs))
    if unknown:
        raise InputMismatchError(
            f"unknown input name(s) {unknown}; the model takes {sorted(inputs)}")
    if require_all:
        missing = sorted(n for n, spec in inputs.items()
                         if not spec.optional and feeds.get(n) is None)
        if missing:
            raise InputMismatchError(f"missing input(s) {missing}; the model takes every "
                                     f"input: {sorted(inputs)}")
    present = {name: value for name, value in feeds.items() if value is not None}
    for name, value in present.items():
        spec = inputs[name]
        shape = getattr(value, "shape", None)
        if shape is None or spec.elem_type is None:
            continue  # a sequence, a map or an input whose type the driver does not know
        got = dtype_name(value) if dtype_name else str(getattr(value, "dtype", ""))
        if got is None:
            continue  # a value the driver passes on unchecked
        if got != spec.elem_type:
            raise InputMismatchError(
                f"input {name!r}: dtype {got}, model expects {spec.elem_type}")
        if spec.shape is None:
            continue
        want = list(spec.shape)
        if len(want) != len(shape):
            raise InputMismatchError(f"input {name!r}: rank {len(shape)} (shape "
                                     f"{list(shape)}), model expects shape {want}")
        for got_dim, want_dim in zip(shape, want, strict=True):
            if isinstance(want_dim, int) and want_dim >= 0 and got_dim != want_dim:
                raise InputMismatchError(
                    f"input {name!r}: shape {list(shape)}, model expects {want}")
    return present


@dataclass(frozen=True)
class TargetIdentity:
    """Who a target is. Every field ends up in run records and certificates."""

    name: str
    kind: TargetKind
    vendor: str
    driver_version: str
    runtime: str
    runtime_version: str
    device: str = "cpu"
    configuration: str = "default"
    driver_distribution: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


#: the fields that say who a target is: equal between runs merged or certified together
IDENTITY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TargetIdentity))


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class Capabilities:
    """What a target declares it supports; cases outside it are skipped with a reason."""

    opset_min: int = 1
    opset_max: int = 10_000
    dtypes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu",)
    precision: str = "fp32"
    thread_safe: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dtypes"] = list(self.dtypes)
        data["devices"] = list(self.devices)
        data["extra"] = dict(self.extra)
        return data


class Executable(abc.ABC):
    """A model compiled for a target."""

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run once on named inputs and return every graph output by name."""

    def prepare(self, inputs: Mapping[str, Any]) -> Any:
        """Validate and convert one set of named inputs ahead of time, for :meth:`run_prepared`.

        Called outside any timed region, once per input set. A driver may do here
        everything ``run`` does before the runtime call: check names, dtypes and
        shapes (raising :class:`InputMismatchError` as ``run`` would), convert or
        copy into the runtime's own tensors, pin or upload buffers. The result is
        opaque to the harness and may be passed to ``run_prepared`` many times.
        The default returns ``dict(inputs)``.
        """
        return dict(inputs)

    def run_prepared(self, prepared: Any) -> dict[str, Any]:
        """Run once on what :meth:`prepare` returned: the cheapest correct call.

        This is the call performance timing measures, so it should do no more
        than an application's own inference call (no re-validation). Its outputs
        must be equivalent to ``run`` on the same inputs (the harness checks that
        once, outside the timed region) and must stay valid after the next call.
        The default calls ``run(prepared)``.
        """
        return self.run(prepared)

    def placement(self) -> dict[str, Any]:
        """Where the work actually ran.

        A target that hands part of a graph to another device (an execution
        provider falling back to the CPU) must say so here, e.g.
        ``{"fallback": True, "fallback_nodes": 3, "devices": {"CPU": 3, "CUDA": 10}}``.
        """
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the executable holds."""


class Target(abc.ABC):
    """A target driver. Construction must be cheap and must not fail when the
    runtime is missing: report that through :meth:`availability` instead."""

    #: This driver's expectations file (cases known to fail), if any: a ``Path`` or a
    #: ``str``. For a configuration other than ``default`` the harness first looks for
    #: ``<stem>.<configuration>.toml`` beside it (see :meth:`expectations_path`).
    expectations_file: Path | str | None = None

    @property
    @abc.abstractmethod
    def identity(self) -> TargetIdentity: ...

    @abc.abstractmethod
    def availability(self) -> Availability: ...

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def compile(self, model: bytes) -> Executable:
        """Compile serialized ONNX model bytes into an executable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the target holds."""

    def expectations_path(self) -> Path | None:
        """The expectations file the harness uses for this target: for configuration
        ``c`` (not ``default``), ``<stem>.<c>.toml`` beside :attr:`expectations_file` when
        that file exists, else :attr:`expectations_file` itself."""
        if self.expectations_file is None:
            return None
        path = Path(self.expectations_file)
        configuration = getattr(self.identity, "configuration", "default")
        if configuration != "default":
            specific = path.with_name(f"{path.stem.split('.')[0]}.{configuration}.toml")
            if specific.is_file():
                return specific
        return path

    def describe(self) -> dict[str, Any]:
        """Identity, availability and capabilities as one JSON-ready dict."""
        avail = self.availability()
        data: dict[str, Any] = self.identity.to_dict()
        data["available"] = avail.available
        data["reason"] = avail.reason
        data["capabilities"] = self.capabilities().to_dict() if avail.available else None
        return data
