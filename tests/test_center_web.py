"""The web registry through Flask's test client on a real database with real bundles
and certificates: search and filters, certificate pages and their JSON, the server-side
re-check, revocation, target history, and every permission rule (a vendor cannot upload
for another vendor, cannot revoke, cannot see another vendor's unpublished bundle);
uploads are size-limited and refused before anything is stored. A real ``shipei serve``
killed with SIGKILL loses no committed submission (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from harness.center import audit
from harness.center.bundle import open_bundle
from harness.center.certify_bundle import certify_bundle
from harness.center.models import Audit, Bundle, IntakeReport
from harness.center.store import Store, add_vendor, now
from harness.center.vendor_keys import init_vendor_keys
from harness.center.web import create_app
from harness.cert.keys import load_private_key
from tests.center_support import (
    ADMIN_TOKEN,
    Center,
    Server,
    accept,
    build,
    copy_run,
    describe,
    make_center,
    shared_run,
)


@dataclass
class Registry:
    center: Center
    store: Store
    client: Any
    other_token: str
    bundles: list[bytes]
    certificates: list[str]
    run_dir: Path


def _audit_and_certify(center: Center, store: Store, data: bytes, run_id: str) -> str:
    opened = open_bundle(data)
    result = audit.audit_bundle(opened, "onnxruntime-cpu", 1, 7, 1.0, center.results,
                                center.reports, run_id)
    assert result.passed, result.to_dict()
    with store.session() as session:
        row = session.scalar(select(Bundle).where(Bundle.digest == opened.digest))
        session.add(Audit(bundle_id=row.id, seed=7, sample=result.to_dict()["sample"],
                          agreement=result.agreement, passed=True, detail=result.to_dict(),
                          created_at=now()))
    with store.session() as session:
        issued = certify_bundle(session, opened.digest, "framework", "representative",
                                load_private_key(center.center_key), "Test Center", None,
                                center.reports / "certificates", center.results)
    return issued.certificate_id


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("registry")
    center = make_center(root)
    run_dir = shared_run(tmp_path_factory)
    second = copy_run(run_dir, root / "vendor", "vendor-rep-2")
    bundles = [build([run_dir], center.vendor_key), build([second], center.vendor_key)]
    store = Store(center.db)
    public, _ = init_vendor_keys(root / "keys" / "other", "Other Vendor")
    with store.session() as session:
        _, other_token = add_vendor(session, "Other Vendor", public.read_text())
    certificates = []
    for n, data in enumerate(bundles):
        accept(center, data)
        certificates.append(_audit_and_certify(center, store, data, f"audit-web-{n}"))
    app = create_app(store, load_private_key(center.center_key), ADMIN_TOKEN, describe,
                     max_upload=1 << 20, center_name="Test Center")
    return Registry(center, store, app.test_client(), other_token, bundles, certificates,
                    run_dir)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_unpublished_certificates_are_hidden_until_the_admin_publishes(registry: Registry
                                                                        ) -> None:
    client, first, second = registry.client, *registry.certificates
    assert client.get("/api/certificates").json["certificates"] == []
    assert client.get(f"/api/certificates/{first}").status_code == 404
    admin = client.get("/api/certificates", headers=bearer(ADMIN_TOKEN)).json
    assert {c["certificate_id"] for c in admin["certificates"]} == {first, second}
    vendor = client.post(f"/api/certificates/{first}/publish",
                         headers=bearer(registry.center.token))
    assert vendor.status_code == 403
    for cid in (first, second):
        assert client.post(f"/api/certificates/{cid}/publish",
                           headers=bearer(ADMIN_TOKEN)).status_code == 200
    public = client.get("/api/certificates").json["certificates"]
    assert {c["certificate_id"] for c in public} == {first, second}
    assert all(c["evidence"] == "vendor" and c["vendor"].startswith("ACME") for c in public)


@pytest.mark.parametrize(("query", "hits"), [
    ("vendor=ACME", 2), ("vendor=Other", 0), ("chip=cpu", 2), ("chip=npu", 0),
    ("framework=onnxruntime", 2), ("framework=openvino", 0), ("level=limited", 2),
    ("level=full", 0), ("profile=framework", 2), ("profile=chip", 0),
    ("date_from=2000-01-01", 2), ("date_to=2000-01-01", 0),
])
def test_search_filters(registry: Registry, query: str, hits: int) -> None:
    for cid in registry.certificates:
        registry.client.post(f"/api/certificates/{cid}/publish", headers=bearer(ADMIN_TOKEN))
    found = registry.client.get(f"/api/certificates?{query}").json["certificates"]
    assert len(found) == hits
    page = registry.client.get(f"/?{query}").get_data(as_text=True)
    assert f"{hits} 份证书 / certificate(s)" in page


def test_certificate_page_and_json(registry: Registry) -> None:
    cid = registry.certificates[0]
    registry.client.post(f"/api/certificates/{cid}/publish", headers=bearer(ADMIN_TOKEN))
    data = registry.client.get(f"/api/certificates/{cid}").json
    assert data["predicate"]["provenance"]["source"] == "vendor"
    assert data["predicate"]["provenance"]["audit"]["seed"] == 7
    page = registry.client.get(f"/certificates/{cid}").get_data(as_text=True)
    for words in ("判定准则 / Criteria", "限制因素 / Blockers", "套件矩阵 / Suite matrix",
                  "verify-button", "crypto.subtle", "核心算子一致性"):
        assert words in page
    raw = registry.client.get(f"/certificates/{cid}.dsse.json").data
    assert raw == data["envelope"].encode()


def test_server_side_recheck_and_revocation(registry: Registry) -> None:
    from harness.cert.revocation import load_revocations

    client, cid = registry.client, registry.certificates[1]
    client.post(f"/api/certificates/{cid}/publish", headers=bearer(ADMIN_TOKEN))
    verdict = client.post(f"/api/certificates/{cid}/verify").json
    assert verdict["valid"], verdict
    assert any(line.startswith("chain: vendor attestation") for line in verdict["lines"])
    before = client.get("/revocations.dsse.json")
    vendor = client.post(f"/api/certificates/{cid}/revoke", json={"reason": "x"},
                         headers=bearer(registry.center.token))
    assert vendor.status_code == 403
    assert client.post(f"/api/certificates/{cid}/revoke", json={"reason": "x"}
                       ).status_code == 401
    done = client.post(f"/api/certificates/{cid}/revoke", json={"reason": "driver recalled"},
                       headers=bearer(ADMIN_TOKEN))
    assert done.status_code == 200
    after = client.get("/revocations.dsse.json")
    assert int(after.headers["X-Revocation-Sequence"]) > int(
        before.headers["X-Revocation-Sequence"])
    listed = registry.center.root / "list.json"
    listed.write_bytes(after.data)
    revoked = load_revocations(listed, load_private_key(registry.center.center_key)
                               .public_key())
    assert [e["certificate_id"] for e in revoked["revoked"]] == [cid]
    verdict = client.post(f"/api/certificates/{cid}/verify").json
    assert not verdict["valid"] and verdict["reason"].startswith("revoked:")
    assert "已吊销 / revoked" in client.get("/").get_data(as_text=True)


def test_target_history_page(registry: Registry) -> None:
    data = registry.client.get("/api/targets/onnxruntime-cpu", headers=bearer(ADMIN_TOKEN)).json
    assert len(data["runs"]) == 2
    page = registry.client.get("/targets/onnxruntime-cpu", headers=bearer(ADMIN_TOKEN))
    assert "<polyline" in page.get_data(as_text=True)


def _upload(registry: Registry, data: bytes, token: str | None) -> Any:
    headers = bearer(token) if token else {}
    return registry.client.post("/api/bundles", headers=headers, data={
        "profile": "framework", "scope": "representative",
        "bundle": (io.BytesIO(data), "bundle.tar.gz")})


def _reports(registry: Registry) -> int:
    with registry.store.session() as session:
        return session.scalar(select(func.count()).select_from(IntakeReport))


def test_upload_permissions_and_limits(registry: Registry, tmp_path: Path) -> None:
    before = _reports(registry)
    fresh = copy_run(registry.run_dir, tmp_path, "vendor-rep-3")
    data = build([fresh], registry.center.vendor_key)
    assert _upload(registry, data, None).status_code == 401
    assert _upload(registry, data, ADMIN_TOKEN).status_code == 403
    assert _upload(registry, b"x" * (2 << 20), registry.center.token).status_code == 413
    assert _reports(registry) == before  # refused before anything was stored
    other = _upload(registry, data, registry.other_token)
    assert other.status_code == 422 and other.json["failed_check"] == "signature"
    assert "cannot submit" in other.json["checks"][1]["detail"]
    mine = _upload(registry, data, registry.center.token)
    assert mine.status_code == 201, mine.json
    bundle_id = mine.json["bundle_id"]
    path = f"/api/bundles/{bundle_id}"
    assert registry.client.get(path).status_code == 404
    assert registry.client.get(path, headers=bearer(registry.other_token)).status_code == 404
    assert registry.client.get(path, headers=bearer(registry.center.token)).status_code == 200
    assert registry.client.get(path, headers=bearer(ADMIN_TOKEN)).json["accepted"]
    replay = _upload(registry, data, registry.center.token)
    assert replay.status_code == 422 and replay.json["failed_check"] == "replay"


def _kill_loses_nothing(center: Center, run_dir: Path, tmp_path: Path) -> None:
    data = build([copy_run(run_dir, tmp_path, "vendor-kill")], center.vendor_key)
    server = Server(center)
    try:
        status, answer = server.upload(data, center.token)
        assert status == 201, answer
    finally:
        server.kill()  # SIGKILL right after the answer: no shutdown, no flush
    assert server.process.returncode == -9
    store = Store(center.db)
    with store.session() as session:
        row = session.get(Bundle, answer["bundle_id"])
        assert row is not None and row.data == data
        assert [r.run_id for r in row.runs] == ["vendor-kill"]
    store.close()
    again = Server(center)
    try:
        status, shown = again.request(f"/api/bundles/{answer['bundle_id']}", token=center.token)
        assert status == 200 and shown["digest"] == answer["digest"]
    finally:
        again.kill()


def test_killed_server_loses_no_committed_submission(tmp_path_factory: pytest.TempPathFactory,
                                                     tmp_path: Path) -> None:
    _kill_loses_nothing(make_center(tmp_path / "c"), shared_run(tmp_path_factory), tmp_path)


@pytest.mark.slow
def test_killed_server_on_postgresql(tmp_path_factory: pytest.TempPathFactory,
                                     tmp_path: Path) -> None:
    from tests.center_support import postgres_url

    url, stop = postgres_url(tmp_path_factory.mktemp("pg-kill"))
    try:
        _kill_loses_nothing(make_center(tmp_path / "c", url), shared_run(tmp_path_factory),
                            tmp_path)
    finally:
        stop()


def test_chain_check_refuses_a_foreign_key_or_other_records(registry: Registry) -> None:
    import copy

    from harness.center.certify_bundle import bundle_chain_lines
    from harness.cert.verify import VerificationError

    data = registry.client.get(f"/api/certificates/{registry.certificates[0]}",
                               headers=bearer(ADMIN_TOKEN)).json
    statement = {"predicate": data["predicate"]}
    with registry.store.session() as session:
        row = session.scalar(select(Bundle).where(
            Bundle.digest == data["predicate"]["provenance"]["vendor_attestation"]["sha256"]))
        bundle_bytes, own_pem = row.data, row.vendor.public_pem
    assert bundle_chain_lines(bundle_bytes, own_pem, statement)[0].startswith("chain: vendor")
    other_pem = (registry.center.root / "keys" / "other" / "vendor.pub").read_text()
    with pytest.raises(VerificationError, match="chain: signature"):
        bundle_chain_lines(bundle_bytes, other_pem, statement)
    edited = copy.deepcopy(statement)
    edited["predicate"]["runs"][0]["records_sha256"] = "0" * 64
    with pytest.raises(VerificationError, match="not the one the vendor attested"):
        bundle_chain_lines(bundle_bytes, own_pem, edited)
    with pytest.raises(VerificationError, match="not the attestation the certificate cites"):
        bundle_chain_lines(registry.bundles[1], own_pem, statement)


def test_revocation_list_is_renewed_before_it_goes_stale(registry: Registry) -> None:
    from datetime import UTC, datetime

    from harness.center import revocations
    from harness.cert.revocation import check_fresh, load_revocations

    key = load_private_key(registry.center.center_key)
    with registry.store.session() as session:
        first = revocations.current_list(session, key)
        assert revocations.current_list(session, key).sequence == first.sequence
        first.next_update = "2000-01-01T00:00:00+00:00"  # as if the list had gone stale
    with registry.store.session() as session:
        renewed = revocations.current_list(session, key)
        assert renewed.sequence == first.sequence + 1
        envelope = renewed.envelope
    path = registry.center.root / "renewed.json"
    path.write_bytes(envelope)
    data = load_revocations(path, key.public_key())
    check_fresh(data, datetime.now(UTC), seen=first.sequence)  # current, not a rollback


def test_cert_verify_checks_the_vendor_chain_from_the_command_line(
        registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``shipei cert verify --bundle FILE --vendor-pubkey FILE``: the chain vendor
    attestation -> center certificate, offline; the wrong vendor key is refused."""
    from harness.cli.main import main

    certificate = registry.center.reports / "certificates" / \
        f"{registry.certificates[0]}.dsse.json"
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(registry.bundles[0])
    common = ["cert", "verify", str(certificate), "--pubkey",
              str(registry.center.keys / "center.pub"), "--no-revocation-check",
              "--bundle", str(bundle), "--vendor-pubkey"]
    assert main([*common, str(registry.center.keys / "vendor" / "vendor.pub")]) == 0
    assert "chain: vendor" in capsys.readouterr().out
    assert main([*common, str(registry.center.keys / "other" / "vendor.pub")]) == 1
    assert "chain: signature" in capsys.readouterr().err
