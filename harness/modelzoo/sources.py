"""Resolving a manifest's source to model bytes, and checking them against the pin.

A package source is found with :func:`importlib.util.find_spec` — the package's
files are read, its code is never imported (rapidocr's runtime pulls in OpenCV,
silero-vad's pulls in torch; the zoo needs neither). A generator source is a
``module:function`` in the repository returning an ``onnx.ModelProto``; a file
source is a generated artifact checked in under ``models/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import onnx

from harness.driver.registry import load_object
from harness.modelzoo.manifest import Manifest, Source


class SourceError(Exception):
    """The model bytes cannot be had, or are not the pinned ones."""


@dataclass(frozen=True)
class SourceStatus:
    available: bool
    reason: str = ""
    location: str = ""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_root(package: str) -> Path | None:
    """The folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def package_file(source: Source, relative: str) -> Path:
    root = package_root(source.package)
    if root is None:
        raise SourceError(f"package {source.package!r} is not installed; {source.install}")
    return root / relative


def status(manifest: Manifest, models_dir: Path) -> SourceStatus:
    """Whether the source is here; the reason (with the install hint) when not."""
    source = manifest.source
    if source.package:
        root = package_root(source.package)
        if root is None:
            return SourceStatus(False, f"package {source.package!r} is not installed; "
                                       f"{source.install}")
        path = root / source.path
        if not path.is_file():
            return SourceStatus(False, f"{source.path} is not in the installed "
                                       f"{source.package!r} package; {source.install}")
        return SourceStatus(True, location=str(path))
    if source.file:
        path = models_dir / source.file
        if not path.is_file():
            hint = f"; regenerate with {source.regenerate}" if source.regenerate else ""
            return SourceStatus(False, f"generated artifact {source.file} is missing{hint}")
        return SourceStatus(True, location=str(path))
    module = source.generator.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return SourceStatus(False, f"generator module {module!r} is not importable")
    return SourceStatus(True, location=source.generator)


def raw_bytes(manifest: Manifest, models_dir: Path) -> bytes:
    """The model bytes as the source gives them (not yet checked against the pin)."""
    source = manifest.source
    state = status(manifest, models_dir)
    if not state.available:
        raise SourceError(state.reason)
    if source.generator:
        try:
            model = load_object(source.generator)()
        except Exception as exc:
            raise SourceError(f"generator {source.generator} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(model, onnx.ModelProto):
            raise SourceError(f"generator {source.generator} returned "
                              f"{type(model).__name__}, not an onnx.ModelProto")
        return model.SerializeToString()
    try:
        return Path(state.location).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {state.location}: {exc}") from exc


def verified_bytes(manifest: Manifest, models_dir: Path) -> bytes:
    """The model bytes, refused unless their sha256 is the manifest's."""
    data = raw_bytes(manifest, models_dir)
    digest = sha256_hex(data)
    if digest != manifest.sha256:
        raise SourceError(
            f"{manifest.name}: sha256 of the model bytes is {digest}, the manifest pins "
            f"{manifest.sha256} ({manifest.source.describe()} changed; refusing to run it)")
    return data
