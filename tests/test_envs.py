"""Target environments: specs, ``shipei env create|list|show|remove``, launching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.environments import target_envs as envs
from harness.environments.rootfs import KUNPENG_CPUINFO, host_debian_mirror


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(envs.SPECS_ENV, raising=False)
    return tmp_path / "cache"


def _tiny_wheel(folder: Path) -> Path:
    """A one-module wheel built here, so the test installs nothing from a registry."""
    project = folder / "tiny"
    (project / "shipei_tiny_probe").mkdir(parents=True)
    (project / "shipei_tiny_probe" / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "shipei-tiny-probe"\nversion = "1.2.3"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(folder / "wheels"), str(project)], check=True)
    return next((folder / "wheels").glob("*.whl"))


def _spec_file(folder: Path, name: str, packages: list[str], options: list[str]) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nsummary = "test"\npython = "{sys.executable}"\n'
        f'[[install]]\npackages = {json.dumps(packages)}\noptions = {json.dumps(options)}\n'
        '[worker_env]\nTINY_SITE = "{site}"\n')
    return path


def _decoy_checkout(folder: Path) -> Path:
    """A folder like a clone of Shipei: an egg-info that Python run there with ``-c``
    would take for an installed distribution."""
    egg = folder / "clone" / "shipei.egg-info"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: shipei\nVersion: 0.1.0\n")
    return egg.parent


@pytest.mark.extended
def test_create_records_versions_and_list_show_remove(tmp_path, capsys, monkeypatch):
    wheel = _tiny_wheel(tmp_path)
    spec = _spec_file(tmp_path, "tiny", [str(wheel)], ["--no-index", "--no-deps"])
    monkeypatch.setenv(envs.SPECS_ENV, str(spec))
    monkeypatch.chdir(_decoy_checkout(tmp_path))  # `env create` run from a clone
    assert main(["env", "create", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "[1/3] creating a virtual environment" in out and "ready" in out
    described = envs.identity("tiny")
    assert described["packages"]["shipei-tiny-probe"] == "1.2.3"
    assert "shipei" not in described["packages"]  # the clone's egg-info is not installed
    assert described["machine"] and described["python"].startswith("3.")
    assert main(["env", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["env", "show", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny"
    launch = envs.launch("tiny")
    assert launch.env[envs.ENVIRONMENT_VAR] == "tiny"
    assert launch.env["TINY_SITE"].endswith("site-packages")
    # the worker's interpreter sees the environment's packages and the harness's sources
    code = ("import shipei_tiny_probe, harness.environments.target_envs; "
            "print(shipei_tiny_probe.VALUE)")
    probe = subprocess.run([*launch.argv, "-c", code], env={**launch.env, "PATH": "/usr/bin"},
                           capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "42", probe.stderr
    # the same spec again is kept, not rebuilt
    assert main(["env", "create", "tiny"]) == 0
    assert "up to date" in capsys.readouterr().out
    _attestation_overrides_env_json(tmp_path)
    assert main(["env", "remove", "tiny"]) == 0
    assert not envs.identity("tiny")["created"]


def _attestation_overrides_env_json(tmp_path: Path) -> None:
    """run.json's runtime version and package list come from the environment's own
    interpreter, started as its worker is, not from the record ``env create`` wrote."""
    from targets.sdk_target import SdkTarget

    class Tiny(SdkTarget):
        name, environment, vendor = "tiny-target", "tiny", "Shipei tests"
        runtime, distribution = "tiny", "shipei_tiny_probe"

    manifest_path = envs.env_root("tiny") / envs.MANIFEST
    kept = manifest_path.read_text()
    manifest = json.loads(kept)
    manifest["packages"] = {"shipei-tiny-probe": "9.9.9", "shipei": "0.1.0"}  # stale, wrong
    manifest_path.write_text(json.dumps(manifest))
    attested = envs.attest("tiny")
    assert attested["packages"]["shipei-tiny-probe"] == "1.2.3"
    assert "shipei" not in attested["packages"]  # run from the clone, still not listed
    described = Tiny().describe()
    assert described["runtime_version"] == "1.2.3"
    assert described["environment"]["packages"] == attested["packages"]
    assert described["environment"]["packages_source"] == \
        "attested by the environment's interpreter"
    assert described["runtime_version_source"] == "attested by the environment's interpreter"
    manifest["interpreter"] = str(tmp_path / "gone" / "python")  # cannot be asked
    manifest_path.write_text(json.dumps(manifest))
    unasked_target = Tiny().describe()
    unasked = unasked_target["environment"]
    assert unasked["packages_source"].startswith("env.json: not attested")
    # the runtime version then comes from env.json, and the record says so
    assert unasked_target["runtime_version_source"].startswith("env.json: not attested")
    manifest_path.write_text(kept)


@pytest.mark.extended
def test_failed_install_names_the_package(tmp_path, capsys):
    spec = _spec_file(tmp_path, "broken", ["no-such-package-shipei==9.9.9"], ["--no-index"])
    assert main(["env", "create", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "no-such-package-shipei" in err and "failed" in err and "Traceback" not in err
    assert envs.read_manifest("broken") is None  # nothing half-built is left as ready


@pytest.mark.parametrize("text, complaint", [
    ('name = "x"\n[[install]]\npackages = ["numpy"]\n', "pin an exact version"),
    ('name = "Bad Name"\n', "'name' must be"),
    ('name = "x"\nkind = "docker"\n', "'kind' must be one of"),
    ('name = "x"\n[[install]]\npackages = []\n', "non-empty list"),
    ('name = "x"\n[[install\n', "environment spec"),
])
def test_bad_specs_are_one_line_errors(tmp_path, capsys, text, complaint):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    assert main(["env", "create", "--spec", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err and "\n" not in err


def test_usage_errors(capsys):
    assert main(["env", "create"]) == 2
    assert main(["env", "remove", "../../etc"]) == 2
    assert main(["env", "show", "absent"]) == 2
    err = capsys.readouterr().err
    assert "NAME or --spec" in err and "not an environment name" in err and "not created" in err


def test_status_says_how_to_build_and_when_the_spec_changed(tmp_path):
    assert "shipei env create nope" in envs.status("nope")[1]
    spec = envs.EnvSpec.from_dict({"name": "nope"})
    root = envs.env_root("nope")
    root.mkdir(parents=True)
    (root / envs.MANIFEST).write_text(json.dumps({"interpreter_host_path": sys.executable,
                                                  "spec_sha256": "other"}))
    ready, reason = envs.status("nope", spec)
    assert not ready and "another version of its spec" in reason


def test_declared_specs_of_the_builtin_drivers_parse():
    from targets.envs import provide_environments

    names = {envs.EnvSpec.from_file(p).name for p in provide_environments()}
    assert {"nncase", "rknn", "mnn", "ncnn", "paddle", "aarch64"} <= names


def test_host_mirror_is_read_from_apt_sources(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert host_debian_mirror(sources) == "http://mirror.example/debian"


def test_emulated_cpuinfo_is_a_kunpeng_core():
    text = KUNPENG_CPUINFO.format(index=0)
    assert "CPU implementer\t: 0x48" in text and "CPU part\t: 0xd01" in text


def test_every_builtin_pin_is_a_registry_version():
    """A local version (``torch==2.13.0+cpu``) exists only on the index that built it: a
    fresh machine with pip's configuration ignored cannot build such a spec."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    from targets.envs import provide_environments

    for path in provide_environments():
        for step in envs.EnvSpec.from_file(path).steps:
            for line in step.packages:
                (pin,) = Requirement(line).specifier
                assert pin.operator == "==", (path.name, line)
                assert Version(pin.version).local is None, (path.name, line)


@pytest.mark.slow
def test_every_builtin_spec_resolves_from_the_registry_alone(tmp_path):
    """What a fresh machine can build: each install step resolved by pip with its
    configuration ignored (no find-links, no extra index) against the default registry,
    in dry-run (metadata only), for the spec's own platform. Needs the registry."""
    from targets.envs import provide_environments

    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("PIP_") or k in ("PIP_DEFAULT_TIMEOUT", "PIP_CERT")}
    clean["PIP_CONFIG_FILE"] = os.devnull
    for path in provide_environments():
        spec = envs.EnvSpec.from_file(path)
        platform = [f"--platform={p}" for p in spec.rootfs.get("platforms", [])]
        if platform:
            platform += ["--only-binary=:all:", f"--python-version={spec.python}",
                         "--implementation=cp"]
        for step in spec.steps:
            options = [o for o in step.options if o != "--no-deps"]
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                 "--ignore-installed", "--quiet", "--disable-pip-version-check",
                 "--target", str(tmp_path / "never"), *platform, *options, *step.packages],
                capture_output=True, text=True, env=clean, cwd=tmp_path, check=False)
            assert result.returncode == 0, (spec.name, result.stderr[-500:])
