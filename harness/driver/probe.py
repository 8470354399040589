"""Capabilities by probe: does the runtime take tensors of this element type at all?

For each element type a case needs, a tiny model (``Identity``, else a ``Cast`` to
float and back, else a ``Concat`` of the input with itself, for converters that cannot
take a graph which computes nothing) runs on the target's own worker with a few ordinary
values and is judged exactly. The verdict is one of:

- ``accepted``: the runtime compiled, ran and returned the values;
- ``refused``: it would not (its own error is kept, and becomes the skip reason, with
  who refused: the runtime, its converter or the driver, :data:`harness.driver.target.REFUSERS`);
- ``harness_gap``: the harness could not carry the type to or from the runtime (the
  case is then ``infra_error`` with blame ``harness``, never the target's);
- ``undefined``: no ONNX opset within the target's range defines either op for it.

Verdicts are cached per target identity *as the worker reports it* (runtime
version, configuration) and worker interpreter, under ``<cache>/probes``; a
timeout or an infrastructure failure is not cached, and never skips a case.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.cache import cache_dir, write_atomically
from harness.driver.target import Capabilities, InfraError, refused_by_of
from harness.isolation.host import CaseTimeout, Host, RemoteError, WorkerCrash
from harness.isolation.tensors import ELEMENT_TYPES, PROTO_NAMES, TensorCodecError, numpy_dtype
from harness.verdicts.judge import compare_outputs

if TYPE_CHECKING:  # onnx is imported where a probe model is built (it is slow to import,
    import onnx  # and the test process launches its workers before it needs onnx)

PROBE_VERSION = 3  # 2: Concat after Identity and Cast; 3: refused_by
ACCEPTED, REFUSED, HARNESS_GAP, UNDEFINED = "accepted", "refused", "harness_gap", "undefined"
#: the element types every target is assumed to take (probing them would be noise)
ASSUMED = frozenset({"float32"})


@dataclass(frozen=True)
class ProbeVerdict:
    verdict: str
    message: str = ""
    via: str = ""  # the probe model that decided it: "Identity" or "Cast"
    #: who refused (``refused`` only): what the driver said, else the runtime
    refused_by: str = ""


def probe_values(name: str) -> np.ndarray:
    """Four ordinary values of element type ``name``, exact in every format of that kind."""
    if name == "string":
        return np.array(["a", "bc", "", "长"], dtype=object)
    if name == "bool":
        return np.array([True, False, True, False])
    if name.startswith("complex"):
        return np.array([1 + 1j, 0, -2.5j, 4], dtype=name)
    if name.startswith(("int", "uint")):
        values = [0, 1, 2, 3] if name.startswith("uint") else [0, 1, -1, -2]
        return np.array(values, dtype=np.int64).astype(numpy_dtype(name))
    return np.array([1.0, 2.0, 0.5, 4.0], dtype=np.float32).astype(numpy_dtype(name))


def _allows(op: str, opset: int, type_str: str) -> bool:
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(op, opset)
    except onnx.defs.SchemaError:
        return False
    return all(type_str in c.allowed_type_strs for c in schema.type_constraints
               if c.type_param_str in ("T", "V", "T1"))


#: the probe models in the order they are tried
PROBE_OPS = ("Identity", "Cast", "Concat")


def _probe_nodes(op: str, onnx_type: int) -> list[onnx.NodeProto]:
    import onnx
    from onnx import helper

    if op == "Identity":
        return [helper.make_node("Identity", ["x"], ["y"])]
    if op == "Cast":
        return [helper.make_node("Cast", ["x"], ["f"], to=onnx.TensorProto.FLOAT),
                helper.make_node("Cast", ["f"], ["y"], to=onnx_type)]
    return [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)]


def expected_output(op: str, values: np.ndarray) -> np.ndarray:
    """What probe model ``op`` gives for ``values``."""
    return np.concatenate([values, values]) if op == "Concat" else values


def probe_models(name: str, caps: Capabilities) -> list[tuple[str, bytes]]:
    """(op, serialized model) pairs that take and give a tensor of ``name``, in the order
    they are tried; :func:`expected_output` gives each one's output for the values."""
    import onnx.defs
    from onnx import helper

    kind = ELEMENT_TYPES[name]
    type_str = f"tensor({PROTO_NAMES[kind.onnx].lower()})"
    opset = min(caps.opset_max, onnx.defs.onnx_opset_version())
    values = probe_values(name)
    models = []
    for op in PROBE_OPS:
        if not _allows(op, opset, type_str):
            continue
        graph = helper.make_graph(
            _probe_nodes(op, kind.onnx), f"shipei_probe_{name}",
            [helper.make_tensor_value_info("x", kind.onnx, list(values.shape))],
            [helper.make_tensor_value_info("y", kind.onnx,
                                           list(expected_output(op, values).shape))])
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        models.append((op, model.SerializeToString()))
    return models


def run_probe(host: Host, name: str, caps: Capabilities, timeout: float) -> ProbeVerdict | None:
    """The verdict for ``name`` on ``host``, or None when the probe could not tell."""
    models = probe_models(name, caps)
    if not models:
        return ProbeVerdict(UNDEFINED, f"no ONNX opset <= {caps.opset_max} defines "
                                       f"{', '.join(PROBE_OPS)} for {name}")
    values = probe_values(name)
    refusals = []
    for op, model in models:
        try:
            result = host.run_case(f"probe::{name}::{op}", model, [{"x": values}], timeout)
        except TensorCodecError as exc:
            return ProbeVerdict(HARNESS_GAP, str(exc), op)
        except RemoteError as exc:
            if exc.exc_type == "InputMismatchError":  # the probe's own input is well formed:
                return ProbeVerdict(HARNESS_GAP, f"{op}: the driver cannot take the type: "
                                                 f"{_first_line(exc.message)}", op)
            refusals.append(f"{op}: {exc.exc_type}: {_first_line(exc.message)}")
            continue
        except WorkerCrash as exc:
            if exc.external:
                return None
            refusals.append(f"{op}: {exc}")
            continue
        except (CaseTimeout, InfraError):
            return None
        verdict = compare_outputs([expected_output(op, values)], result["outputs"][0], ["y"],
                                  0.0, 0.0)
        # a runtime that takes the type but computes it wrong still accepts it: its cases
        # run and fail on their own merits
        return ProbeVerdict(ACCEPTED, "" if verdict.passed else verdict.message, op)
    said = {refused_by_of(refusal) for refusal in refusals} - {""}
    # the driver's or the converter's word when every refusal gave the same; a bare
    # error came from the runtime
    who = next(iter(said)) if len(said) == 1 else "runtime"
    message = "; ".join(refusals)
    if who not in said:  # the skip reason built from this message must name the refuser
        message = f"[refused by: {who}] {message}"
    return ProbeVerdict(REFUSED, message, models[0][0], who)


def _driver_digest(host: Host) -> str:
    """sha256 of the driver's module source, so a changed driver is probed afresh."""
    module = getattr(host, "driver_module", "")
    try:
        origin = importlib.util.find_spec(module).origin if module else None
        return hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:16] if origin else ""
    except (ImportError, ValueError, OSError):
        return ""


def _environment_identity(host: Host) -> dict[str, Any] | None:
    """The target environment a worker runs in (spec digest, build time, packages), so a
    rebuilt environment is probed afresh; None for the harness's own interpreter."""
    from harness.environments.target_envs import ENVIRONMENT_VAR, identity

    name = (getattr(host, "env", None) or {}).get(ENVIRONMENT_VAR)
    return identity(name) if name else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


class DtypeProbe:
    """Verdicts per element type for one host, computed once and cached on disk."""

    def __init__(self, host: Host, caps: Capabilities) -> None:
        self.host = host
        self.caps = caps
        self._verdicts: dict[str, ProbeVerdict] | None = None
        self._path = cache_dir("probes") / "unkeyed.json"
        self._who: dict[str, Any] = {}

    def _load(self, timeout: float) -> dict[str, ProbeVerdict]:
        if self._verdicts is None:
            who = {"identity": self.host.identity(timeout),
                   "driver_source": _driver_digest(self.host),
                   "worker": {k: v for k, v in getattr(self.host, "worker_info", {}).items()
                              if k in ("python", "executable", "machine", "numpy")},
                   "environment": _environment_identity(self.host),
                   "opset_max": self.caps.opset_max, "probe_version": PROBE_VERSION}
            digest = hashlib.sha256(json.dumps(who, sort_keys=True).encode()).hexdigest()[:20]
            self._path = cache_dir("probes") / f"{digest}.json"
            try:
                stored = json.loads(self._path.read_text())["verdicts"]
                self._verdicts = {k: ProbeVerdict(**v) for k, v in stored.items()}
            except (OSError, ValueError, KeyError, TypeError):
                self._verdicts = {}
            self._who = who
        return self._verdicts

    def verdict(self, name: str, timeout: float) -> ProbeVerdict | None:
        verdicts = self._load(timeout)
        if name not in verdicts:
            found = run_probe(self.host, name, self.caps, timeout)
            if found is None:
                return None
            verdicts[name] = found
            write_atomically(self._path, json.dumps(
                {"who": self._who, "verdicts": {k: asdict(v) for k, v in verdicts.items()}},
                indent=1, sort_keys=True, ensure_ascii=False).encode())
        return verdicts[name]


def probe_for(host: Host, caps: Capabilities) -> DtypeProbe:
    """The host's probe (one per host object)."""
    probe = getattr(host, "_shipei_dtype_probe", None)
    if probe is None:
        probe = DtypeProbe(host, caps)
        host._shipei_dtype_probe = probe  # type: ignore[attr-defined]
    return probe


def gating_verdict(host: Host, caps: Capabilities, dtypes: set[str], timeout: float
                   ) -> tuple[str, ProbeVerdict] | None:
    """The first needed element type the probe says cannot run (refused, undefined or a
    harness gap), or None when every one is accepted or could not be told."""
    probe = probe_for(host, caps)
    for name in sorted(dtypes - ASSUMED):
        if name not in ELEMENT_TYPES:
            continue
        found = probe.verdict(name, timeout)
        if found is not None and found.verdict != ACCEPTED:
            return name, found
    return None
