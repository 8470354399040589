"""The pinned wheels the zoo's package-sourced models come from (``models/wheels.toml``),
and installing the ones no extra can carry without a heavy dependency they do not need."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.modelzoo.manifest import ManifestError

WHEELS_FILE = "wheels.toml"


@dataclass(frozen=True)
class ModelWheel:
    distribution: str
    version: str
    modules: tuple[str, ...]
    license: str
    no_deps: bool
    why: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def installed_version(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None


def load_wheels(models_dir: Path) -> list[ModelWheel]:
    """The pins in ``<models_dir>/wheels.toml``; a malformed file is a ManifestError."""
    path = models_dir / WHEELS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: {exc}") from None
    if data.get("schema_version") != 1:
        raise ManifestError(f"{path}: schema_version must be 1")
    wheels = []
    for i, item in enumerate(data.get("wheels", [])):
        try:
            wheels.append(ModelWheel(
                distribution=str(item["distribution"]), version=str(item["version"]),
                modules=tuple(str(m) for m in item["modules"]), license=str(item["license"]),
                no_deps=bool(item["no_deps"]), why=str(item.get("why", ""))))
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"{path}: wheels[{i}] lacks {exc}") from None
        if wheels[-1].no_deps and not wheels[-1].why:
            raise ManifestError(f"{path}: {wheels[-1].distribution} is no_deps without a why")
    return wheels


def wheel_of_module(wheels: list[ModelWheel], module: str) -> ModelWheel | None:
    return next((w for w in wheels if module in w.modules), None)


def missing(wheels: list[ModelWheel], only_no_deps: bool = True) -> list[ModelWheel]:
    """The wheels not installed at their pinned version (by default the no_deps ones)."""
    return [w for w in wheels if (w.no_deps or not only_no_deps)
            and w.installed_version() != w.version]


def pip_commands(wheels: list[ModelWheel]) -> list[list[str]]:
    """The pip invocations that install ``wheels`` into this interpreter, as pinned."""
    plain = [w.requirement for w in wheels if not w.no_deps]
    bare = [w.requirement for w in wheels if w.no_deps]
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    return ([[*pip, *plain]] if plain else []) + ([[*pip, "--no-deps", *bare]] if bare else [])


def install(wheels: list[ModelWheel]) -> int:
    """Run :func:`pip_commands`; pip's exit status (0 when there was nothing to do)."""
    for command in pip_commands(wheels):
        status = subprocess.run(command, check=False).returncode
        if status:
            return status
    return 0
