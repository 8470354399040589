"""The web registry through Flask's test client on a real database with real bundles
and certificates: search and filters, certificate pages and their JSON, the server-side
re-check, revocation, target history, and every permission rule (a vendor cannot upload
for another vendor, cannot revoke, cannot see another vendor's unpublished bundle);
uploads are size-limited and refused before anything is stored. A real ``shipei serve``
killed with SIGKILL loses no committed submission (SQLite and PostgreSQL). The
application is in blueprints by concern; waitress serves it; a cookie-authenticated post
from another origin (another port of the same host included) is refused (CSRF), cookies
are Secure over TLS and every answer carries the security headers; the upload's profile
is a packaged name, never a path; ``%`` and ``_`` in a search are literal; the admin
rotates and revokes vendor tokens; a vendor reads its own refused intake reports."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from harness.center.bundle import open_bundle
from harness.center.certify_bundle import certify_bundle
from harness.center.models import Bundle, IntakeReport
from harness.center.store import Store, add_vendor
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
    shipei,
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


def _audit_and_certify(center: Center, store: Store, data: bytes, n: int) -> str:
    """``shipei audit`` (a real re-run of one sampled case), then the certificate."""
    path = center.root / f"bundle-{n}.tar.gz"
    path.write_bytes(data)
    audited = shipei("audit", str(path), "--sample", "1", "--seed", "7", "--min-agreement",
                     "1", "--db", center.db, *center.loc(), "--report-dir",
                     str(center.reports / "audit"))
    assert audited.returncode == 0, audited.stdout + audited.stderr
    with store.session() as session:
        issued = certify_bundle(session, open_bundle(data).digest, "framework",
                                "representative", load_private_key(center.center_key),
                                "Test Center", None, center.reports / "certificates",
                                center.results)
    return issued.certificate_id


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("registry")
    center = make_center(root)
    run_dir = shared_run(tmp_path_factory)
    second = shared_run(tmp_path_factory, "vendor-rep-2")  # a copy would be a replay
    bundles = [build([run_dir], center.vendor_key), build([second], center.vendor_key)]
    store = Store(center.db)
    public, _ = init_vendor_keys(root / "keys" / "other", "Other Vendor")
    with store.session() as session:
        _, other_token = add_vendor(session, "Other Vendor", public.read_text())
    certificates = []
    for n, data in enumerate(bundles):
        accept(center, data)
        certificates.append(_audit_and_certify(center, store, data, n))
    app = create_app(store, load_private_key(center.center_key), ADMIN_TOKEN, describe,
                     max_upload=1 << 20, center_name="Test Center")
    return Registry(center, store, app.test_client(), other_token, bundles, certificates,
                    run_dir)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.extended
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
                  "verify-button", "crypto.subtle", "核心算子"):
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


def test_upload_permissions_and_limits(registry: Registry,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    before = _reports(registry)
    fresh = shared_run(tmp_path_factory, "vendor-rep-3")
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
    # the registry hands the accepted bytes back (for shipei audit and certify --bundle),
    # to the same people who may see the bundle
    archive = f"{path}/archive"
    assert registry.client.get(archive).status_code == 404
    assert registry.client.get(archive, headers=bearer(registry.other_token)).status_code == 404
    handed = registry.client.get(archive, headers=bearer(registry.center.token))
    assert handed.status_code == 200 and handed.data == data
    assert handed.mimetype == "application/gzip"
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


@pytest.mark.extended
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


# ---------------------------------------------------------------- the web, production-grade


def test_the_application_is_in_blueprints_by_concern(registry: Registry) -> None:
    app = registry.client.application
    assert set(app.blueprints) == {"pages", "uploads", "admin", "api", "scenarios", "lab"}
    endpoint = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoint["/"] == "pages.search"
    assert endpoint["/api/bundles"] == "uploads.upload"
    assert endpoint["/api/certificates/<cid>/revoke"] == "admin.revoke"
    assert endpoint["/api/certificates/<cid>/verify"] == "api.verify"
    assert endpoint["/api/scenarios/<int:demand_id>"] == "scenarios.matching"
    assert endpoint["/api/lab"].startswith("lab.")


def test_every_answer_carries_the_security_headers(registry: Registry) -> None:
    page = registry.client.get("/upload")
    headers = page.headers
    csp = headers["Content-Security-Policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<style nonce="{nonce}">' in page.get_data(as_text=True)
    for part in ("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"):
        assert part in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in headers  # plain HTTP: no HSTS
    assert "Secure" not in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    assert registry.client.get("/api/certificates").headers["X-Frame-Options"] == "DENY"
    over_tls = registry.client.get("/upload", base_url="https://registry.example")
    assert over_tls.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "; Secure" in over_tls.headers["Set-Cookie"]
    assert over_tls.headers["Content-Security-Policy"] != csp  # a nonce per answer


def _form_token(client: Any, base: str = "http://localhost") -> str:
    page = client.get("/upload", base_url=base).get_data(as_text=True)
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def test_a_cookie_authenticated_post_from_another_origin_is_refused(
        registry: Registry) -> None:
    from flask.testing import FlaskClient

    browser: FlaskClient = registry.client.application.test_client()
    browser.set_cookie("shipei_token", ADMIN_TOKEN)  # the admin signed in earlier
    cid = registry.certificates[0]
    path = f"/api/certificates/{cid}/publish"
    token = _form_token(browser)
    other_port = browser.post(path, data={"csrf_token": token},
                              headers={"Origin": "http://localhost:8081"})
    assert other_port.status_code == 403
    assert other_port.json["detail"].startswith("csrf: a form posted from "
                                                "http://localhost:8081 is not accepted")
    no_token = browser.post(path, headers={"Origin": "http://localhost"})
    assert no_token.status_code == 403 and "token is missing" in no_token.json["detail"]
    unnamed = browser.post(path, data={"csrf_token": token})
    assert unnamed.status_code == 403  # neither Origin nor Referer
    same = browser.post(path, data={"csrf_token": token},
                        headers={"Origin": "http://localhost"})
    assert same.status_code == 200, same.json
    by_referer = browser.post(path, data={"csrf_token": token},
                              headers={"Referer": "http://localhost/upload"})
    assert by_referer.status_code == 200
    form_upload = browser.post("/upload", data={"token": registry.center.token,
                                                "bundle": (io.BytesIO(b"x"), "b.tar.gz")},
                               headers={"Origin": "http://evil.example"})
    assert form_upload.status_code == 403
    # an API client authenticates with a bearer token a browser never adds by itself
    assert registry.client.post(path, headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_the_vendor_cookie_is_secure_over_tls(registry: Registry) -> None:
    browser = registry.client.application.test_client()
    base = "https://registry.example"
    answer = browser.post("/upload", base_url=base, headers={"Origin": base}, data={
        "token": registry.center.token, "csrf_token": _form_token(browser, base),
        "profile": "framework", "bundle": (io.BytesIO(b"not a bundle"), "b.tar.gz")})
    assert answer.status_code == 422
    cookie = next(c for c in answer.headers.getlist("Set-Cookie")
                  if c.startswith("shipei_token="))
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_the_upload_profile_is_a_packaged_name_never_a_path(registry: Registry) -> None:
    from harness.cert.profile import PROFILES_DIR

    before = _reports(registry)
    for profile in (str(PROFILES_DIR / "framework.toml"), "../../pyproject", "/etc/x.toml"):
        answer = registry.client.post("/api/bundles", headers=bearer(registry.center.token),
                                      data={"profile": profile, "scope": "full",
                                            "bundle": (io.BytesIO(b"x"), "b.tar.gz")})
        assert answer.status_code == 400, answer.json
        # the refusal quotes at most 80 characters of what was sent (an installed
        # package's path is longer)
        assert answer.json["detail"].startswith(f"profile: {profile[:80]!r} is not a packaged "
                                                "profile (one of chip, framework")
    assert _reports(registry) == before
    page = registry.client.get("/upload").get_data(as_text=True)
    assert '<select name="profile" id="profile">' in page


def test_percent_and_underscore_in_a_search_are_literal(registry: Registry) -> None:
    for cid in registry.certificates:
        registry.client.post(f"/api/certificates/{cid}/publish", headers=bearer(ADMIN_TOKEN))
    found = registry.client.get("/api/certificates?chip=cpu").json["certificates"]
    assert len(found) == 2
    for query in ("vendor=%25", "chip=c_u", "chip=%25", "framework=_"):
        assert registry.client.get(f"/api/certificates?{query}").json["certificates"] == [], \
            query


def test_the_admin_rotates_and_revokes_a_vendor_token(registry: Registry) -> None:
    client, old = registry.client, registry.other_token

    def who(token: str) -> int:  # 400 "no file": a vendor; 401: nobody
        return client.post("/api/bundles", headers=bearer(token), data={}).status_code

    assert who(old) == 400
    assert client.post("/api/vendors/Other Vendor/token/rotate",
                       headers=bearer(old)).status_code == 403
    assert client.post("/api/vendors/Nobody/token/rotate",
                       headers=bearer(ADMIN_TOKEN)).status_code == 404
    rotated = client.post("/api/vendors/Other Vendor/token/rotate", headers=bearer(ADMIN_TOKEN))
    assert rotated.status_code == 200
    new = rotated.json["token"]
    assert new != old and who(old) == 401 and who(new) == 400
    assert client.post("/api/vendors/Other Vendor/token/revoke",
                       headers=bearer(ADMIN_TOKEN)).json == {"vendor": "Other Vendor",
                                                             "revoked": True}
    assert who(new) == 401
    again = client.post("/api/vendors/Other Vendor/token/rotate", headers=bearer(ADMIN_TOKEN))
    registry.other_token = again.json["token"]
    assert who(registry.other_token) == 400


def test_vendor_token_rotation_from_the_command_line(
        registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    db = ["--db", registry.center.db]
    assert main(["db", "vendor-token", "rotate", "Other Vendor", *db]) == 0
    token = capsys.readouterr().out.split("token:")[1].split()[0]
    assert registry.client.post("/api/bundles", headers=bearer(token)).status_code == 400
    assert registry.client.post("/api/bundles", headers=bearer(registry.other_token)
                                ).status_code == 401
    assert main(["db", "vendor-token", "revoke", "Other Vendor", *db]) == 0
    assert registry.client.post("/api/bundles", headers=bearer(token)).status_code == 401
    assert main(["db", "vendor-token", "revoke", "Nobody", *db]) == 2
    assert capsys.readouterr().err.strip().endswith("no vendor named 'Nobody'")
    assert main(["db", "vendor-token", "rotate", "Other Vendor", *db]) == 0
    registry.other_token = capsys.readouterr().out.split("token:")[1].split()[0]


def test_a_vendor_reads_its_own_refused_intake_report(registry: Registry) -> None:
    refused = _upload(registry, b"not a bundle", registry.center.token)
    assert refused.status_code == 422 and refused.json["failed_check"] == "archive"
    path = f"/api/intake/{refused.json['report_id']}"
    mine = registry.client.get(path, headers=bearer(registry.center.token))
    assert mine.status_code == 200
    assert mine.json["failed_check"] == "archive" and not mine.json["accepted"]
    assert registry.client.get(path).status_code == 404
    assert registry.client.get(path, headers=bearer(registry.other_token)).status_code == 404
    assert registry.client.get(path, headers=bearer(ADMIN_TOKEN)).status_code == 200
    page = registry.client.get(path.removeprefix("/api"), headers=bearer(registry.center.token))
    assert "已拒绝 / Refused" in page.get_data(as_text=True)


def test_shipei_serve_runs_on_waitress_and_refuses_a_post_from_another_port(
        tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    center = make_center(tmp_path / "c")
    server = Server(center)
    try:
        with urllib.request.urlopen(server.url + "/api/certificates", timeout=60) as answer:
            assert answer.headers["Server"] == "waitress"
        request = urllib.request.Request(
            server.url + "/upload", data=b"token=x", method="POST",
            headers={"Cookie": f"shipei_token={center.token}",
                     "Origin": f"http://127.0.0.1:{server.port + 1}",
                     "Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 403
    finally:
        server.kill()


@pytest.mark.parametrize("trusted", [True, False])
def test_behind_a_trusted_proxy_the_forwarded_scheme_makes_cookies_secure(
        registry: Registry, trusted: bool) -> None:
    """waitress with ``shipei serve``'s options: X-Forwarded-Proto counts only from the
    proxy named with --trusted-proxy."""
    import argparse
    import threading
    import urllib.request

    from waitress import create_server

    from harness.cli.cmd_serve import _server_options

    args = argparse.Namespace(host="127.0.0.1", port=0, threads=2, max_upload=1 << 20,
                              trusted_proxy="127.0.0.1" if trusted else None)
    server = create_server(registry.client.application, **_server_options(args))
    stop = threading.Event()

    def serve() -> None:  # waitress's loop, one turn at a time, until told to stop
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.effective_port}/upload",
                                         headers={"X-Forwarded-Proto": "https"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            hsts, cookie = answer.headers["Strict-Transport-Security"], answer.headers[
                "Set-Cookie"]
    finally:
        stop.set()
        thread.join(timeout=30)
        server.task_dispatcher.shutdown()
        server.close()
    assert (hsts is not None) is trusted
    assert ("; Secure" in cookie) is trusted
