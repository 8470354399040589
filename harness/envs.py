"""Target environments: where a target's worker runs when its SDK cannot share the
harness's interpreter.

A vendor SDK pins versions (numpy 1.x, an old onnx, its own torch) that cannot live
beside the harness. Such a target names an *environment*: a spec (a TOML file) says
which interpreter to use and which packages to install, with exact pins and install
options (``--no-deps``). ``shipei env create NAME`` builds it under the Shipei cache
directory (``<cache>/envs/NAME``), like tox builds its environments, and records the
exact versions installed (read with ``importlib.metadata`` inside the environment).

Two kinds:

- ``venv``: a virtual environment made with a host interpreter (``python = "3.11"``).
- ``rootfs``: a foreign-architecture Debian root filesystem run under qemu-user; see
  :mod:`harness.rootfs`.

Specs are found through the ``shipei.environments`` entry-point group: a provider
returns the paths of its spec files (the built-in drivers' are ``targets/envs/*.toml``).
The core never imports a driver; it only reads the files a provider names.

What a worker needs to start inside an environment is :func:`launch`; what a run
record or certificate says about it is :func:`identity`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.cache import cache_dir

ENTRY_POINT_GROUP = "shipei.environments"
SPECS_ENV = "SHIPEI_ENV_SPECS"  # extra spec files or folders, os.pathsep-separated
MANIFEST = "env.json"
ENVIRONMENT_VAR = "SHIPEI_ENVIRONMENT"  # set in a worker started inside an environment
KINDS = ("venv", "rootfs")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

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
        if not isinstance(name, str) or not _NAME.match(name):
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


# --- finding specs -------------------------------------------------------------------

def _spec_paths() -> Iterable[Path]:
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            yield from (Path(p) for p in ep.load()())
        except Exception as exc:  # a broken provider must not hide the others
            print(f"shipei: warning: environment provider {ep.name!r} failed: {exc}",
                  file=sys.stderr)
    for part in filter(None, os.environ.get(SPECS_ENV, "").split(os.pathsep)):
        path = Path(part)
        yield from (sorted(path.glob("*.toml")) if path.is_dir() else [path])


def known_specs() -> dict[str, EnvSpec]:
    """Every declared environment by name (the first declaration of a name wins)."""
    specs: dict[str, EnvSpec] = {}
    for path in _spec_paths():
        spec = EnvSpec.from_file(path)
        specs.setdefault(spec.name, spec)
    return specs


def find_spec(name: str) -> EnvSpec:
    specs = known_specs()
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise EnvError(f"no environment spec named {name!r}; known: {known}")
    return specs[name]


# --- where environments live ---------------------------------------------------------

def env_root(name: str) -> Path:
    if not _NAME.match(name):
        raise EnvError(f"{name!r} is not an environment name (lower-case letters, digits, "
                       "'-', '_', '.')")
    return cache_dir("envs") / name


def wheel_cache() -> Path:
    """pip's download cache for environments: kept with Shipei's cache, never the repo."""
    return cache_dir("pip")


def read_manifest(name: str) -> dict[str, Any] | None:
    """What ``create`` recorded, or None when the environment is absent or unfinished."""
    path = env_root(name) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(name: str, spec: EnvSpec | None = None) -> tuple[bool, str]:
    """(ready, reason): whether the environment exists, is complete and matches its spec."""
    manifest = read_manifest(name)
    if manifest is None:
        return False, f"environment {name!r} is not created; run: shipei env create {name}"
    interpreter = Path(manifest.get("interpreter_host_path", ""))
    if not interpreter.exists():
        return False, (f"environment {name!r} lost its interpreter {interpreter}; "
                       f"run: shipei env create --force {name}")
    if spec is not None and manifest.get("spec_sha256") != spec.sha256:
        return False, (f"environment {name!r} was built from another version of its spec; "
                       f"run: shipei env create --force {name}")
    return True, ""


def identity(name: str) -> dict[str, Any]:
    """The environment as a run record or certificate states it: interpreter,
    architecture, emulation and every installed distribution with its version."""
    manifest = read_manifest(name)
    if manifest is None:
        return {"name": name, "created": False}
    keys = ("name", "kind", "interpreter", "python", "machine", "emulator", "packages",
            "spec_sha256", "created_at")
    return {"created": True, **{k: manifest.get(k) for k in keys}}


def package_version(name: str, distribution: str) -> str | None:
    """A distribution's version as installed in environment ``name`` (from its record)."""
    manifest = read_manifest(name) or {}
    packages = manifest.get("packages") or {}
    wanted = _normalise(distribution)
    return next((v for k, v in packages.items() if _normalise(k) == wanted), None)


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


# --- starting a worker inside an environment ------------------------------------------

@dataclass(frozen=True)
class Launch:
    """How to start a Python worker in an environment: ``argv`` is the interpreter (with
    any command prefix), to be followed by the interpreter's own arguments; ``env`` holds
    the variables to add to the worker's environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str]


def launch(name: str) -> Launch:
    """The command prefix and variables that run Python inside environment ``name``."""
    manifest = read_manifest(name)
    if manifest is None:
        raise EnvError(f"environment {name!r} is not created; run: shipei env create {name}")
    if manifest.get("kind") == "rootfs":
        from harness.rootfs import rootfs_launch

        return rootfs_launch(env_root(name), manifest)
    variables = {k: _expand(v, manifest) for k, v in (manifest.get("worker_env") or {}).items()}
    variables["PYTHONPATH"] = str(harness_path_dir())
    variables["PYTHONNOUSERSITE"] = "1"
    variables[ENVIRONMENT_VAR] = name
    variables.setdefault("PIP_NO_INDEX", "1")  # nothing may install packages during a run
    return Launch((manifest["interpreter"],), variables)


def _expand(value: str, manifest: Mapping[str, Any]) -> str:
    return (value.replace("{site}", manifest.get("site_packages", ""))
            .replace("{env}", str(env_root(manifest["name"])))
            .replace("{path}", os.environ.get("PATH", os.defpath)))


def harness_path_dir() -> Path:
    """A folder holding only links to this harness's ``harness`` and ``targets`` packages,
    for a foreign interpreter's ``PYTHONPATH``: adding the harness's own site-packages
    would put its numpy in front of the environment's."""
    packages = {name: _package_dir(name) for name in ("harness", "targets")}
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


# --- building --------------------------------------------------------------------------

_FREEZE = ("import importlib.metadata as m, json, platform, sys, sysconfig; "
           "print(json.dumps({'python': platform.python_version(), "
           "'machine': platform.machine(), 'executable': sys.executable, "
           "'site_packages': sysconfig.get_paths()['purelib'], "
           "'packages': {d.metadata['Name']: d.version for d in m.distributions()}}))")


def create(spec: EnvSpec, force: bool = False, progress: Progress = print) -> dict[str, Any]:
    """Build the environment a spec declares and record what got installed.

    An environment already built from the same spec is kept (``force`` rebuilds it).
    A failed step removes the half-built environment and raises :class:`EnvError`
    naming the package that failed.
    """
    ready, _ = status(spec.name, spec)
    if ready and not force:
        progress(f"environment {spec.name!r} is up to date ({env_root(spec.name)})")
        return read_manifest(spec.name) or {}
    root = env_root(spec.name)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.monotonic()
    try:
        if spec.kind == "rootfs":
            from harness.rootfs import build_rootfs

            manifest = build_rootfs(spec, root, progress)
        else:
            manifest = _build_venv(spec, root, progress)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    manifest.update(name=spec.name, kind=spec.kind, spec_source=spec.source,
                    spec_sha256=spec.sha256, worker_env=dict(spec.worker_env),
                    created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    build_seconds=round(time.monotonic() - started, 1))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    progress(f"environment {spec.name!r} ready: {len(manifest.get('packages', {}))} "
             f"distributions, {manifest['build_seconds']:g} s ({root})")
    return manifest


def remove(name: str) -> bool:
    root = env_root(name)
    if not root.exists():
        return False
    shutil.rmtree(root)
    return True


def listing() -> list[dict[str, Any]]:
    """Every declared or built environment with its state."""
    specs = known_specs()
    built = {p.name for p in cache_dir("envs").iterdir() if p.is_dir() and _NAME.match(p.name)}
    rows = []
    for name in sorted(set(specs) | built):
        spec = specs.get(name)
        ready, reason = status(name, spec)
        manifest = read_manifest(name) or {}
        rows.append({"name": name, "kind": spec.kind if spec else manifest.get("kind", "?"),
                     "summary": spec.summary if spec else "(no spec declares it)",
                     "ready": ready, "reason": reason, "path": str(env_root(name)),
                     "python": manifest.get("python"), "machine": manifest.get("machine"),
                     "packages": len(manifest.get("packages") or {})})
    return rows


def find_interpreter(python: str) -> str:
    """A host interpreter from a version (``3.11``) or a path."""
    if os.sep in python:
        if not Path(python).exists():
            raise EnvError(f"interpreter {python} does not exist")
        return python
    found = shutil.which(f"python{python}")
    if found is None:
        raise EnvError(f"no python{python} on PATH; install it or give the interpreter's path")
    # a version manager's shim only dispatches: record the interpreter it runs
    real = subprocess.run([found, "-c", "import sys; print(sys.executable)"],
                          capture_output=True, text=True, check=False)
    return real.stdout.strip() if real.returncode == 0 and real.stdout.strip() else found


def _build_venv(spec: EnvSpec, root: Path, progress: Progress) -> dict[str, Any]:
    base = find_interpreter(spec.python)
    venv = root / "venv"
    total = len(spec.steps) + 2
    progress(f"[1/{total}] creating a virtual environment with {base}")
    _check(subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True),
           "creating the virtual environment", ())
    python = str(venv / "bin" / "python")
    for number, step in enumerate(spec.steps, start=2):
        shown = " ".join([*step.options, *step.packages])
        progress(f"[{number}/{total}] pip install {shown}")
        pip_install(python, step, progress)
    progress(f"[{total}/{total}] recording installed versions")
    facts = json.loads(_check(subprocess.run([python, "-c", _FREEZE], capture_output=True,
                                             text=True), "reading installed versions", ()))
    return {"interpreter": python, "interpreter_host_path": python,
            "base_interpreter": base, "python": facts["python"], "machine": facts["machine"],
            "site_packages": facts["site_packages"], "emulator": None,
            "packages": dict(sorted(facts["packages"].items(), key=lambda i: i[0].lower()))}


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
    _check(subprocess.CompletedProcess(command, returncode, "\n".join(lines), ""),
           "pip install", step.packages)


_FAILED_REQUIREMENT = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement|"
    r"Failed to build|Could not build wheels for|"
    r"Cannot install|conflict is caused by:\s*The user requested)\s+([A-Za-z0-9_.\-]+(?:\S*)?)")


def _check(result: subprocess.CompletedProcess, what: str, packages: Iterable[str]) -> str:
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


def worker_launch(target: Any) -> tuple[list[str] | None, dict[str, str]]:
    """(launcher, env) for :class:`harness.worker.ProcessHost`: the environment a target
    names in its ``environment`` attribute, or (None, {}) for the harness's own."""
    name = getattr(target, "environment", None)
    if not name:
        return None, {}
    found = launch(name)
    return list(found.argv), dict(found.env)
