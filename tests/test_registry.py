"""Target discovery through the ``shipei.targets`` entry-point group."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.driver.registry import (
    Registry,
    RegistryError,
    TargetRequest,
    TargetSpec,
    discover,
)

THROWAWAY_DRIVER = '''
"""A throwaway vendor driver: the ONNX reference evaluator under a vendor name."""
from importlib import metadata

import onnx
from onnx.reference import ReferenceEvaluator

from harness.driver.registry import TargetSpec
from harness.driver.target import Availability, Capabilities, Executable, Target, TargetIdentity


def provide_targets():
    yield TargetSpec(name="acme-reference", factory="acme_driver:AcmeTarget",
                     summary="ACME reference evaluator")


class AcmeExecutable(Executable):
    def __init__(self, model):
        self.evaluator = ReferenceEvaluator(model)
        self.names = [o.name for o in model.graph.output]

    def run(self, inputs):
        return dict(zip(self.names, self.evaluator.run(None, dict(inputs))))


class AcmeTarget(Target):
    def __init__(self, configuration="default"):
        self.configuration = configuration

    @property
    def identity(self):
        return TargetIdentity(name="acme-reference", kind="framework", vendor="ACME",
                              driver_version=metadata.version("acme-driver"),
                              runtime="onnx-reference", runtime_version=onnx.__version__,
                              driver_distribution="acme-driver")

    def availability(self):
        return Availability.yes()

    def capabilities(self):
        return Capabilities(opset_min=1, opset_max=30)

    def compile(self, model):
        return AcmeExecutable(onnx.load_from_string(model))
'''


@pytest.fixture(scope="module")
def throwaway_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and pip-install a real third-party driver distribution into its own folder."""
    root = tmp_path_factory.mktemp("acme")
    source = root / "src"
    source.mkdir()
    (source / "acme_driver.py").write_text(THROWAWAY_DRIVER)
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "acme-driver"
        version = "3.1.4"
        [project.entry-points."shipei.targets"]
        acme = "acme_driver:provide_targets"
        [tool.setuptools]
        py-modules = ["acme_driver"]
    """))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(source)],
                   check=True, capture_output=True, timeout=300)
    return site


def test_builtin_targets_register_through_the_entry_point_group() -> None:
    registry = discover()
    spec = registry.spec("onnxruntime-cpu")
    assert spec.origin.startswith("entry point 'onnxruntime'")
    assert registry.build("onnxruntime-cpu").availability().available


@pytest.mark.extended
def test_third_party_driver_is_discovered_and_runs(shipei_cli, throwaway_site: Path) -> None:
    env = {"PYTHONPATH": str(throwaway_site)}
    listed = shipei_cli("targets", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    targets = {t["name"]: t for t in json.loads(listed.stdout)["targets"]}
    acme = targets["acme-reference"]
    assert acme["available"] is True
    assert acme["vendor"] == "ACME" and acme["driver_version"] == "3.1.4"
    assert "acme-driver 3.1.4" in acme["origin"]
    assert targets["onnxruntime-cpu"]["available"] is True

    run = shipei_cli("run", "--target", "acme-reference", "-k", "test_abs or test_relu",
                     env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    records = run.records()
    assert {r["case"] for r in records} >= {"test_abs", "test_relu"}
    assert all(r["status"] == "pass" and r["target"] == "acme-reference" for r in records)
    assert "test_abs[acme-reference]" in {r["nodeid"].split("::")[-1] for r in records}


def test_broken_provider_is_reported_not_fatal(shipei_cli) -> None:
    result = shipei_cli("targets", "--json", env={"SHIPEI_PLUGINS": "no_such_module:provide"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    reason = data["broken_providers"]["SHIPEI_PLUGINS 'no_such_module:provide'"]
    assert "ModuleNotFoundError" in reason
    assert any(t["name"] == "onnxruntime-cpu" for t in data["targets"])


def test_target_request_parsing() -> None:
    request = TargetRequest.parse("openvino-cpu:bf16,threads=2,fast=true,ratio=0.5,mode=x")
    assert request.name == "openvino-cpu" and request.configuration == "bf16"
    assert request.options == {"threads": 2, "fast": True, "ratio": 0.5, "mode": "x"}
    assert TargetRequest.parse("onnxruntime-cpu").configuration == "default"
    with pytest.raises(RegistryError, match="not key=value"):
        TargetRequest.parse("onnxruntime-cpu,threads")


def test_unknown_names_and_configurations_are_clear_errors() -> None:
    registry = Registry()
    registry.add(TargetSpec("a", "targets.testing:FaultyTarget", origin="test"))
    with pytest.raises(RegistryError, match="unknown target 'b'; known targets: a"):
        registry.spec("b")
    with pytest.raises(RegistryError, match="no configuration 'bf16'"):
        registry.build("a:bf16")
    with pytest.raises(RegistryError, match="registered twice"):
        registry.add(TargetSpec("a", "x:y", origin="other"))


# -- SHIPEI_PLUGINS: each entry names its group -------------------------------------------------
SUITE_PROVIDER = '''
from harness.cases.suite_registry import SuiteSpec


def provide_suites():
    return [SuiteSpec(name="provided", package="provided_suites", title_zh="提供的",
                      title_en="Provided")]
'''


@pytest.fixture
def suite_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "provided_suites.py").write_text(SUITE_PROVIDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "provided_suites:provide_suites"


def test_plugin_entries_name_their_group() -> None:
    from harness.plugin_entries import PluginEntryError, parse_entry, plugin_entries

    assert parse_entry("targets=acme:provide").group == "targets"
    assert parse_entry(" suites = acme.suite:SUITE ").reference == "acme.suite:SUITE"
    older = parse_entry("acme:provide_targets")
    assert older.group is None and older.reference == "acme:provide_targets"
    with pytest.raises(PluginEntryError, match="unknown group 'suite'; known: targets, "
                                               "suites, plugins"):
        parse_entry("suite=acme:SUITE")
    with pytest.raises(PluginEntryError, match="not GROUP=module:attribute"):
        parse_entry("targets=")
    entries = plugin_entries("targets=a:f; suites=b:S,plugins=c")
    assert [(e.group, e.reference) for e in entries] == [("targets", "a:f"), ("suites", "b:S"),
                                                         ("plugins", "c")]


def test_a_callable_suite_provider_named_as_suites_registers_its_suites(
        suite_provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cases.suite_registry import discover_suites

    monkeypatch.setenv("SHIPEI_PLUGINS", f"suites={suite_provider}")
    assert "provided" in discover_suites().suites
    registry = discover()
    assert not registry.broken, registry.broken  # not mistaken for a target provider


def test_a_callable_without_a_group_is_a_target_provider_and_told_so(
        suite_provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cases.suite_registry import discover_suites

    monkeypatch.setenv("SHIPEI_PLUGINS", suite_provider)
    reason = discover().broken[f"SHIPEI_PLUGINS {suite_provider!r}"]
    assert "must return TargetSpec objects" in reason
    assert "name its group: targets|suites|plugins=module:attribute" in reason
    assert "provided" not in discover_suites().suites


def test_target_providers_with_and_without_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("targets=targets.testing:provide_targets", "targets.testing:provide_targets"):
        monkeypatch.setenv("SHIPEI_PLUGINS", value)
        registry = discover()
        assert "shipei-faulty" in registry.specs and not registry.broken
        assert registry.specs["shipei-faulty"].origin == f"SHIPEI_PLUGINS {value!r}"


def test_an_unreadable_entry_is_listed_broken_and_the_others_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPEI_PLUGINS", "target=targets.testing:provide_targets,"
                                         "targets=targets.testing:provide_targets")
    registry = discover()
    assert "shipei-faulty" in registry.specs
    assert "unknown group 'target'" in \
        registry.broken["SHIPEI_PLUGINS 'target=targets.testing:provide_targets'"]


def test_a_targets_entry_naming_no_callable_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPEI_PLUGINS", "targets=targets.testing:FaultyTarget.__doc__")
    reason = discover().broken["SHIPEI_PLUGINS 'targets=targets.testing:FaultyTarget.__doc__'"]
    assert "callable returning TargetSpec objects" in reason


# -- certificate measures and sections are the core's on purpose ---------------------------------
def test_a_measure_from_outside_the_core_is_refused() -> None:
    """The center evaluates profiles itself: a measure only a vendor has cannot back a level."""
    from harness.cert.measures import MEASURES, Measure, MeasureError, register

    class VendorsOwn(Measure):
        name = "vendors_own"

        def passes(self, record: object) -> bool:
            return True

    with pytest.raises(MeasureError, match="defined in harness.cert only"):
        register(VendorsOwn)
    assert "vendors_own" not in MEASURES


def test_a_suite_cannot_invent_a_certificate_section() -> None:
    from harness.cases.suite_registry import SECTIONS, SuiteRegistryError, SuiteSpec

    assert SECTIONS == ("conformance", "models", "performance")
    with pytest.raises(SuiteRegistryError, match="certificate_section must be one of"):
        SuiteSpec(name="x", package="x", title_zh="x", title_en="x",
                  certificate_section="benchmarks")
