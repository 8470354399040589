"""Evidence bundles and intake on a real vendor run: a bundle is reproducible byte for
byte, an honest one is accepted and stored, and each kind of tampering is refused with
the check it fails named (one record changed, one file missing, a wrong vendor key, a
replayed bundle, records inconsistent with their environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.center_support import (  # noqa: F401 (fixtures)
    VENDOR,
    Center,
    accept,
    build,
    center_fixture,
    copy_run,
    edit_member,
    error_line,
    intake,
    members,
    repack,
    run_dir_fixture,
    shipei,
)


def _first_record_line(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0]


def test_bundle_is_reproducible_and_lists_every_file(run_dir: Path, center: Center) -> None:
    first = build([run_dir], center.vendor_key)
    assert build([run_dir], center.vendor_key) == first
    files = members(first)
    manifest = json.loads(files["manifest.json"])
    listed = {e["path"] for e in manifest["files"]}
    assert f"runs/{run_dir.name}/records.jsonl" in listed
    assert f"runs/{run_dir.name}/run.json" in listed
    assert "environment.json" in listed
    environment = json.loads(files["environment.json"])
    assert environment["distributions"]["onnxruntime"]
    assert any("onnxruntime_target" in f.get("path", "") for f in environment["driver_files"])


def test_honest_bundle_is_accepted_and_stored(run_dir: Path, center: Center) -> None:
    result = intake(center, build([run_dir], center.vendor_key))
    assert result.accepted, result.to_dict()
    from harness.center.intake_checks import CHECKS

    assert [c.state for c in result.checks] == ["pass"] * len(CHECKS)
    assert result.level == "limited"  # the representative scope's cap
    from harness.center.store import Store, target_history

    store = Store(center.db)
    with store.session() as session:
        history = target_history(session, "onnxruntime-cpu")
    store.close()
    assert [h["run_id"] for h in history] == [run_dir.name]
    assert history[0]["suites"]["operators"]["cases"] > 10


@pytest.mark.parametrize(("tamper", "check", "words"), [
    ("record", "digest", "does not match its sha256"),
    ("missing", "digest", "missing"),
    ("extra", "digest", "not in the manifest"),
])
def test_tampered_bundle_is_refused_naming_the_check(run_dir: Path, center: Center,
                                                     tamper: str, check: str,
                                                     words: str) -> None:
    data = build([run_dir], center.vendor_key)
    records = f"runs/{run_dir.name}/records.jsonl"

    def flip_first_failure(raw: bytes) -> bytes:  # one record's status changed
        lines = raw.split(b"\n")
        record = json.loads(lines[0])
        record["status"] = "fail" if record["status"] == "pass" else "pass"
        lines[0] = json.dumps(record).encode()
        return b"\n".join(lines)

    if tamper == "record":
        data = edit_member(data, records, flip_first_failure)
    elif tamper == "missing":
        data = edit_member(data, f"runs/{run_dir.name}/run.json", None)
    else:
        files = members(data)
        files[f"runs/{run_dir.name}/extra.txt"] = b"added after signing"
        data = repack(files)
    result = intake(center, data)
    assert not result.accepted
    assert result.failed.id == check
    assert words in result.failed.detail
    assert all(c.state == "not run" for c in result.checks[-5:])


def test_wrong_vendor_key_is_refused(run_dir: Path, center: Center, tmp_path: Path) -> None:
    from harness.center.vendor_keys import init_vendor_keys

    init_vendor_keys(tmp_path / "other", VENDOR)  # same name, a key the center never saw
    result = intake(center, build([run_dir], tmp_path / "other" / "vendor.key"))
    assert result.failed.id == "signature"
    assert "no registered vendor key" in result.failed.detail


def test_another_vendor_cannot_submit_a_bundle(run_dir: Path, center: Center) -> None:
    result = intake(center, build([run_dir], center.vendor_key), uploader="Other Vendor")
    assert result.failed.id == "signature"
    assert "cannot submit" in result.failed.detail


def test_a_bundle_naming_another_vendor_is_refused(run_dir: Path, center: Center) -> None:
    result = intake(center, build([run_dir], center.vendor_key, vendor="Somebody Else"))
    assert result.failed.id == "signature"
    assert "names vendor" in result.failed.detail


def test_replayed_bundle_and_replayed_runs_are_refused(run_dir: Path, center: Center) -> None:
    data = build([run_dir], center.vendor_key)
    accept(center, data)
    again = intake(center, data)
    assert again.failed.id == "replay"
    assert "already accepted as bundle #" in again.failed.detail
    assert "shipei db bundle get" in again.failed.detail
    # the same run re-packed with another report folder is a new bundle, not new evidence
    rebundled = intake(center, build([run_dir], center.vendor_key,
                                     reports=run_dir.parent.parent / "reports"))
    assert rebundled.failed.id == "replay"
    assert f"run {run_dir.name} was already submitted" in rebundled.failed.detail


def test_vendor_signed_edit_of_the_environment_is_caught(run_dir: Path, center: Center,
                                                         tmp_path: Path) -> None:
    """A vendor can sign anything: a run.json whose environment was edited no longer
    hashes to its platform id, and the environment check refuses it."""
    edited = copy_run(run_dir, tmp_path / "results")
    info = json.loads((edited / "run.json").read_text())
    info["environment"]["cpu_model"] = "Imaginary NPU 9000"
    (edited / "run.json").write_text(json.dumps(info))
    result = intake(center, build([edited], center.vendor_key))
    assert result.failed.id == "environment"
    assert "does not hash to its platform_id" in result.failed.detail


def test_records_of_another_run_are_caught(run_dir: Path, center: Center,
                                           tmp_path: Path) -> None:
    edited = copy_run(run_dir, tmp_path / "results")
    lines = (edited / "records.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["run_id"] = "some-other-run"
    lines[0] = json.dumps(record)
    (edited / "records.jsonl").write_text("\n".join(lines) + "\n")
    result = intake(center, build([edited], center.vendor_key))
    assert result.failed.id == "environment"
    assert "belongs to run 'some-other-run'" in result.failed.detail


def test_wrong_scope_is_incomplete(run_dir: Path, center: Center) -> None:
    result = intake(center, build([run_dir], center.vendor_key), scope="full")
    assert result.failed.id == "completeness"
    assert "needs no selection" in result.failed.detail


def test_oversized_and_garbage_uploads_are_refused(center: Center) -> None:
    from harness.center.intake import IntakeRequest, review
    from harness.center.store import Store

    store = Store(center.db)
    with store.session() as session:
        garbage = review(session, b"not a bundle", IntakeRequest(
            "framework", "representative", lambda label: {}, max_bytes=1 << 20))
        big = review(session, b"x" * 2048, IntakeRequest(
            "framework", "representative", lambda label: {}, max_bytes=1024))
    store.close()
    assert garbage.failed.id == "archive" and "gzip" in garbage.failed.detail
    assert big.failed.id == "archive" and "over the limit" in big.failed.detail


@pytest.mark.extended
def test_cli_bundle_intake_and_refusals(run_dir: Path, center: Center) -> None:
    """The CLI paths: shipei bundle (the same bytes as the API makes), shipei intake
    (accepted, then the replay refused with exit 1 and the check named), one-line usage
    errors."""
    loc = ["--results-dir", str(run_dir.parent), "--reports-dir", str(center.reports)]
    one = center.root / "one.tar.gz"
    done = shipei("bundle", run_dir.name, "--key", str(center.vendor_key), "-o", str(one), *loc)
    assert done.returncode == 0, done.stderr
    assert one.read_bytes() == build([run_dir], center.vendor_key)
    args = ["--profile", "framework", "--scope", "representative", "--db", center.db,
            "--report-dir", str(center.reports / "intake")]
    accepted = shipei("intake", str(one), *args)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted bundle" in accepted.stdout
    report = json.loads(next((center.reports / "intake").glob("*.json")).read_text())
    assert report["accepted"] and report["checks"][0]["title_zh"]
    assert "入库审查报告" in next((center.reports / "intake").glob("*.html")).read_text()
    replay = shipei("intake", str(one), *args)
    assert replay.returncode == 1
    assert "refused at check 'replay'" in replay.stdout
    missing = shipei("bundle", "no-such-run", "--key", str(center.vendor_key), "-o",
                     str(center.root / "x.tar.gz"), *loc)
    assert missing.returncode == 2 and "no-such-run" in error_line(missing)
    nodb = shipei("intake", str(one), "--profile", "framework", "--db",
                  f"sqlite:///{center.root / 'empty.db'}")
    assert nodb.returncode == 2 and "shipei db init" in error_line(nodb)


def test_a_distribution_found_twice_is_listed_as_the_version_python_imports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the bundle's environment must agree with the run's fingerprint, which reads
    # importlib.metadata.version: the first copy on sys.path
    from importlib import metadata

    from harness.center.bundle import installed_distributions

    for folder, version in (("first", "9.0.1"), ("second", "1.0.0")):
        info = tmp_path / folder / "shipei_twice_test-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: shipei-twice-test\n"
                                       f"Version: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "second"))
    monkeypatch.syspath_prepend(str(tmp_path / "first"))
    assert metadata.version("shipei-twice-test") == "9.0.1"
    assert installed_distributions()["shipei-twice-test"] == "9.0.1"
