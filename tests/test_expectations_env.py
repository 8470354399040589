"""Expectations files and the environment fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.fingerprint import fingerprint, os_info
from harness.verdicts.expectations import Expectations, ExpectationsError, judge, render


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "e.toml"
    path.write_text(text)
    return path


def test_lookup_exact_and_pattern(tmp_path: Path) -> None:
    exp = Expectations.load([_write(tmp_path, """
[operators.test_a]
status = "fail"
reason = "known numerical difference"

[operators."test_cast_*"]
status = "error"
reason = "no float8 kernels"
""")])
    assert exp.lookup("operators", "test_a").status == "fail"
    assert exp.lookup("operators", "test_cast_FLOAT_to_FLOAT8E5M2").reason == "no float8 kernels"
    assert exp.lookup("operators", "test_b") is None
    assert exp.lookup("models", "test_a") is None


@pytest.mark.parametrize("text, message", [
    ('[operators.test_a]\nstatus = "broken"\nreason = "x"\n', "status must be one of"),
    ('[operators.test_a]\nstatus = "fail"\n', "a reason is required"),
    ("[operators\n", "cannot read expectations"),
    ('[operators.test_a]\nstatus = "fail"\nalso = ["sometimes"]\nreason = "x"\n',
     "also must be a list of statuses"),
])
def test_bad_expectations_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ExpectationsError, match=message):
        Expectations.load([_write(tmp_path, text)])


def test_judge_outcomes() -> None:
    from harness.verdicts.expectations import Expectation

    known = Expectation("fail", "known", "f.toml")
    assert judge("pass", None) == (True, "")
    assert judge("skip", None) == (True, "")
    assert judge("fail", known) == (True, "")
    ok, why = judge("pass", known)
    assert not ok and "unexpected pass" in why and "f.toml" in why
    ok, why = judge("crash", known)
    assert not ok and "expected fail (known), got crash" in why
    assert judge("error", None) == (False, "expected pass, got error")


def test_render_keeps_reviewed_reasons(tmp_path: Path) -> None:
    previous = Expectations.load([_write(tmp_path, """
[operators.test_a]
status = "fail"
reason = "reviewed: accumulation order"
""")])
    records = [
        {"suite": "operators", "case": "test_a", "status": "fail", "message": "raw a"},
        {"suite": "operators", "case": "test_b", "status": "error", "message": "raw \"b\""},
        {"suite": "operators", "case": "test_c", "status": "pass", "message": ""},
        {"suite": "operators", "case": "test_d", "status": "skip", "message": "opset"},
    ]
    text = render(records, previous, header="drafted")
    reloaded = Expectations.load([_write(tmp_path, text)])
    assert reloaded.lookup("operators", "test_a").reason == "reviewed: accumulation order"
    assert reloaded.lookup("operators", "test_b").status == "error"
    assert reloaded.lookup("operators", "test_c") is None
    assert reloaded.lookup("operators", "test_d") is None


def test_a_nondeterministic_case_accepts_each_result_it_lists(tmp_path: Path) -> None:
    """``also`` lists the other results a case that does not repeat may give; a pass it
    lists is no unexpected pass, one it does not list is still unexpected, and a redraft
    keeps the reviewed entry whichever listed result the run saw."""
    path = _write(tmp_path, """
[operators.test_racy]
status = "fail"
also = ["pass", "crash"]
reason = "nondeterministic: reads uninitialised memory"
""")
    entry = Expectations.load([path]).lookup("operators", "test_racy")
    assert entry.also == ("pass", "crash")
    for seen in ("fail", "pass", "crash"):
        assert judge(seen, entry) == (True, "")
    ok, why = judge("timeout", entry)
    assert not ok and "expected fail" in why
    redrafted = render([{"suite": "operators", "case": "test_racy", "status": "pass",
                         "message": ""}], Expectations.load([path]))
    again = Expectations.load([_write(tmp_path, redrafted)]).lookup("operators", "test_racy")
    assert (again.status, again.also, again.reason) == (entry.status, entry.also, entry.reason)


def test_render_keeps_entries_the_run_did_not_exercise(tmp_path: Path) -> None:
    previous = Expectations.load([_write(tmp_path, """
[operators.test_old]
status = "error"
reason = "no kernel"
""")])
    records = [{"suite": "models", "case": "test_m", "status": "fail", "message": "drift"}]
    reloaded = Expectations.load([_write(tmp_path, render(records, previous))])
    assert reloaded.lookup("operators", "test_old").reason == "no kernel"
    assert reloaded.lookup("models", "test_m").status == "fail"


@pytest.mark.parametrize("release, family", [
    ('NAME="Kylin Linux Advanced Server"\nID=kylin\nVERSION_ID="V10"\n', "Kylin (麒麟)"),
    ('NAME="UnionTech OS Server 20"\nID=uos\nVERSION_ID="20"\n', "UOS (统信)"),
    ('NAME="openEuler"\nID="openEuler"\nVERSION_ID="22.03"\n', "openEuler (欧拉)"),
    ('NAME="Deepin"\nID=Deepin\nVERSION_ID="23"\n', "Deepin (深度)"),
    ('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n', None),
])
def test_domestic_distributions_are_recognised(tmp_path: Path, release: str,
                                               family: str | None) -> None:
    path = tmp_path / "os-release"
    path.write_text(release)
    assert os_info(path)["domestic_distribution"] == family


def test_fingerprint_has_the_platform_digest() -> None:
    env = fingerprint()
    assert len(env["platform_id"]) == 64 and env["cpu_count"] >= 1
    assert "onnxruntime" in env["runtimes"]


# -- a configuration is judged against its own file ------------------------------------
EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "targets" / "expectations"
#: every packaged configuration-specific file: ``<target>.<configuration>.toml``
CONFIGURATION_FILES = sorted(p for p in EXPECTATIONS_DIR.glob("*.*.toml"))


def _judged_by(label: str) -> Expectations:
    """The expectations a run of ``label`` is judged against (the run's own path)."""
    from harness.run.target_pool import TargetPool

    pool = TargetPool([label])
    return pool.expectations(pool.requests[0])


def _differing_entry(specific: Path) -> tuple[str, str]:
    """An entry of ``specific`` that the target's base file judges otherwise (absent or
    another status), so judging by the wrong file changes a verdict."""
    base = Expectations.load([specific.with_name(specific.name.split(".")[0] + ".toml")])
    own = Expectations.load([specific])
    for suite, cases in own.entries.items():
        for case, entry in cases.items():
            other = base.lookup(suite, case)
            if other is None or other.status != entry.status:
                return suite, case
    raise AssertionError(f"{specific.name} says nothing its base file does not")


@pytest.mark.parametrize("specific", CONFIGURATION_FILES, ids=lambda p: p.name)
def test_a_configuration_is_judged_by_its_own_expectations(specific: Path) -> None:
    """issue 27: ``nncase-k230:int8`` was judged by the fp32 file when the lookup ignored
    the configuration. A result the configuration's file expects is as expected under it,
    and the target's default configuration keeps judging by the base file."""
    target, configuration = specific.name.removesuffix(".toml").split(".", 1)
    suite, case = _differing_entry(specific)
    expected = Expectations.load([specific]).lookup(suite, case)
    found = _judged_by(f"{target}:{configuration}").lookup(suite, case)
    assert found is not None and found.status == expected.status, (target, configuration)
    assert judge(expected.status, found) == (True, "")
    default = _judged_by(target).lookup(suite, case)
    assert default is None or default.status != expected.status


class _Configured:
    """A driver in ``tmp_path`` with a base expectations file and an ``int8`` one."""

    @staticmethod
    def build(tmp_path: Path, configuration: str):  # noqa: ANN205 - a Target
        from harness.driver.target import Availability, Capabilities, Target, TargetIdentity

        class Driver(Target):
            expectations_file = tmp_path / "acme.toml"

            @property
            def identity(self) -> TargetIdentity:
                return TargetIdentity(name="acme", kind="framework", vendor="Acme",
                                      driver_version="1", runtime="r", runtime_version="1",
                                      configuration=configuration)

            def availability(self) -> Availability:
                return Availability.yes()

            def capabilities(self) -> Capabilities:
                return Capabilities()

            def compile(self, model: bytes):  # noqa: ANN201
                raise NotImplementedError

        return Driver()


def test_a_configuration_without_a_file_of_its_own_uses_the_base_file(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text('[operators.test_a]\nstatus = "fail"\nreason = "fp32"\n')
    (tmp_path / "acme.int8.toml").write_text(
        '[operators.test_a]\nstatus = "crash"\nreason = "int8 compiler"\n')
    for configuration, status in (("int8", "crash"), ("uint8", "fail"), ("default", "fail")):
        path = _Configured.build(tmp_path, configuration).expectations_path()
        assert Expectations.load([path]).lookup("operators", "test_a").status == status
