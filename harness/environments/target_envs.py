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
  :mod:`harness.environments.rootfs`.

Specs are found through the ``shipei.environments`` entry-point group: a provider
returns the paths of its spec files (the built-in drivers' are ``targets/envs/*.toml``).
The core never imports a driver; it only reads the files a provider names.

What a worker needs to start inside an environment is :func:`launch`; what a run
record or certificate says about it is :func:`identity`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.cache import cache_dir
from harness.environments.spec import (
    ENV_NAME,
    KINDS,
    EnvError,
    EnvSpec,
    InstallStep,
    Launch,
    Progress,
    check_result,
    harness_path_dir,
    pip_install,
    wheel_cache,
)

__all__ = ["KINDS", "EnvError", "EnvSpec", "InstallStep", "Launch", "Progress",
           "harness_path_dir", "pip_install", "wheel_cache"]

ENTRY_POINT_GROUP = "shipei.environments"
SPECS_ENV = "SHIPEI_ENV_SPECS"  # extra spec files or folders, os.pathsep-separated
MANIFEST = "env.json"
ENVIRONMENT_VAR = "SHIPEI_ENVIRONMENT"  # set in a worker started inside an environment
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
    if not ENV_NAME.match(name):
        raise EnvError(f"{name!r} is not an environment name (lower-case letters, digits, "
                       "'-', '_', '.')")
    return cache_dir("envs") / name


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
    return find_version(manifest.get("packages") or {}, distribution)


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def find_version(packages: Mapping[str, str], distribution: str) -> str | None:
    """A distribution's version in a ``{name: version}`` listing, names compared as pip
    compares them (``MNN`` = ``mnn``, ``rknn_toolkit2`` = ``rknn-toolkit2``)."""
    wanted = _normalise(distribution)
    return next((v for k, v in packages.items() if _normalise(k) == wanted), None)


#: what the environment's own interpreter lists as installed (run with the worker's
#: launch, from a neutral folder: nothing of the caller's checkout is on its path)
_ATTEST = ("import importlib.metadata as m, json, platform; "
           "print(json.dumps({'python': platform.python_version(), "
           "'machine': platform.machine(), "
           "'packages': {d.metadata['Name']: d.version for d in m.distributions()}}))")
ATTEST_TIMEOUT_S = 120.0


def attest(name: str) -> dict[str, Any]:
    """The environment's identity as its own interpreter reports it now, started exactly
    as a worker is (:func:`launch`): ``{"python", "machine", "packages"}``. Raises
    :class:`EnvError` when it cannot be asked; never falls back to ``env.json``."""
    found = launch(name)
    try:
        result = subprocess.run([*found.argv, "-c", _ATTEST], capture_output=True, text=True,
                                env={**os.environ, **found.env}, cwd=env_root(name),
                                timeout=ATTEST_TIMEOUT_S, check=False)
        data = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 \
            else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise EnvError(f"environment {name!r} could not be asked what it holds: "
                       f"{type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvError(f"environment {name!r} could not be asked what it holds: {last}")
    data["packages"] = dict(sorted(data["packages"].items(), key=lambda i: i[0].lower()))
    return data


# --- starting a worker inside an environment ------------------------------------------

def launch(name: str) -> Launch:
    """The command prefix and variables that run Python inside environment ``name``."""
    manifest = read_manifest(name)
    if manifest is None:
        raise EnvError(f"environment {name!r} is not created; run: shipei env create {name}")
    if manifest.get("kind") == "rootfs":
        from harness.environments.rootfs import rootfs_launch

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
            from harness.environments.rootfs import build_rootfs

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
    built = {p.name for p in cache_dir("envs").iterdir() if p.is_dir() and ENV_NAME.match(p.name)}
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
    check_result(subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True),
           "creating the virtual environment", ())
    python = str(venv / "bin" / "python")
    for number, step in enumerate(spec.steps, start=2):
        shown = " ".join([*step.options, *step.packages])
        progress(f"[{number}/{total}] pip install {shown}")
        pip_install(python, step, progress)
    progress(f"[{total}/{total}] recording installed versions")
    # isolated (-I) and from the environment's own folder: run with the caller's cwd on
    # sys.path, a checkout's ``shipei.egg-info`` would be listed as installed
    facts = json.loads(check_result(subprocess.run([python, "-I", "-c", _FREEZE],
                                                   capture_output=True, text=True, cwd=root),
                                    "reading installed versions", ()))
    return {"interpreter": python, "interpreter_host_path": python,
            "base_interpreter": base, "python": facts["python"], "machine": facts["machine"],
            "site_packages": facts["site_packages"], "emulator": None,
            "packages": dict(sorted(facts["packages"].items(), key=lambda i: i[0].lower()))}


def worker_launch(target: Any) -> tuple[list[str] | None, dict[str, str]]:
    """(launcher, env) for :class:`harness.isolation.host.ProcessHost`: the environment a target
    names in its ``environment`` attribute, or (None, {}) for the harness's own."""
    name = getattr(target, "environment", None)
    if not name:
        return None, {}
    found = launch(name)
    return list(found.argv), dict(found.env)
