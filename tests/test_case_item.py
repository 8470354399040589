"""Cases collected as light case items keep pytest's ids, selection and markers.

Collected in this process with pytester (the plugin is the same code either way; an
interpreter start per collection proves nothing more). The packages with native
extensions are imported before pytester snapshots ``sys.modules``, so they are not
imported a second time (protobuf's extension aborts when it is)."""

from __future__ import annotations

import ml_dtypes  # noqa: F401  (imported before pytester's sys.modules snapshot)
import onnx  # noqa: F401
import onnx.reference  # noqa: F401
import pytest

import harness.run.plugin  # noqa: F401
from tests.conftest import REPO

pytest_plugins = ["pytester"]

SUITE = "suites/operators/test_operators.py"
TARGETS = ["onnxruntime-cpu", "onnxruntime-cpu,intra_op_threads=1"]


@pytest.fixture
def collected(pytester: pytest.Pytester):
    def collect(*args: str) -> list[str]:
        done = pytester.runpytest_inprocess(
            "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
            "-c", str(REPO / "pyproject.toml"),
            *[a for t in TARGETS for a in ("--target", t)],
            *[str(REPO / a) if a.startswith("suites/") else a for a in args])
        assert done.ret == 0, "\n".join(done.outlines[-40:] + done.errlines[-40:])
        return [line for line in done.outlines if "::" in line]

    return collect


def test_each_case_is_one_item_per_target_with_the_parametrized_id(collected) -> None:
    ids = collected(SUITE, "-k", "test_abs or test_neg")
    for case in ("test_abs", "test_neg"):
        first = ids.index(f"{SUITE}::{case}[{TARGETS[0]}]")
        assert ids[first + 1] == f"{SUITE}::{case}[{TARGETS[1]}]"
    assert len(ids) == 2 * len({i.split("[")[0] for i in ids})


def test_a_node_id_without_the_target_selects_the_case_on_every_target(collected) -> None:
    assert collected(f"{SUITE}::test_abs") == [f"{SUITE}::test_abs[{t}]" for t in TARGETS]


def test_markers_of_the_case_and_its_suite_select_items(collected) -> None:
    representative = collected(SUITE, "-m", "operators and representative")
    names = {i.split("::")[1].split("[")[0] for i in representative}
    assert "test_abs" in names and "test_abs_expanded" not in names
    assert len(representative) == 2 * len(names)
    assert len(names) <= 46  # one per representative op


def test_a_plugin_reading_fixture_names_sees_none_on_a_case_item(
        pytester: pytest.Pytester, tmp_path) -> None:
    """labgrid's pytest plugin (installed with the lab extra) reads ``item.fixturenames``
    before every test; a case item has none, rather than an AttributeError per case."""
    pytester.makepyfile(fixture_reader="""
        def pytest_runtest_setup(item):
            assert "strategy" not in item.fixturenames
    """)
    pytester.syspathinsert()
    done = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-p", "fixture_reader", "--rootdir", str(REPO),
        "-c", str(REPO / "pyproject.toml"), "--target", "onnxruntime-cpu",
        "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"),
        str(REPO / SUITE), "-k", "test_abs and not expand")
    assert done.ret == 0, "\n".join(done.outlines[-30:])
    done.assert_outcomes(passed=1)


def test_labgrid_pytest_plugin_is_refused_naming_the_way_out(pytester: pytest.Pytester) -> None:
    """labgrid's plugin brings a `target` fixture of its own: with it loaded, Shipei's cases
    were skipped unrecorded ("missing environment config (use --lg-env)"), so a run with
    targets refuses to start while it is loaded."""
    pytest.importorskip("labgrid.pytestplugin", reason="labgrid (the lab extra) not installed")
    bare_ini = pytester.makeini("[pytest]\n")  # not the repository's, which keeps it out
    done = pytester.runpytest_inprocess(
        "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
        "-c", str(bare_ini), "--target", "onnxruntime-cpu", str(REPO / SUITE), "-k", "test_abs")
    assert done.ret == pytest.ExitCode.USAGE_ERROR
    assert "-p no:labgrid" in "\n".join(done.errlines)
    blocked = pytester.runpytest_inprocess(
        "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:labgrid",
        "--rootdir", str(REPO), "-c", str(bare_ini), "--target", "onnxruntime-cpu",
        str(REPO / SUITE),
        "-k", "test_abs")
    assert blocked.ret == 0


def test_shipei_run_keeps_labgrid_pytest_plugin_out() -> None:
    from harness.cli.cmd_run import RunOptions, pytest_argv
    from harness.results.case_record import RunSelection

    argv = pytest_argv(RunSelection(suites=("operators",), targets=("onnxruntime-cpu",)),
                       RunOptions())
    assert "no:labgrid" in argv
