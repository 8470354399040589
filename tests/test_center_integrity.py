"""Intake against the attacks of issue 26 on real vendor runs: a run with its failing
records deleted is incomplete (the center derives the case universe itself) and the
audit samples from that universe; a copy of accepted records under another run id or
another vendor's key is a replay (keyed on measured content), while an honest second
run is not; artefacts that disagree (JUnit, retries, colliding member names, dates)
are refused naming the check; malformed but signed members and over-long run ids are
one-line refusals; a killed intake leaves no scratch folder behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.center import audit, crosscheck, universe
from harness.center.bundle import open_bundle
from harness.center.scratch import SCRATCH, scratch_dir
from harness.results.record_files import load_run
from tests.center_support import (  # noqa: F401 (fixtures)
    Center,
    accept,
    build,
    center_fixture,
    copy_run,
    edit_run,
    intake,
    register_vendor,
    reports_of,
    resign,
    run_dir_fixture,
    shared_run,
)


def _refused(result: Any, check: str, *words: str) -> None:
    assert not result.accepted, result.to_dict()
    assert result.failed.id == check, result.refusal()
    for word in words:
        assert word in result.failed.detail, result.refusal()


# ---------------------------------------------------------------- 1: deleted failures

def _without_unwanted(run_dir: Path, dest: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The vendor deletes every record that did not pass (and one more, so there is
    always something deleted) and lowers ``selection.selected`` to match."""
    edited = copy_run(run_dir, dest)
    deleted: list[tuple[str, str]] = []

    def drop(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        first = next(r for r in records if r["suite"] == "operators")
        kept = [r for r in records if r["status"] == "pass" and r is not first]
        deleted.extend((r["suite"], r["case"]) for r in records if r not in kept)
        return kept

    edit_run(edited, records_edit=drop)

    edit_run(edited, info_edit=lambda info: info["selection"].update(
        selected=info["selection"]["selected"] - len(deleted),
        collected=info["selection"]["collected"] - len(deleted)))
    return edited, sorted(deleted)


def test_a_run_with_deleted_records_is_incomplete(run_dir: Path, center: Center,
                                                  tmp_path: Path) -> None:
    edited, deleted = _without_unwanted(run_dir, tmp_path / "vendor")
    result = intake(center, build([edited], center.vendor_key))
    suite, case = deleted[0]
    _refused(result, "completeness", f"has no record for {len(deleted)} of the 54 cases",
             f"{suite}::{case}")


def test_records_of_cases_the_suites_do_not_have_are_refused(run_dir: Path, center: Center,
                                                             tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")

    def invent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        made = dict(records[0], case="test_invented_by_the_vendor")
        return [*records, made]

    edit_run(edited, records_edit=invent)
    edit_run(edited, info_edit=lambda info: info["selection"].update(selected=55))
    result = intake(center, build([edited], center.vendor_key))
    _refused(result, "completeness", "does not have", "test_invented_by_the_vendor")


def test_the_audit_draws_from_the_universe_not_the_vendors_records(
        run_dir: Path, center: Center, tmp_path: Path) -> None:
    edited, deleted = _without_unwanted(run_dir, tmp_path / "vendor")
    bundle = open_bundle(build([edited], center.vendor_key))
    population = audit.case_universe(bundle, "onnxruntime-cpu", "representative")
    assert set(deleted) <= set(population) and len(population) == 54
    sample = audit.draw_sample(population, 54, seed=3)
    assert set(deleted) <= set(sample)
    vendor = audit.vendor_records(bundle, "onnxruntime-cpu")
    found = {(c.suite, c.case): c for c in audit.compare(sample, vendor, vendor)}
    assert not found[deleted[0]].agrees
    assert "no record of this case" in found[deleted[0]].reason
    assert all(c.agrees for key, c in found.items() if key not in deleted)


def test_the_universe_is_what_shipei_run_selects(run_dir: Path) -> None:
    info, records = load_run(run_dir)
    expected = universe.expected_cases(universe.run_suites(info, []), "onnxruntime-cpu",
                                       "representative")
    assert expected == {(r["suite"], r["case"]) for r in records}
    assert info["selection"]["selected"] == len(expected)
    with pytest.raises(universe.UniverseError, match="no suite 'nonesuch'"):
        universe.expected_cases(["nonesuch"], "onnxruntime-cpu", None)


# ---------------------------------------------------------------- 2: replay by renaming

@pytest.fixture(scope="module")
def second_lab_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An honest run of the same target made by another lab (with a second target)."""
    return shared_run(tmp_path_factory, "lab-b", ("onnxruntime-cpu", "openvino-cpu"))


def test_copied_records_are_a_replay_whoever_signs_them(run_dir: Path, center: Center,
                                                        tmp_path: Path) -> None:
    accept(center, build([run_dir], center.vendor_key))
    evil = register_vendor(center, "EVIL Corp")
    copied = intake(center, build([copy_run(run_dir, tmp_path / "evil", "evil-1")], evil,
                                  vendor="EVIL Corp"))
    _refused(copied, "replay", "a copy, whatever its run id or key")
    shared, _, total = copied.failed.detail.partition(" timed records")[0].partition(" of ")
    assert shared == total and int(total) >= 50
    _own_copy_is_a_replay(run_dir, center, tmp_path)


def _own_copy_is_a_replay(run_dir: Path, center: Center, tmp_path: Path) -> None:
    """The vendor's own run, resubmitted under a new id, is a replay of bundle #1."""
    own = intake(center, build([copy_run(run_dir, tmp_path / "own", "again")],
                               center.vendor_key))
    _refused(own, "replay", "measurements of an accepted bundle (#1")


def test_bundles_accepted_before_content_digests_are_protected_too(
        run_dir: Path, center: Center, tmp_path: Path) -> None:
    from sqlalchemy import delete

    from harness.center.models import ContentDigest
    from harness.center.store import Store

    accept(center, build([run_dir], center.vendor_key))
    store = Store(center.db)
    with store.session() as session:  # as a center upgraded from revision 0002 has it
        session.execute(delete(ContentDigest))
    store.close()
    _own_copy_is_a_replay(run_dir, center, tmp_path)


@pytest.mark.extended
def test_an_honest_second_run_by_another_lab_is_no_replay(
        run_dir: Path, second_lab_run: Path, center: Center) -> None:
    accept(center, build([run_dir], center.vendor_key))
    lab = register_vendor(center, "Lab B 实验室")
    second = intake(center, build([second_lab_run], lab, vendor="Lab B 实验室"))
    assert second.accepted, second.refusal()
    assert "none measured before" in next(c for c in second.checks if c.id == "replay").detail


@pytest.mark.extended
def test_a_resubmitted_multi_target_run_is_refused_not_a_traceback(
        second_lab_run: Path, center: Center) -> None:
    accept(center, build([second_lab_run], center.vendor_key))
    # the same two-target run re-packed with its reports: a new bundle digest
    again = intake(center, build([second_lab_run], center.vendor_key,
                                 reports=reports_of(second_lab_run)))
    _refused(again, "replay", "run lab-b/onnxruntime-cpu was already submitted")


# ---------------------------------------------------------------- 3: artefacts disagree

def test_a_record_that_disagrees_with_the_bundles_junit_is_refused(
        run_dir: Path, center: Center, tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")
    flipped: dict[str, str] = {}

    def flip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        record = next((r for r in records if r["status"] == "skip"), records[0])
        flipped.update(case=record["case"], was=record["status"])
        record.update(status="pass" if record["status"] != "pass" else "fail",
                      as_expected=record["status"] != "pass")
        return records

    edit_run(edited, records_edit=flip)
    result = intake(center, build([edited], center.vendor_key, reports=reports_of(run_dir)))
    _refused(result, "consistency", "junit.xml says", flipped["case"],
             f"is {flipped['was']}; the records say")


def test_run_json_counts_that_are_not_the_records_are_refused(run_dir: Path, center: Center,
                                                               tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")

    def one_more_pass(info: dict[str, Any]) -> None:
        counts = info["counts"]["onnxruntime-cpu"]
        counts["pass"] = counts.get("pass", 0) + 1

    edit_run(edited, info_edit=one_more_pass)
    result = intake(center, build([edited], center.vendor_key))
    _refused(result, "consistency", "run.json counts onnxruntime-cpu", "its records give")


def test_a_passing_retry_added_afterwards_is_refused(run_dir: Path, center: Center,
                                                     tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")
    finished = json.loads((edited / "run.json").read_text())["finished_at"]

    def add_retry(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[0].update(status="fail", as_expected=False, expected_status="pass")
        return [*records, dict(records[0], status="pass", as_expected=True, attempt=2,
                               finished_at=finished)]

    edit_run(edited, records_edit=add_retry)
    result = intake(center, build([edited], center.vendor_key))
    _refused(result, "consistency", "attempt 2", "lies in no retry the run recorded")


def test_a_retry_inside_a_recorded_retry_is_consistent() -> None:
    start = "2026-12-01T10:00:00+00:00"
    info = {"finished_at": "2026-12-01T11:00:00+00:00",
            "continuations": [{"mode": "retry-failed", "started_at": "2026-12-01T10:30:00+00:00",
                               "finished_at": "2026-12-01T10:40:00+00:00"}]}
    base = {"target": "t", "suite": "operators", "case": "test_a"}
    first = dict(base, attempt=1, status="fail", as_expected=False, finished_at=start)
    retry = dict(base, attempt=2, status="pass", finished_at="2026-12-01T10:35:00+00:00")
    crosscheck.check_attempts("r", info, [first, retry])
    with pytest.raises(crosscheck.ConsistencyError, match="attempts \\[2, 1\\]"):
        crosscheck.check_attempts("r", info, [retry, first])
    late = dict(retry, finished_at="2026-12-01T10:50:00+00:00")
    with pytest.raises(crosscheck.ConsistencyError, match="lies in no retry"):
        crosscheck.check_attempts("r", info, [first, late])
    # the run's own re-runs of a crash (harness.verdicts.crash_blame): the crashed case run alone
    # (two records, or one carrying the first), and the crash charged to the case before
    crashed = dict(first, status="crash")
    crosscheck.check_attempts("r", {}, [crashed, dict(late, finished_at=start)])
    crosscheck.check_attempts("r", {}, [dict(retry, previous_attempts=[dict(crashed)])])
    passed = dict(first, status="pass", as_expected=True)
    charged = dict(base, attempt=2, status="crash", left_runtime_corrupted=True,
                   finished_at=start)
    crosscheck.check_attempts("r", {}, [passed, charged])
    with pytest.raises(crosscheck.ConsistencyError, match="follows a pass"):
        crosscheck.check_attempts("r", info, [passed, dict(charged, status="pass",
                                                            left_runtime_corrupted=False)])


def test_member_names_that_collide_by_case_are_refused(run_dir: Path, center: Center,
                                                       tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")
    (edited / "Records.jsonl").write_text("{}\n")
    result = intake(center, build([edited], center.vendor_key))
    _refused(result, "consistency", "differ only by case or Unicode normalisation")


@pytest.mark.parametrize("year", [2031, 1999])
def test_runs_dated_outside_the_harness_lifetime_are_refused(run_dir: Path, center: Center,
                                                             tmp_path: Path, year: int) -> None:
    edited = copy_run(run_dir, tmp_path / "vendor")

    def moved(value: str) -> str:
        return f"{year}{value[4:]}"

    edit_run(edited, info_edit=lambda info: info.update(
        started_at=moved(info["started_at"]), finished_at=moved(info["finished_at"])),
        records_edit=lambda records: [dict(r, finished_at=moved(r["finished_at"]))
                                      for r in records])
    result = intake(center, build([edited], center.vendor_key))
    _refused(result, "consistency", f"is dated {year}", "outside 2025-01-01 to")


def test_dates_have_a_floor_and_a_ceiling() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    crosscheck.check_dates({"created_at": "2026-12-06T12:00:00+00:00"}, {}, {}, now)
    with pytest.raises(crosscheck.ConsistencyError, match="outside"):
        crosscheck.check_dates({"created_at": (now + timedelta(days=2)).isoformat()}, {}, {},
                               now)
    with pytest.raises(crosscheck.ConsistencyError, match="not an ISO 8601 time"):
        crosscheck.check_dates({"created_at": "yesterday"}, {}, {}, now)


# ---------------------------------------------------------------- 8: malformed, signed

def _set(name: str, data: bytes) -> Any:
    return lambda files: files.__setitem__(name, data)


def _long_id(files: dict[str, bytes]) -> None:
    for name in [n for n in files if n.startswith("runs/vendor-rep/")]:
        files[name.replace("vendor-rep", "r" * 300)] = files.pop(name)


@pytest.mark.parametrize(("files_edit", "statement_edit", "check", "words"), [
    (_set("runs/vendor-rep/run.json", b"[1, 2]"), None, "consistency", "not a JSON object"),
    (_set("runs/vendor-rep/run.json", b'{"run_id": "vendor-rep", "targets": "x"}'), None,
     "consistency", "names no targets"),
    (_set("runs/vendor-rep/records.jsonl", b'{"suite": 1}\n'), None, "consistency",
     "is not a case record"),
    (_set("manifest.json", b'{"files": [1, 2]}'), None, "digest", "manifest.json is malformed"),
    (None, lambda s: s["predicate"].update(runs="everything"), "signature",
     "lists its runs malformed"),
    (None, lambda s: s["predicate"].update(target=["a", "b"]), "signature", "no target name"),
    (_long_id, lambda s: s["predicate"]["runs"][0].update(run_id="r" * 300), "consistency",
     "300 characters) is not a plain run id"),
])
def test_malformed_signed_members_are_one_line_refusals(
        run_dir: Path, center: Center, files_edit: Any, statement_edit: Any, check: str,
        words: str) -> None:
    data = resign(build([run_dir], center.vendor_key), center.vendor_key, files_edit,
                  statement_edit)
    _refused(intake(center, data), check, words)


def test_a_killed_intake_leaves_no_scratch_folder(run_dir: Path, center: Center,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    accept(center, build([run_dir], center.vendor_key))
    from harness.cache import cache_dir

    assert not [p for p in cache_dir(SCRATCH).iterdir() if p.name.startswith(f"{os.getpid()}-")]
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path / "cache"))
    script = ("import os, signal\n"
              "from harness.center.scratch import scratch_dir\n"
              "with scratch_dir() as path:\n"
              "    print(path, flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert killed.returncode == -signal.SIGKILL
    left = Path(killed.stdout.strip())
    assert left.is_dir() and left.parent == tmp_path / "cache" / SCRATCH
    with scratch_dir() as mine:
        assert not left.exists()  # the dead process's folder was swept
        assert mine.is_dir()
    assert not mine.exists()


@pytest.mark.slow
def test_an_honest_run_with_crash_reruns_is_consistent(shipei_cli: Any) -> None:
    """A real run whose worker a case corrupts (tests/corrupting_target.py): the crashed
    case is re-run alone and the crash charged to the case before it, as later attempts
    in the same run; the attempts and JUnit checks accept them."""
    from tests.corrupting_target import PLUGINS

    result = shipei_cli("run", "--suite", "operators", "-k", "test_abs or test_neg",
                        "--target", "shipei-corrupting", env=PLUGINS)
    assert result.returncode == 1, result.stderr[-2000:]
    run = result.run_dirs()[0]
    info, records = load_run(run, all_attempts=True)
    assert any(r.get("left_runtime_corrupted") for r in records)
    assert any(r.get("previous_attempts") for r in records)
    crosscheck.check_attempts(run.name, info, records)
    junit = result.reports / run.name / crosscheck.JUNIT_FILE
    assert crosscheck.check_junit(run.name, junit.read_bytes(), records) > 0
