"""The web registry (Flask, server-rendered bilingual pages, a JSON twin of each page).

Pages (``/api/...`` answers the same in JSON):

``/``                      search and filter published certificates
``/certificates/<id>``     criteria, blockers, matrix; "verify in the browser": the page
                           checks the Ed25519 signature itself with WebCrypto against the
                           center key, and asks ``POST /api/certificates/<id>/verify`` for
                           the server-side re-check (validity, revocation, vendor chain)
``/targets/<label>``       a target's history with a plot
``/upload``                vendors upload bundles (token); intake runs before anything
                           is stored
``/bundles/<id>``          a bundle's intake report: its vendor and the admin only, until
                           published
``/revocations.dsse.json`` the signed revocation list
Admin only: ``POST /api/certificates/<id>/revoke`` and ``.../publish``.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, abort, jsonify, make_response, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from harness.center import revocations
from harness.center.auth import COOKIE, Principal, identify, token_from
from harness.center.bundle import MAX_BUNDLE_BYTES
from harness.center.certify_bundle import chain_check
from harness.center.intake import IntakeRequest, review
from harness.center.models import Bundle, Certificate, IntakeReport, Vendor
from harness.center.plots import history_svg
from harness.center.store import Store, target_history, token_digest
from harness.cert.keys import fingerprint, public_pem
from harness.cert.profile import LEVELS, level_label
from harness.cert.revocation import RevocationError
from harness.cert.verify import VerificationError, VerifyOptions, verify_certificate

FILTERS = ("vendor", "chip", "framework", "level", "profile", "date_from", "date_to")
DEFAULT_PROFILE = "framework"


def create_app(store: Store, center_key: Ed25519PrivateKey, admin_token: str | None,
               describe_target: Callable[[str], dict[str, Any]],
               max_upload: int = MAX_BUNDLE_BYTES, center_name: str = "") -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_upload
    admin_digest = token_digest(admin_token) if admin_token else None
    public_key = center_key.public_key()
    keyid = fingerprint(public_key)
    raw_key = base64.b64encode(public_key.public_bytes_raw()).decode()

    def principal(session: Session) -> Principal:
        return identify(session, token_from(request.headers, request.form, request.cookies),
                        admin_digest)

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    def page(template: str, data: dict[str, Any], status: int = 200) -> Any:
        if wants_json():
            return jsonify(data), status
        return render_template(template, data=data, center=center_name, keyid=keyid,
                               level_label=level_label), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if isinstance(exc, RequestEntityTooLarge):
            exc.description = f"the upload is over the limit of {max_upload} bytes"
        data = {"error": exc.name, "status": exc.code, "detail": exc.description}
        return page("error.html", data, exc.code or 500)

    # ------------------------------------------------------------ certificates

    @app.get("/")
    @app.get("/api/certificates")
    def search() -> Any:
        with store.session() as session:
            who = principal(session)
            query = select(Certificate).outerjoin(Vendor, Certificate.vendor_id == Vendor.id)
            if not who.is_admin:
                query = query.where(Certificate.published.is_(True))
            args = {k: request.args.get(k, "").strip() for k in FILTERS}
            if args["vendor"]:
                query = query.where(Vendor.name.contains(args["vendor"]))
            if args["chip"]:
                query = query.where(Certificate.chip.contains(args["chip"]))
            if args["framework"]:
                query = query.where(Certificate.framework.contains(args["framework"]))
            if args["level"]:
                query = query.where(Certificate.level == args["level"])
            if args["profile"]:
                query = query.where(Certificate.profile == args["profile"])
            if args["date_from"]:
                query = query.where(Certificate.issued_at >= args["date_from"])
            if args["date_to"]:  # the whole day: "YYYY-MM-DDT99" sorts after its times
                query = query.where(Certificate.issued_at <= args["date_to"] + "T99")
            rows = session.scalars(query.order_by(Certificate.issued_at.desc())).all()
            revoked = revocations.revoked(session)
            found = [_summary(c, revoked) for c in rows]
        return page("search.html", {"filters": args, "levels": list(LEVELS),
                                    "certificates": found})

    def _certificate(session: Session, cid: str) -> Certificate:
        row = session.scalar(select(Certificate).where(Certificate.certificate_id == cid))
        if row is None or not (row.published or principal(session).owns(row.vendor_id)):
            abort(404, f"no published certificate {cid}")
        return row

    @app.get("/certificates/<cid>")
    @app.get("/api/certificates/<cid>")
    def certificate(cid: str) -> Any:
        with store.session() as session:
            row = _certificate(session, cid)
            revoked = revocations.revoked(session)
            data = _summary(row, revoked) | {
                "predicate": row.statement["predicate"],
                "envelope": row.envelope.decode("utf-8"),
                "center_public_key": raw_key, "center_keyid": keyid}
        return page("certificate.html", data)

    @app.get("/certificates/<cid>.dsse.json")
    def certificate_file(cid: str) -> Response:
        with store.session() as session:
            row = _certificate(session, cid)
            return Response(row.envelope, mimetype="application/json")

    @app.post("/api/certificates/<cid>/verify")
    def verify(cid: str) -> Any:
        """The server-side re-check: signature, validity, revocation (the current signed
        list, no older than the newest sequence served) and the vendor chain."""
        with store.session() as session:
            row = _certificate(session, cid)
            listed = revocations.current_list(session, center_key)
            with tempfile.TemporaryDirectory(prefix="shipei-verify-") as tmp:
                cert_path, list_path = Path(tmp) / f"{cid}.dsse.json", Path(tmp) / "rev.json"
                cert_path.write_bytes(row.envelope)
                list_path.write_bytes(listed.envelope)
                options = VerifyOptions(public_key=public_key, revocations=list_path,
                                        min_sequence=revocations.latest_sequence(session))
                try:
                    lines = verify_certificate(cert_path, options, chain_check(session))
                except VerificationError as exc:
                    return jsonify({"valid": False, "reason": str(exc)})
        return jsonify({"valid": True, "lines": lines})

    def _admin_action(cid: str, action: Callable[[Session, Certificate], dict[str, Any]]
                      ) -> Any:
        with store.session() as session:
            who = principal(session)
            if who.kind == "anonymous":
                abort(401, "sign in with a token")
            if not who.is_admin:
                abort(403, "only the center's admin can do this")
            row = session.scalar(select(Certificate).where(Certificate.certificate_id == cid))
            if row is None:
                abort(404, f"no certificate {cid}")
            return jsonify(action(session, row))

    @app.post("/api/certificates/<cid>/revoke")
    def revoke(cid: str) -> Any:
        reason = (request.get_json(silent=True) or {}).get("reason") or request.form.get(
            "reason", "")

        def act(session: Session, row: Certificate) -> dict[str, Any]:
            try:
                listed = revocations.revoke(session, center_key, row.certificate_id, reason)
            except RevocationError as exc:
                abort(400, str(exc))
            return {"revoked": row.certificate_id, "sequence": listed.sequence}

        return _admin_action(cid, act)

    @app.post("/api/certificates/<cid>/publish")
    def publish(cid: str) -> Any:
        def act(session: Session, row: Certificate) -> dict[str, Any]:
            row.published = True
            if row.bundle_id is not None:
                session.get(Bundle, row.bundle_id).published = True
            return {"published": row.certificate_id}

        return _admin_action(cid, act)

    @app.get("/revocations.dsse.json")
    @app.get("/api/revocations")
    def revocation_list() -> Any:
        with store.session() as session:
            listed = revocations.current_list(session, center_key)
            body, sequence = listed.envelope, listed.sequence
        response = make_response(body)
        response.mimetype = "application/json"
        response.headers["X-Revocation-Sequence"] = str(sequence)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/center.pub")
    def center_pub() -> Response:
        return Response(public_pem(public_key), mimetype="text/plain")

    # ------------------------------------------------------------ targets

    @app.get("/targets/<path:label>")
    @app.get("/api/targets/<path:label>")
    def target(label: str) -> Any:
        with store.session() as session:
            who = principal(session)
            history = [h for h in target_history(session, label)
                       if _visible_run(session, h, who)]
            certs = session.scalars(select(Certificate).where(
                Certificate.target == label, Certificate.published.is_(True))).all()
            revoked = revocations.revoked(session)
            data = {"target": label, "runs": history,
                    "certificates": [_summary(c, revoked) for c in certs]}
        if not wants_json():
            data["plot"] = history_svg(history)
        return page("target.html", data)

    # ------------------------------------------------------------ bundles

    @app.get("/upload")
    def upload_form() -> Any:
        return page("upload.html", {"profile": DEFAULT_PROFILE, "max_upload": max_upload})

    @app.post("/upload")
    @app.post("/api/bundles")
    def upload() -> Any:
        with store.session() as session:
            who = principal(session)
            if who.kind == "anonymous":
                abort(401, "upload with your vendor token")
            if who.kind != "vendor":
                abort(403, "bundles are uploaded by vendors")
            sent = request.files.get("bundle")
            if sent is None:
                abort(400, "no file in the form field 'bundle'")
            data = sent.read(max_upload + 1)
            if len(data) > max_upload:
                abort(413, f"the upload is over the limit of {max_upload} bytes")
            profile = request.form.get("profile") or DEFAULT_PROFILE
            scope = request.form.get("scope") or "full"
            result = review(session, data, IntakeRequest(
                profile=profile, scope=scope, describe_target=describe_target,
                max_bytes=max_upload, uploader=who.vendor_name))
            report = result.to_dict()
        response = page("intake.html", report, 201 if result.accepted else 422)
        if not wants_json() and request.form.get("token"):
            response = make_response(response)
            response.set_cookie(COOKIE, request.form["token"], httponly=True, samesite="Strict")
        return response

    @app.get("/bundles/<int:bundle_id>")
    @app.get("/api/bundles/<int:bundle_id>")
    def bundle(bundle_id: int) -> Any:
        with store.session() as session:
            row = session.get(Bundle, bundle_id)
            if row is None or not (row.published or principal(session).owns(row.vendor_id)):
                abort(404, f"no bundle #{bundle_id} visible to you")
            report = session.scalar(select(IntakeReport).where(
                IntakeReport.bundle_id == bundle_id).order_by(IntakeReport.id.desc()))
            data = {"bundle_id": row.id, "digest": row.digest, "vendor": row.vendor.name,
                    "target": row.target, "uploaded_at": row.uploaded_at.isoformat(),
                    "size": row.size, "published": row.published,
                    "runs": [r.run_id for r in row.runs],
                    "accepted": True, "checks": report.checks if report else []}
        return page("intake.html", data)

    return app


def _visible_run(session: Session, run: dict[str, Any], who: Principal) -> bool:
    if run["bundle"] is None:
        return True
    row = session.scalar(select(Bundle).where(Bundle.digest == run["bundle"]))
    return row is None or row.published or who.owns(row.vendor_id)


def _summary(row: Certificate, revoked: dict[str, Any]) -> dict[str, Any]:
    provenance = (row.statement.get("predicate") or {}).get("provenance") or {}
    return {"certificate_id": row.certificate_id, "target": row.target, "chip": row.chip,
            "framework": row.framework, "level": row.level, "level_label": level_label(row.level),
            "profile": row.profile, "scope": row.scope, "issued_at": row.issued_at,
            "expires_at": row.expires_at, "published": row.published,
            "vendor": row.vendor.name if row.vendor else None,
            "evidence": provenance.get("source", "center"),
            "revoked": revoked.get(row.certificate_id)}
