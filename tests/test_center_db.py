"""The center database: Alembic migrations match the models, ``shipei db`` works with
no setup on SQLite, the questions (a target's history, regressions since a runtime
release, a vendor's certificates) answer from real runs, and the same on a real
PostgreSQL server when Debian's packages are installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.center.store import (
    Store,
    regressions_since,
    target_history,
    upgrade,
    vendor_certificates,
)
from tests.center_support import copy_run, error_line, shared_run, shipei


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
    assert "at revision 0002" in first.stdout
    assert shipei("db", "init", "--db", url).returncode == 0  # upgrading twice is a no-op
    bad = shipei("db", "history", "x", "--db", "mysql://nobody@nowhere/db")
    assert bad.returncode == 2 and "unsupported database" in error_line(bad)
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
