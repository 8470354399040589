"""What an environment is, shared by :mod:`harness.environments.target_envs` (specs, venvs,
launching) and :mod:`harness.environments.rootfs` (foreign-architecture root filesystems): the
spec types, the error, how a worker is launched, and the pip and ``PYTHONPATH`` helpers both
builders use."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import cache_dir

KINDS = ("venv", "rootfs")
ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

Progress = Callable[[str], None]


class EnvError(Exception):
    """A bad spec, an environment that is not there, or an install that failed."""


@dataclass(frozen=True)
class InstallStep:
    """One ``pip install`` of pinned requirements with its own options."""

    packages: tuple[str, ...]
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvSpec:
    """A declared environment, read from a TOML file."""

    name: str
    kind: str
    python: str
    steps: tuple[InstallStep, ...]
    summary: str = ""
    worker_env: Mapping[str, str] = field(default_factory=dict)
    rootfs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    text: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @classmethod
    def from_file(cls, path: Path) -> EnvSpec:
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise EnvError(f"environment spec {path}: {exc}") from None
        return cls.from_dict(data, source=str(path), text=text)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "", text: str = "") -> EnvSpec:
        where = f"environment spec {source or '<dict>'}"
        name = data.get("name")
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise EnvError(f"{where}: 'name' must be lower-case letters, digits, '-', '_' "
                           f"or '.', not {name!r}")
        kind = data.get("kind", "venv")
        if kind not in KINDS:
            raise EnvError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
        python = data.get("python", "3.11")
        if not isinstance(python, str) or not python:
            raise EnvError(f"{where}: 'python' must be a version such as \"3.11\" or a path")
        steps = []
        for index, step in enumerate(data.get("install", [])):
            packages = step.get("packages") if isinstance(step, Mapping) else None
            options = step.get("options", []) if isinstance(step, Mapping) else None
            if (not isinstance(packages, list) or not packages
                    or not all(isinstance(p, str) and p for p in packages)):
                raise EnvError(f"{where}: install[{index}].packages must be a non-empty list "
                               "of requirement strings")
            if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
                raise EnvError(f"{where}: install[{index}].options must be a list of strings")
            unpinned = [p for p in packages if "==" not in p and not p.startswith(("/", "."))]
            if unpinned:
                raise EnvError(f"{where}: install[{index}]: pin an exact version (==) for "
                               f"{', '.join(unpinned)}")
            steps.append(InstallStep(tuple(packages), tuple(options)))
        worker_env = data.get("worker_env", {})
        if not isinstance(worker_env, Mapping) or not all(
                isinstance(v, str) for v in worker_env.values()):
            raise EnvError(f"{where}: 'worker_env' must be a table of strings")
        rootfs = data.get("rootfs", {})
        if kind == "rootfs" and not isinstance(rootfs, Mapping):
            raise EnvError(f"{where}: kind 'rootfs' needs a [rootfs] table")
        return cls(name=name, kind=kind, python=python, steps=tuple(steps),
                   summary=str(data.get("summary", "")), worker_env=dict(worker_env),
                   rootfs=dict(rootfs), source=source, text=text or json.dumps(dict(data)))


def wheel_cache() -> Path:
    """pip's download cache for environments: kept with Shipei's cache, never the repo."""
    return cache_dir("pip")


@dataclass(frozen=True)
class Launch:
    """How to start a Python worker in an environment: ``argv`` is the interpreter (with
    any command prefix), to be followed by the interpreter's own arguments; ``env`` holds
    the variables to add to the worker's environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str]


#: what a worker imports from the harness's checkout: the core, the drivers, and the suites
#: whose checks run functions inside the worker (the contract's ``Host.call``)
WORKER_PACKAGES = ("harness", "targets", "suites")


def harness_path_dir() -> Path:
    """A folder holding only links to this harness's packages (:data:`WORKER_PACKAGES`),
    for a foreign interpreter's ``PYTHONPATH``: adding the harness's own site-packages
    would put its numpy in front of the environment's."""
    packages = {name: _package_dir(name) for name in WORKER_PACKAGES}
    digest = hashlib.sha256(json.dumps({k: str(v) for k, v in packages.items()}).encode())
    folder = cache_dir("envs", ".pythonpath", digest.hexdigest()[:16])
    for name, source in packages.items():
        link = folder / name
        if source is not None and not link.exists():
            tmp = folder / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(source, target_is_directory=True)
            os.replace(tmp, link)
    return folder


def _package_dir(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def pip_install(python: str, step: InstallStep, progress: Progress,
                extra: Iterable[str] = ()) -> None:
    """Run one install step with pip, streaming its progress lines."""
    command = [python, "-m", "pip", "install", "--disable-pip-version-check",
               "--progress-bar", "off", "--cache-dir", str(wheel_cache()), *extra,
               *step.options, *step.packages]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
            progress(f"    {line.strip()}")
    returncode = process.wait()
    check_result(subprocess.CompletedProcess(command, returncode, "\n".join(lines), ""),
           "pip install", step.packages)


_FAILED_REQUIREMENT = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement|"
    r"Failed to build|Could not build wheels for|"
    r"Cannot install|conflict is caused by:\s*The user requested)\s+([A-Za-z0-9_.\-]+(?:\S*)?)")


def check_result(result: subprocess.CompletedProcess, what: str, packages: Iterable[str]) -> str:
    if result.returncode == 0:
        return result.stdout
    output = "\n".join(filter(None, [result.stdout, result.stderr]))
    found = _FAILED_REQUIREMENT.search(output)
    culprit = found.group(1) if found else ", ".join(packages)
    last = next((line.strip() for line in reversed(output.splitlines())
                 if line.strip().startswith("ERROR")), None)
    last = last or next((line.strip() for line in reversed(output.splitlines()) if line.strip()),
                        f"exit status {result.returncode}")
    subject = f"installing {culprit} failed" if culprit else f"{what} failed"
    raise EnvError(f"{subject}: {last}")
