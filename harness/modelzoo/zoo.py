"""The zoo: every manifest under ``models/manifests/``, with its bytes, inputs and golden.

The models folder is the ``models`` package of this distribution (found without
importing it) or ``$SHIPEI_MODELS_DIR``. A manifest that does not parse is kept
as a :class:`BrokenManifest` so that it is reported, never silently dropped.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from harness.modelzoo.inputs import check_generators, inputs_digest, make_data_sets
from harness.modelzoo.manifest import Manifest, ManifestError, load_manifest
from harness.modelzoo.sources import SourceStatus, status, verified_bytes

MODELS_DIR_ENV = "SHIPEI_MODELS_DIR"


def default_models_dir() -> Path:
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV])
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        raise ManifestError("the 'models' package is not installed and "
                            f"{MODELS_DIR_ENV} is not set")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class ZooEntry:
    manifest: Manifest
    models_dir: Path
    _bytes: bytes | None = field(default=None, repr=False)
    _data: list[dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    def status(self) -> SourceStatus:
        return status(self.manifest, self.models_dir)

    def model_bytes(self) -> bytes:
        """The model, checked against the manifest's sha256 (SourceError otherwise)."""
        if self._bytes is None:
            data = verified_bytes(self.manifest, self.models_dir)
            check_interface(self.manifest, onnx.load_from_string(data))
            self._bytes = data
        return self._bytes

    def data_sets(self) -> list[dict[str, np.ndarray]]:
        if self._data is None:
            self._data = make_data_sets(self.manifest)
        return self._data

    def inputs_digest(self) -> str:
        return inputs_digest(self.data_sets())


def check_interface(manifest: Manifest, model: onnx.ModelProto) -> None:
    """The manifest's inputs and outputs must be the model's (names, dtypes, ranks)."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    graph_outputs = {o.name for o in model.graph.output}
    where = manifest.path.name
    declared = {spec.name for spec in manifest.inputs}
    if declared != set(graph_inputs):
        raise ManifestError(f"{where}: inputs {sorted(declared)} are not the model's "
                            f"{sorted(graph_inputs)}")
    streamed = manifest.streaming.chunk_input if manifest.streaming else None
    for spec in manifest.inputs:
        tensor = graph_inputs[spec.name].type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        if dtype != spec.dtype:
            raise ManifestError(f"{where}: input {spec.name!r} is {dtype} in the model, "
                                f"{spec.dtype} in the manifest")
        if spec.name != streamed and len(tensor.shape.dim) != len(spec.shape):
            raise ManifestError(f"{where}: input {spec.name!r} has rank "
                                f"{len(tensor.shape.dim)} in the model, {len(spec.shape)} "
                                f"in the manifest")
    for spec in manifest.outputs:
        if spec.name not in graph_outputs:
            raise ManifestError(f"{where}: output {spec.name!r} is not one of the model's "
                                f"{sorted(graph_outputs)}")


@dataclass(frozen=True)
class BrokenManifest:
    path: Path
    error: str

    @property
    def name(self) -> str:
        return self.path.stem


class Zoo:
    def __init__(self, models_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()

    @property
    def manifests_dir(self) -> Path:
        return self.models_dir / "manifests"

    @property
    def golden_dir(self) -> Path:
        return self.models_dir / "golden"

    @functools.cached_property
    def _loaded(self) -> tuple[list[ZooEntry], list[BrokenManifest]]:
        entries, broken = [], []
        for path in sorted(self.manifests_dir.glob("*.toml")):
            try:
                manifest = load_manifest(path)
                check_generators(manifest)
            except ManifestError as exc:
                broken.append(BrokenManifest(path, str(exc)))
                continue
            entries.append(ZooEntry(manifest, self.models_dir))
        return entries, broken

    @property
    def entries(self) -> list[ZooEntry]:
        return self._loaded[0]

    @property
    def broken(self) -> list[BrokenManifest]:
        return self._loaded[1]

    def entry(self, name: str) -> ZooEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        for broken in self.broken:
            if broken.name == name:
                raise ManifestError(broken.error)
        known = ", ".join(e.name for e in self.entries) or "none"
        raise ManifestError(f"no model {name!r} in the zoo; known: {known}")
