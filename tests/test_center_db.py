"""The center database: Alembic migrations match the models, ``shipei db`` works with
no setup on SQLite, the questions (a target's history, regressions since a runtime
release, a vendor's certificates) answer from real runs, and the same on a real
PostgreSQL server when Debian's packages are installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.center.store import (
    Store,
    regressions_since,
    target_history,
    upgrade,
    vendor_certificates,
)
from tests.center_support import Center, copy_run, error_line, shared_run, shipei


def test_migrations_create_exactly_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from harness.center.models import Base

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    store = Store(url)
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    store.close()
    assert diff == []


def test_db_cli_init_help_and_refusals(tmp_path: Path) -> None:
    assert shipei("db", "--help").returncode == 0
    url = f"sqlite:///{tmp_path / 'sub' / 'center.db'}"
    first = shipei("db", "init", "--db", url)
    assert first.returncode == 0, first.stderr
    from alembic.script import ScriptDirectory

    from harness.center.store import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert f"at revision {head}" in first.stdout
    assert shipei("db", "init", "--db", url).returncode == 0  # upgrading twice is a no-op
    bad = shipei("db", "history", "x", "--db", "mysql://nobody@nowhere/db")
    assert bad.returncode == 2 and "unsupported database" in error_line(bad)
    made = shipei("keys", "init", "--role", "vendor", "--vendor", "V", "--dir",
                  str(tmp_path / "vk"))
    hint = "shipei db vendor-add NAME --pubkey FILE"
    assert made.returncode == 0 and hint in made.stdout  # the command the hint names works:
    added = shipei("db", "vendor-add", "V", "--pubkey", str(tmp_path / "vk" / "vendor.pub"),
                   "--db", url)
    assert added.returncode == 0 and "token:" in added.stdout, added.stderr
    pubkey = tmp_path / "not.pub"
    pubkey.write_text("not a key")
    refused = shipei("db", "vendor-add", "V", "--pubkey", str(pubkey), "--db", url)
    assert refused.returncode == 2 and "not a PEM public key" in error_line(refused)


def _fill(store: Store, run_dir: Path, root: Path) -> tuple[str, list[str]]:
    """Two runs of one target: an older runtime release where every operator case
    passed, and a newer one where the first two operators' cases fail."""
    from harness.center.intake import store_run

    old = copy_run(run_dir, root, "old-release")
    new = copy_run(run_dir, root, "new-release")
    info = json.loads((old / "run.json").read_text())
    info["targets"]["onnxruntime-cpu"]["runtime_version"] = "1.9.0"  # sorts before 1.10
    (old / "run.json").write_text(json.dumps(info))
    info = json.loads((new / "run.json").read_text())
    info["targets"]["onnxruntime-cpu"]["runtime_version"] = "1.10.0"
    (new / "run.json").write_text(json.dumps(info))
    records = [json.loads(line) for line in (new / "records.jsonl").read_text().splitlines()]
    passing_ops = sorted({r["tags"]["op_type"] for r in records
                          if r["suite"] == "operators" and r["status"] == "pass"})
    broken = passing_ops[:2]
    for r in records:
        if r["suite"] == "operators" and r["tags"].get("op_type") in broken:
            r["status"] = "fail"
    (new / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with store.session() as session:
        store_run(session, old, None)
        store_run(session, new, None)
    return "onnxruntime-cpu", broken


def _questions(url: str, run_dir: Path, root: Path) -> None:
    upgrade(url)
    store = Store(url)
    target, broken = _fill(store, run_dir, root)
    with store.session() as session:
        history = target_history(session, target)
        found = regressions_since(session, "onnxruntime", "1.10")
        none_after = regressions_since(session, "onnxruntime", "2.0")
        certs = vendor_certificates(session, "nobody")
    store.close()
    assert [h["runtime_version"] for h in history] == ["1.9.0", "1.10.0"]
    assert history[0]["suites"]["operators"]["pass_rate"] \
        > history[1]["suites"]["operators"]["pass_rate"]
    assert found == [{"target": target, "operators": broken,
                      "before": {"run_id": "old-release", "version": "1.9.0"},
                      "after": {"run_id": "new-release", "version": "1.10.0"}}]
    assert none_after == [] and certs == []


def test_questions_on_sqlite(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    _questions(f"sqlite:///{tmp_path / 'q.db'}", shared_run(tmp_path_factory), tmp_path)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.center_support import postgres_url

    url, stop = postgres_url(tmp_path_factory.mktemp("pg"))
    yield url
    stop()


def test_questions_on_postgresql(postgres: str, tmp_path_factory: pytest.TempPathFactory,
                                 tmp_path: Path) -> None:
    _questions(postgres, shared_run(tmp_path_factory), tmp_path)


def test_serve_and_audit_refusals(tmp_path: Path) -> None:
    """One line and exit 2: a server without the center key, an audit of a bundle that
    intake never accepted, an audit with a nonsensical sample."""
    from tests.center_support import make_center

    center = make_center(tmp_path)
    nokey = shipei("serve", "--db", center.db, "--key", str(tmp_path / "absent.key"))
    assert nokey.returncode == 2 and "does not exist" in error_line(nokey)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"junk")
    refused = shipei("audit", str(junk), "--sample", "2", "--db", center.db)
    assert refused.returncode == 2 and "archive: not a gzip" in error_line(refused)


def _concurrent_first_fetches(url: str) -> None:
    """Eight requests find no revocation list at once: they all get the one list the
    first of them signed (before: HTTP 500, UNIQUE revocation_lists.sequence, and
    several lists signed in the same second)."""
    import threading

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sqlalchemy import select

    from harness.center import revocations
    from harness.center.models import RevocationList

    upgrade(url)
    store = Store(url)
    key = Ed25519PrivateKey.generate()
    barrier = threading.Barrier(8)
    served: list[bytes] = []
    errors: list[str] = []

    def fetch() -> None:
        barrier.wait()
        try:
            with store.session() as session:
                served.append(revocations.current_list(session, key).envelope)
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        sequences = [r.sequence for r in session.scalars(select(RevocationList))]
    store.close()
    assert errors == []
    assert sequences == [1]
    assert len(served) == 8 and len(set(served)) == 1


def _concurrent_revocations(url: str) -> None:
    """Eight certificates revoked at once: each revocation gets its own sequence and list,
    and the newest list revokes all eight."""
    import json as json_module
    import threading

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.center import revocations
    from harness.cert.dsse import Envelope

    store = Store(url)
    key = Ed25519PrivateKey.generate()
    ids = [f"SP-20260101-0000000{n}" for n in range(8)]
    barrier = threading.Barrier(len(ids))
    errors: list[str] = []

    def revoke(cid: str) -> None:
        barrier.wait()
        try:
            with store.session() as session:
                revocations.revoke(session, key, cid, "recalled", known={cid})
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=revoke, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        newest = revocations.current_list(session, key)
        latest = revocations.latest_sequence(session)
    store.close()
    assert errors == []
    payload = json_module.loads(Envelope.parse(newest.envelope).body)
    assert sorted(e["certificate_id"] for e in payload["revoked"]) == ids
    assert latest == newest.sequence == 1 + len(ids)  # the first fetch's list, then 8


def test_concurrent_first_fetches_of_the_revocation_list_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    _concurrent_first_fetches(url)
    _concurrent_revocations(url)


def test_concurrent_first_fetches_of_the_revocation_list_on_postgresql(postgres: str) -> None:
    _concurrent_first_fetches(postgres)
    _concurrent_revocations(postgres)


def test_a_list_file_from_before_the_database_is_adopted(tmp_path: Path) -> None:
    """A center that revoked with list files and then keeps a database: 'cert revoke
    --db' carries the file's revocations into the database and continues its sequence,
    so the one list revokes both and a verifier that saw the file's list accepts it."""
    from harness.center import revocations
    from harness.cert.revocation import REVOCATIONS_FILE, load_revocations, renew, revoke
    from tests.cert_support import Center as CertCenter
    from tests.test_bad_inputs import _in_process

    center = CertCenter(tmp_path)
    first, second = (center.write(center.statement()) for _ in range(2))
    ids = [p.name.removesuffix(".dsse.json") for p in (first, second)]
    listed = center.certs / REVOCATIONS_FILE
    revoke(listed, center.key, ids[0], "recalled before the database")
    renew(listed, center.key)  # file list #2
    url = f"sqlite:///{tmp_path / 'center.db'}"
    upgrade(url)
    outcome = _in_process(["cert", "revoke", ids[1], "--reason", "recalled", "--key",
                           str(tmp_path / "keys" / "center.key"), "--certificates-dir",
                           str(center.certs), "--registry", str(tmp_path / "none"), "--db",
                           url])
    assert outcome.code == 0, outcome.stderr
    data = load_revocations(listed, center.public)
    assert [e["certificate_id"] for e in data["revoked"]] == ids
    assert data["sequence"] > 2
    store = Store(url)
    with store.session() as session:
        assert set(revocations.revoked(session)) == set(ids)
        assert revocations.latest_sequence(session) == data["sequence"]
    store.close()
    other = tmp_path / "other"
    from harness.cert.keys import init_keys

    init_keys(other, "Another center")
    foreign = _in_process(["cert", "revoke", ids[1], "--reason", "x", "--key",
                           str(other / "center.key"), "--certificates-dir", str(center.certs),
                           "--registry", str(tmp_path / "none"), "--db", url])
    assert foreign.code == 2 and "not signed by this key" in foreign.stderr


# ---------------------------------------------------------------- certify --bundle

def _audited(center: Center, run_dir: Path, name: str) -> tuple[Path, str]:
    """A bundle of ``run_dir`` accepted at intake, with a passing audit on record (the
    audit re-run has its own tests), written to ``name``; its file and digest."""
    from harness.center.bundle import open_bundle
    from harness.center.models import Audit, Bundle
    from harness.center.store import now
    from tests.center_support import accept, build

    data = build([run_dir], center.vendor_key)
    accept(center, data)
    digest = open_bundle(data).digest
    store = Store(center.db)
    with store.session() as session:
        from sqlalchemy import select

        bundle = session.scalar(select(Bundle).where(Bundle.digest == digest))
        session.add(Audit(bundle_id=bundle.id, seed=7, sample=[], agreement=1.0, passed=True,
                          detail={"min_agreement": 0.95}, created_at=now()))
    store.close()
    path = center.root / name
    path.write_bytes(data)
    return path, digest


def _certify_args(center: Center, bundle: Path) -> list[str]:
    return ["certify", "--bundle", str(bundle), "--profile", "framework", "--scope",
            "representative", "--key", str(center.center_key), "--db", center.db,
            "--certificates-dir", str(center.root / "certs"), "--results-dir",
            str(center.results)]


def _issued_id(out: subprocess.CompletedProcess) -> str:
    import re

    found = re.search(r"\((SP-[0-9A-Z-]+), level", out.stdout)
    assert found, out.stdout + out.stderr
    return found.group(1)


@pytest.mark.extended
def test_certify_bundle_writes_the_list_refuses_twice_and_shares_one_revocation_list(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The bundle path: the certificate verifies as the docs say (its revocation list is
    beside it), the same bundle is not certified twice, the registry hands the bundle
    back, and both revoke commands change the one list the database and the file share."""
    from harness.center import revocations
    from harness.cert.keys import load_public_key
    from harness.cert.revocation import REVOCATIONS_FILE, load_revocations
    from tests.center_support import make_center

    center = make_center(tmp_path)
    bundle, _ = _audited(center, shared_run(tmp_path_factory), "bundle.tar.gz")
    certs = center.root / "certs"
    env = {"SHIPEI_STATE_DIR": str(tmp_path / "state")}
    zero = shipei(*_certify_args(center, bundle), "--valid-days", "0", cwd=tmp_path)
    assert zero.returncode == 2  # not silently the profile's 365
    assert "--valid-days must be between 1 and 365" in error_line(zero)
    first = shipei(*_certify_args(center, bundle), cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    cid = _issued_id(first)
    assert (certs / REVOCATIONS_FILE).is_file()
    verify = ["cert", "verify", str(certs / f"{cid}.dsse.json"), "--pubkey",
              str(center.keys / "center.pub")]
    ok = shipei(*verify, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert [p.name for p in certs.iterdir() if p.name.startswith(".")] == []

    again = shipei(*_certify_args(center, bundle), cwd=tmp_path, env=env)
    assert again.returncode == 2
    assert f"is already certified as {cid}" in error_line(again)
    assert len(list(certs.glob("SP-*.dsse.json"))) == 1

    got = shipei("db", "bundle", "get", "1", "-o", str(tmp_path / "back.tar.gz"), "--db",
                 center.db, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.tar.gz").read_bytes() == bundle.read_bytes()

    # db revoke: the certificate file beside the list no longer verifies, its page says so
    revoked = shipei("db", "revoke", cid, "--reason", "driver recalled", "--key",
                     str(center.center_key), "--db", center.db, "--certificates-dir",
                     str(certs), cwd=tmp_path, env=env)
    assert revoked.returncode == 0, revoked.stderr
    after = shipei(*verify, cwd=tmp_path, env=env)
    assert after.returncode == 1 and "revoked: certificate" in after.stderr
    assert "已吊销" in (certs / f"{cid}.html").read_text(encoding="utf-8")

    # revoked, the bundle may be certified again; cert revoke goes to the same list
    second = shipei(*_certify_args(center, bundle), cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    cid2 = _issued_id(second)
    by_file = shipei("cert", "revoke", cid2, "--reason", "second thoughts", "--key",
                     str(center.center_key), "--db", center.db, "--certificates-dir",
                     str(certs), "--registry", str(tmp_path / "no-registry"), cwd=tmp_path,
                     env=env)
    assert by_file.returncode == 0, by_file.stderr
    listed = load_revocations(certs / REVOCATIONS_FILE, load_public_key(center.keys /
                                                                        "center.pub"))
    store = Store(center.db)
    with store.session() as session:
        in_db = revocations.revoked(session)
        latest = revocations.latest_sequence(session)
    store.close()
    assert set(in_db) == {cid, cid2}
    assert {e["certificate_id"] for e in listed["revoked"]} == {cid, cid2}
    assert listed["sequence"] == latest


def test_certify_bundle_of_a_not_compatible_target_exits_1(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A vendor run whose every operator case failed: the certificate says 不兼容 and the
    command says so with exit 1, as 'certify --help' promises."""
    from tests.center_support import make_center

    center = make_center(tmp_path)
    failing = copy_run(shared_run(tmp_path_factory), tmp_path / "vendor", "failing-run")
    records = [json.loads(line) for line in
               (failing / "records.jsonl").read_text().splitlines()]
    for record in records:
        if record["suite"] == "operators":
            record["status"] = "fail"
    (failing / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from harness.results.build import count_statuses
    from harness.results.record_files import latest_attempts

    info = json.loads((failing / "run.json").read_text())
    info["counts"] = count_statuses(latest_attempts(records))  # as the run would write them
    (failing / "run.json").write_text(json.dumps(info))
    bundle, _ = _audited(center, failing, "failing.tar.gz")
    rest = _certify_args(center, bundle)[3:]
    by_db = shipei("db", "certify", str(bundle), *rest, cwd=tmp_path)
    assert by_db.returncode == 1, by_db.stdout + by_db.stderr
    assert "level none" in by_db.stdout and "不兼容" in by_db.stdout
    revoke = shipei("db", "revoke", _issued_id(by_db), "--reason", "to issue it again",
                    "--key", str(center.center_key), "--db", center.db,
                    "--certificates-dir", str(tmp_path / "certs"), cwd=tmp_path)
    assert revoke.returncode == 0, revoke.stderr
    out = shipei(*_certify_args(center, bundle), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "level none" in out.stdout and "不兼容" in out.stdout


@pytest.mark.extended
def test_certify_bundle_on_a_busy_database_leaves_nothing_signed(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Another writer holds the SQLite database for longer than the busy timeout: the
    certification fails with one line, and no certificate file (or staging folder) is
    left that the registry does not hold and could not revoke."""
    import contextlib
    import sqlite3

    from tests.center_support import make_center

    center = make_center(tmp_path)
    bundle, _ = _audited(center, shared_run(tmp_path_factory), "bundle.tar.gz")
    with contextlib.closing(sqlite3.connect(tmp_path / "center.db",
                                            isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # the write lock, held until the end
        out = shipei(*_certify_args(center, bundle), cwd=tmp_path)
        other.execute("ROLLBACK")
    assert out.returncode == 2
    assert "database is locked; no certificate was issued" in error_line(out)
    certs = center.root / "certs"
    assert not certs.exists() or list(certs.iterdir()) == []


def test_a_rolled_back_certification_leaves_no_certificate_file(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The files appear only when the registry's row is committed: a transaction that
    fails after signing (a busy database, say) leaves nothing signed behind."""
    from harness.center.certify_bundle import certify_bundle
    from harness.cert.keys import load_private_key
    from tests.center_support import make_center

    center = make_center(tmp_path)
    _, digest = _audited(center, shared_run(tmp_path_factory), "bundle.tar.gz")
    certs = tmp_path / "certs"
    key = load_private_key(center.center_key)
    store = Store(center.db)

    class Busy(Exception):
        pass

    with pytest.raises(Busy), store.session() as session:
        issued = certify_bundle(session, digest, "framework", "representative", key, "T",
                                None, certs, center.results)
        assert not issued.certificate.exists()
        raise Busy("database is locked")
    assert list(certs.iterdir()) == []
    with store.session() as session:
        issued = certify_bundle(session, digest, "framework", "representative", key, "T",
                                None, certs, center.results)
    store.close()
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        [issued.certificate.name, issued.page.name])
