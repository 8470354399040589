"""Certification profiles, the level computed from records, DSSE encoding and run
selection parsing - the logic under the certificates, without running a suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cert import dsse
from harness.cert.evaluate import case_outcomes, evaluate
from harness.cert.evidence import selection_args
from harness.cert.profile import LEVELS, Profile, ProfileError, available_profiles, load_profile

MINI = {
    "name": "mini", "version": "1", "kind": "framework", "title_zh": "小", "title_en": "Mini",
    "sets": {"ops": ["Add", "Mul"]},
    "scopes": {"full": {"title_zh": "全", "title_en": "Full"},
               "subset": {"title_zh": "子集", "title_en": "Subset", "markexpr": "representative",
                          "max_level": "limited"}},
    "criteria": [
        {"id": "core", "title_zh": "核心", "title_en": "Core", "suite": "operators",
         "match": {"op_type": "@ops"}, "coverage": "op_type", "exclude_cases": ["*float8*"],
         "thresholds": {"full": 1.0, "limited": 0.5}},
        {"id": "models", "title_zh": "模型", "title_en": "Models", "suite": "models",
         "skips": "unmeasured", "thresholds": {"full": 1.0, "limited": 0.5}, "required": "full"},
        {"id": "latency", "title_zh": "时延", "title_en": "Latency", "suite": "performance",
         "measure": "metric", "metrics": ["summary.p50_ms"], "bounds": {"summary.p50_ms": 10.0},
         "flags": ["loadgen.valid"], "thresholds": {"full": 1.0}},
    ],
}


def record(suite: str, case: str, status: str = "pass", op: str | None = None,
           **extra: object) -> dict:
    tags = {"op_type": op} if op else {}
    return {"target": "t", "suite": suite, "case": case, "status": status, "tags": tags,
            **extra}


def mini(**changes: object) -> Profile:
    data = {**MINI, **changes}
    return Profile.from_dict(data)


def full_evidence() -> list[dict]:
    return [record("operators", "test_add", op="Add"), record("operators", "test_mul", op="Mul"),
            record("models", "test_resnet"),
            record("performance", "test_p", metrics=perf(2.5))]


def perf(p50: float, valid: bool = True) -> dict:
    return {"summary": {"p50_ms": p50}, "loadgen": {"valid": valid}}


@pytest.mark.parametrize("name", ["framework", "chip", "sensor"])
def test_packaged_profiles_load(name: str) -> None:
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.kind == name
    assert profile.scope("full").complete and profile.scope("full").max_level == "full"
    assert profile.criteria and len(profile.sha256) == 64


def test_framework_profile_names_its_core_operators_explicitly() -> None:
    profile = load_profile("framework")
    core = next(c for c in profile.criteria if c.id == "core_operators")
    assert {"Conv", "MatMul", "Softmax", "LayerNormalization"} <= set(core.match["op_type"])
    assert core.coverage == "op_type" and core.suite == "operators"
    assert not profile.scope("representative").complete
    assert profile.scope("representative").max_level == "limited"


@pytest.mark.parametrize("change, message", [
    ({"kind": "toaster"}, "kind must be one of"),
    ({"scopes": {}}, "[scopes.full] table is required"),
    ({"criteria": [{**MINI["criteria"][0], "measure": "vibes"}]}, "measure must be one of"),
    ({"criteria": [{**MINI["criteria"][0], "thresholds": {"full": 1.5}}]}, "fractions"),
    ({"criteria": [{**MINI["criteria"][0], "thresholds": {"full": 0.5, "limited": 0.9}}]},
     "below the 'limited'"),
    ({"criteria": [{**MINI["criteria"][0], "match": {"op_type": "@nope"}}]}, "unknown set"),
    ({"criteria": [MINI["criteria"][0], MINI["criteria"][0]]}, "unique"),
    ({"criteria": [{**MINI["criteria"][1]}]}, "no criterion is required for level 'limited'"),
])
def test_bad_profiles_are_refused_with_one_line(change: dict, message: str) -> None:
    with pytest.raises(ProfileError) as info:
        mini(**change)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_profile_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [", encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(bad)
    dated = tmp_path / "dated.toml"
    dated.write_text("when = 2026-01-01\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="no TOML dates"):
        load_profile(dated)
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        load_profile("nope")


def test_everything_met_is_fully_compatible() -> None:
    evaluation = evaluate(mini(), "full", full_evidence())
    assert evaluation.level == "full" and evaluation.issuable
    assert all(r.is_measured for r in evaluation.criteria)
    assert evaluation.suites["operators"]["counts"] == {"pass": 2}


def test_unmeasured_suite_caps_the_level_but_is_no_bar_below_where_it_is_required() -> None:
    evidence = [r for r in full_evidence() if r["suite"] != "models"]
    evaluation = evaluate(mini(), "full", evidence)
    assert evaluation.level == "limited"
    assert any("models: not measured" in b for b in evaluation.blockers["full"])


def test_measured_failure_gives_not_compatible() -> None:
    evidence = [record("operators", "test_add", "fail", op="Add"),
                record("operators", "test_mul", "error", op="Mul")]
    evaluation = evaluate(mini(), "full", evidence)
    assert evaluation.level == "none" and evaluation.issuable
    assert "core: 0/2 = 0.00% below 50%" in evaluation.blockers["limited"]


def test_nothing_measured_is_not_issuable() -> None:
    evaluation = evaluate(mini(), "full", [record("models", "test_m")])
    assert evaluation.level == "none" and not evaluation.issuable


def test_infra_error_makes_a_criterion_not_measured_never_a_failure() -> None:
    evidence = full_evidence() + [record("operators", "test_add_2", "infra_error", op="Add")]
    core = evaluate(mini(), "full", evidence).criteria[0]
    assert not core.is_measured and "infra_error" in core.reason
    assert core.passed == 2 and core.measured == 2


def test_coverage_is_enforced_in_complete_scopes_and_reported_in_subsets() -> None:
    evidence = [r for r in full_evidence() if r["case"] != "test_mul"]
    full = evaluate(mini(), "full", evidence)
    assert not full.criteria[0].is_measured and "Mul" in full.criteria[0].reason
    subset = evaluate(mini(), "subset", evidence)
    assert subset.criteria[0].is_measured and subset.criteria[0].missing == ["Mul"]
    assert subset.level == "limited"  # the subset scope caps the level
    assert "capped" in subset.blockers["full"][0]


def test_retries_and_exclusions() -> None:
    evidence = full_evidence() + [
        record("operators", "test_add_x", "fail", op="Add", attempt=1, as_expected=False),
        record("operators", "test_add_x", "pass", op="Add", attempt=2),  # flaky: not a pass
        record("operators", "test_mul_x", "infra_error", op="Mul", attempt=1,
               as_expected=False),
        record("operators", "test_mul_x", "pass", op="Mul", attempt=2),  # harness re-run: pass
        record("operators", "test_cast_float8", "skip", op="Add"),  # excluded by pattern
    ]
    folded = case_outcomes(evidence)
    assert folded[("operators", "test_add_x")]["status"] == "fail"
    assert folded[("operators", "test_mul_x")]["status"] == "pass"
    for version in ("1", "2"):
        core = evaluate(mini(), "full", evidence, version).criteria[0]
        assert (core.passed, core.measured) == (3, 4), version
    assert core.counts == {"flaky": 1, "pass": 3}


def test_skip_policy_and_metric_bounds() -> None:
    evidence = full_evidence() + [record("models", "test_missing_package", "skip")]
    models = evaluate(mini(), "full", evidence).criteria[1]
    assert (models.passed, models.measured) == (1, 1)  # skips = "unmeasured"
    slow = full_evidence()[:-1] + [record("performance", "test_p", metrics=perf(12.0))]
    latency = evaluate(mini(), "full", slow).criteria[2]
    assert latency.is_measured and latency.value == 0.0
    invalid = full_evidence()[:-1] + [record("performance", "test_p", metrics=perf(2.0, False))]
    assert evaluate(mini(), "full", invalid).level == "limited"
    missing = full_evidence()[:-1] + [record("performance", "test_p", metrics={})]
    assert evaluate(mini(), "full", missing).level == "limited"


def test_levels_are_bilingual() -> None:
    assert LEVELS["full"] == ("完全兼容", "Fully compatible")
    assert LEVELS["limited"] == ("基本兼容", "Compatible with limitations")
    assert LEVELS["none"] == ("不兼容", "Not compatible")


def test_pae_matches_the_dsse_specification_example() -> None:
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert dsse.pae("t", "中".encode()) == b"DSSEv1 1 t 3 " + "中".encode()


def test_non_canonical_base64_is_refused() -> None:
    assert dsse.b64decode_strict("QQ==", "x") == b"A"
    for text in ("QR==", "QQ", "Q Q==", "QQ==\n"):
        with pytest.raises(dsse.EnvelopeError):
            dsse.b64decode_strict(text, "x")


@pytest.mark.parametrize("args, found", [
    (["suites/operators", "-q", "--results-dir", "r"], []),
    (["suites/operators", "-m", "representative"], ["-m representative"]),
    (["suites/operators", "-mrepresentative"], ["-mrepresentative"]),
    (["suites/operators", "-k", "abs", "-x"], ["-k abs", "-x"]),
    (["suites/operators/test_ops.py::test_abs"], ["suites/operators/test_ops.py::test_abs"]),
    (["suites/operators", "--shard", "1/4", "--maxfail=3"], ["--shard 1/4", "--maxfail=3"]),
])
def test_selection_args(args: list[str], found: list[str]) -> None:
    assert selection_args(args) == found


def test_commits_may_differ_only_in_what_cannot_change_a_record(tmp_path: Path) -> None:
    import subprocess

    from harness.cert.evidence import EvidenceError, changed_between

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, capture_output=True, text=True, check=True
                              ).stdout.strip()

    git("init", "-q")
    for path in ("harness/verdicts/judge.py", "harness/cert/page.py", "suites/ops/test_x.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    first = git("rev-parse", "HEAD")
    (tmp_path / "harness/cert/page.py").write_text("v2\n")
    git("commit", "-q", "-am", "certification only")
    second = git("rev-parse", "HEAD")
    (tmp_path / "harness/verdicts/judge.py").write_text("v2\n")
    git("commit", "-q", "-am", "judging")
    third = git("rev-parse", "HEAD")
    paths = ["harness", "suites/ops"]
    assert changed_between(first, second, paths, tmp_path) == []
    assert changed_between(first, third, paths, tmp_path) == ["harness/verdicts/judge.py"]
    with pytest.raises(EvidenceError, match="cannot compare harness commits"):
        changed_between("0" * 40, third, paths, tmp_path)


@pytest.mark.parametrize("name", sorted(available_profiles()))
def test_every_packaged_profile_is_a_released_version(name: str) -> None:
    """A packaged profile changed without a new version would make certificates of the old
    rules read as the new (and verify would refuse the old ones): each packaged profile's
    (name, version, sha256) must be listed in profiles/released.json."""
    from harness.cert.profile import PACKAGED, released_profiles

    profile = load_profile(name)
    assert released_profiles()[profile.name][profile.version] == profile.sha256
    assert profile.origin == PACKAGED
