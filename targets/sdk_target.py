"""What the drivers of vendor SDKs that live in their own environment share.

Such a driver is built twice: in the harness's process, where the SDK is not
importable (identity, availability and capabilities come from the environment's
record), and in its worker, which :class:`harness.run.target_pool.TargetPool` starts under
the environment's interpreter (``Target.environment`` names it). ``compile`` and
``run`` only ever execute in the worker.

NPU toolchains compile for static input shapes and calibrate quantization on sample
data, neither of which ONNX bytes alone provide. :class:`DeferredExecutable` therefore
builds on the first ``run``, from the shapes (and, for quantized configurations, the
values) of that run's inputs, rebuilds when the shapes change, and says so in
:meth:`placement`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from harness.driver.target import (
    Availability,
    Capabilities,
    Executable,
    InfraError,
    InputMismatchError,
    InputSpec,
    Target,
    TargetError,
    TargetIdentity,
    UnsupportedModelError,
    check_feeds,
)
from harness.environments import target_envs as envs
from harness.isolation.tensors import BY_ONNX_CODE, element_type
from targets.common import EXPECTATIONS_DIR, driver_version


def in_environment(name: str) -> bool:
    """Whether this process is the worker started inside environment ``name``."""
    if os.environ.get(envs.ENVIRONMENT_VAR) == name:
        return True
    return os.path.realpath(sys.prefix) == os.path.realpath(envs.env_root(name) / "venv")


class SdkTarget(Target):
    """A target whose runtime is a vendor SDK in a Shipei environment.

    Subclasses set the class attributes and implement :meth:`probe` (import the SDK,
    return its version) and :meth:`build` (model bytes -> executable, in the worker).
    """

    name: str
    environment: str
    vendor: str
    runtime: str
    distribution: str  # the SDK's distribution name, for its version
    kind: str = "framework"
    device: str = "cpu"
    dtypes: tuple[str, ...] = ("float32",)
    opset_max: int = 21
    #: the SDK's API exchanges plain tensors only: a graph with sequence or optional
    #: inputs/outputs is refused before it is converted (onnxruntime's aarch64 build is not)
    tensors_only: bool = True
    #: the SDK converts ONNX-domain operators only: others are refused before conversion
    #: (:func:`require_onnx_domains`); onnxruntime, which runs contrib ops, is not
    onnx_domains_only: bool = True
    #: what computes the numbers, in words a certificate can carry (a simulator, an
    #: emulator or the runtime on this host): ``capabilities().extra["computed_by"]``
    computed_by: str = ""

    def __init__(self, configuration: str = "default") -> None:
        self.configuration = configuration
        self.expectations_file = EXPECTATIONS_DIR / f"{self.name}.toml"

    # -- who and where --------------------------------------------------------------
    @property
    def identity(self) -> TargetIdentity:
        if in_environment(self.environment):
            try:
                version = metadata.version(self.distribution)
            except metadata.PackageNotFoundError:
                version = "not installed"
        else:
            version = envs.package_version(self.environment, self.distribution) or \
                "environment not created"
        return TargetIdentity(name=self.name, kind=self.kind,  # type: ignore[arg-type]
                              vendor=self.vendor, driver_version=driver_version(),
                              runtime=self.runtime, runtime_version=version,
                              device=self.device, configuration=self.configuration,
                              driver_distribution="shipei")

    def availability(self) -> Availability:
        if in_environment(self.environment):
            try:
                self.probe()
            except Exception as exc:  # an SDK that will not load: say exactly why
                return Availability.no(f"{self.runtime} does not load in environment "
                                       f"{self.environment!r}: {type(exc).__name__}: {exc}")
            return Availability.yes()
        try:
            spec = envs.known_specs().get(self.environment)
        except envs.EnvError as exc:
            return Availability.no(str(exc))
        ready, reason = envs.status(self.environment, spec)
        return Availability.yes() if ready else Availability.no(reason)

    def capabilities(self) -> Capabilities:
        return Capabilities(opset_min=7, opset_max=self.opset_max, dtypes=self.dtypes,
                            devices=(self.device,), precision=self.precision(),
                            extra={"environment": self.environment,
                                   **({"computed_by": self.computed_by}
                                      if self.computed_by else {}),
                                   **self.capability_extra()})

    def precision(self) -> str:
        return "fp32"

    def capability_extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """As :meth:`Target.describe`, with the runtime's version and the environment's
        packages as the environment's own interpreter reports them now (started as its
        worker is), not as ``env.json`` recorded them when it was built."""
        data = super().describe()
        environment = envs.identity(self.environment)
        if environment.get("created"):
            try:
                attested = envs.attest(self.environment)
            except envs.EnvError as exc:
                environment["packages_source"] = f"env.json: not attested ({exc})"
                data["runtime_version_source"] = f"env.json: not attested ({exc})"
            else:
                environment["packages"] = attested["packages"]
                environment["packages_source"] = "attested by the environment's interpreter"
                data["runtime_version"] = envs.find_version(
                    attested["packages"], self.distribution) or "not installed"
                data["runtime_version_source"] = "attested by the environment's interpreter"
        data["environment"] = environment
        return data

    # -- in the worker --------------------------------------------------------------
    def probe(self) -> str:
        """Import the SDK; return its version. Raises when it cannot load."""
        raise NotImplementedError

    def compile(self, model: bytes) -> Executable:
        if not in_environment(self.environment):
            raise InfraError(
                f"{self.name} must run in environment {self.environment!r}, but this worker "
                f"runs {sys.executable}; the harness started it in the wrong interpreter")
        if self.onnx_domains_only:
            require_onnx_domains(self.runtime, model)
        if self.tensors_only:
            require_tensors(self.name, model)
        return self.build(model)

    def build(self, model: bytes) -> Executable:
        raise NotImplementedError


# --- ONNX graph facts the drivers need --------------------------------------------------

@dataclass(frozen=True)
class GraphFacts:
    """Inputs (without initializers) and outputs of an ONNX model, in graph order."""

    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]
    opset: int | None
    #: graph inputs and outputs that are sequences, optionals or maps, with their kind
    non_tensors: tuple[tuple[str, str], ...] = ()


def graph_facts(model: bytes) -> GraphFacts:
    import onnx

    proto = onnx.load_from_string(model)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        known = BY_ONNX_CODE.get(tensor.elem_type) if value.type.HasField("tensor_type") \
            else None
        elem = known.name if known else None
        shape = ([d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                  for d in tensor.shape.dim] if tensor.HasField("shape") else None)
        inputs[value.name] = InputSpec(value.name, elem, shape)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    non_tensors = tuple(
        (value.name, value.type.WhichOneof("value") or "untyped")
        for value in [*proto.graph.input, *proto.graph.output]
        if value.name not in initializers and not value.type.HasField("tensor_type"))
    return GraphFacts(inputs, tuple(o.name for o in proto.graph.output), opset, non_tensors)


#: the operator domains the ONNX standard defines; a vendor converter maps only these
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview",
                          "ai.onnx.preview.training"})


def require_onnx_domains(runtime: str, model: bytes) -> None:
    """Refuse, naming them, operators outside the ONNX domains that no function of the
    model defines: a vendor converter has no mapping for them, and some (nncase) abort
    the process instead of saying so."""
    import onnx

    proto = onnx.load_from_string(model)
    local = {(f.domain, f.name) for f in proto.functions}
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in proto.graph.node
                      if n.domain not in ONNX_DOMAINS and (n.domain, n.op_type) not in local})
    if foreign:
        raise UnsupportedModelError(
            f"{runtime} converts operators of the ONNX domains only; this model uses "
            f"{', '.join(foreign)} (the converter was not called)")


def require_tensors(target: str, model: bytes) -> None:
    """Refuse a graph whose inputs or outputs are sequences, optionals or maps (the
    runtime's own refusal: its API has no such values), naming each one."""
    non_tensors = graph_facts(model).non_tensors
    if non_tensors:
        listed = ", ".join(f"{name!r} ({kind.removesuffix('_type')})"
                           for name, kind in non_tensors)
        raise UnsupportedModelError(f"{target} takes and returns tensors only; not "
                                    f"tensors: {listed}")


def element_name(value: Any) -> str:
    """An array's ONNX element type name as the wire names it (``bfloat16``, ``float8e4m3fn``
    ...), independent of the environment's onnx version."""
    return element_type(value).name


def with_static_shapes(model: bytes, feeds: Mapping[str, np.ndarray]) -> bytes:
    """The model with every graph input's dimensions fixed to the given feeds' shapes,
    and only the inputs that are fed: a graph input with an initializer (older IR
    versions list every weight so, as the onnx wheel's light CNNs do) is the constant
    the harness never overrides, and vendor converters take such inputs for ones to
    declare (pnnx asks a shape for each, x2paddle cannot fold a ConstantOfShape fed
    by one)."""
    import onnx

    proto = onnx.load_from_string(model)
    constants = {tensor.name for tensor in proto.graph.initializer}
    if any(value.name in constants for value in proto.graph.input):
        fed = [value for value in proto.graph.input if value.name not in constants]
        del proto.graph.input[:]
        proto.graph.input.extend(fed)
        proto.ir_version = max(proto.ir_version, 4)  # IR 4: initializers need not be inputs
    for value in proto.graph.input:
        if value.name in feeds:
            shape = value.type.tensor_type.shape
            shape.SetInParent()  # a 0-d feed declares rank 0, not an unknown rank
            del shape.dim[:]
            for size in feeds[value.name].shape:
                shape.dim.add().dim_value = int(size)
    return proto.SerializeToString()


def as_fed(value: Any) -> np.ndarray:
    """A feed as a C-contiguous array *of its own rank*: ``np.ascontiguousarray`` makes
    every 0-d array 1-d, which re-declares a scalar input as ``[1]`` (a different model:
    Trilu's ``k``, Clip's bounds and Pow's exponent must be scalars)."""
    return np.asarray(value, order="C")


def scalar_adaptation(name: str, how: str) -> str:
    """How a driver words, for :meth:`Executable.placement` ``adaptations``, that it
    fed a 0-d input some other way because its SDK cannot take one."""
    return f"0-d input {name!r} {how}"


def signature(feeds: Mapping[str, np.ndarray]) -> tuple:
    return tuple(sorted((n, tuple(v.shape), str(v.dtype)) for n, v in feeds.items()))


class DeferredExecutable(Executable):
    """Builds the runtime's model on the first run, for that run's input shapes.

    ``compile_for(feeds) -> runner`` does the vendor build; ``runner(feeds)`` returns the
    outputs as a sequence in graph-output order. A rebuild happens when the shapes
    change. :meth:`placement` reports the shapes the model was compiled for, plus what
    ``runner_placement()`` of the last build says (device op counts, CPU fallback).
    """

    def __init__(self, model: bytes, compile_for: Any, notes: Mapping[str, Any] | None = None
                 ) -> None:
        self.model = model
        self.facts = graph_facts(model)
        self._compile_for = compile_for
        self._runner: Any = None
        self._signature: tuple | None = None
        self._placement: dict[str, Any] = dict(notes or {})

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = check_feeds(self.facts.inputs, inputs, dtype_name=element_name, require_all=True)
        feeds = {name: as_fed(value) for name, value in feeds.items()}
        key = signature(feeds)
        if key != self._signature:
            self.release_runner()
            self._runner = self._compile_for(feeds)
            self._signature = key
            self._placement["static_shapes"] = {n: list(v.shape) for n, v in feeds.items()}
            self._placement["compiled_at_first_run"] = True
            self._placement.update(getattr(self._runner, "placement", dict)())
        values = self._runner(feeds)
        if len(values) != len(self.facts.outputs):
            raise TargetError(f"the runtime returned {len(values)} outputs; the graph has "
                              f"{len(self.facts.outputs)}")
        return dict(zip(self.facts.outputs, values, strict=True))

    def placement(self) -> dict[str, Any]:
        return dict(self._placement)

    def release_runner(self) -> None:
        close = getattr(self._runner, "close", None)
        if close is not None:
            close()
        self._runner = None

    def close(self) -> None:
        self.release_runner()


def ordered_inputs(facts: GraphFacts, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Feeds in the graph's input order (the order positional SDK APIs expect)."""
    missing = [n for n in facts.inputs if n not in feeds]
    if missing:
        raise InputMismatchError(f"missing input(s) {missing}")
    return [feeds[name] for name in facts.inputs]

