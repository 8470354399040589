"""The admin's actions: revoke or publish a certificate, rotate or revoke a vendor's
upload token (``POST /api/vendors/<name>/token/rotate`` answers the new token once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center import revocations
from harness.center.models import Bundle, Certificate
from harness.center.store import StoreError, revoke_token, rotate_token
from harness.center.web.context import context, principal
from harness.cert.revocation import RevocationError

admin = Blueprint("admin", __name__)


def _require_admin(session: Session) -> None:
    who = principal(session)
    if who.kind == "anonymous":
        abort(401, "sign in with a token")
    if not who.is_admin:
        abort(403, "only the center's admin can do this")


def _on_certificate(cid: str, action: Callable[[Session, Certificate], dict[str, Any]]) -> Any:
    with context().store.session() as session:
        _require_admin(session)
        row = session.scalar(select(Certificate).where(Certificate.certificate_id == cid))
        if row is None:
            abort(404, f"no certificate {cid}")
        return jsonify(action(session, row))


@admin.post("/api/certificates/<cid>/revoke")
def revoke(cid: str) -> Any:
    reason = (request.get_json(silent=True) or {}).get("reason") or request.form.get(
        "reason", "")

    def act(session: Session, row: Certificate) -> dict[str, Any]:
        try:
            listed = revocations.revoke(session, context().center_key, row.certificate_id,
                                        reason)
        except RevocationError as exc:
            abort(400, str(exc))
        return {"revoked": row.certificate_id, "sequence": listed.sequence}

    return _on_certificate(cid, act)


@admin.post("/api/certificates/<cid>/publish")
def publish(cid: str) -> Any:
    def act(session: Session, row: Certificate) -> dict[str, Any]:
        row.published = True
        if row.bundle_id is not None:
            session.get(Bundle, row.bundle_id).published = True
        return {"published": row.certificate_id}

    return _on_certificate(cid, act)


@admin.post("/api/vendors/<name>/token/<action>")
def vendor_token(name: str, action: str) -> Any:
    if action not in ("rotate", "revoke"):
        abort(404, f"no token action {action!r} (rotate or revoke)")
    with context().store.session() as session:
        _require_admin(session)
        try:
            if action == "rotate":
                return jsonify({"vendor": name, "token": rotate_token(session, name)})
            revoke_token(session, name)
        except StoreError as exc:
            abort(404, str(exc))
    return jsonify({"vendor": name, "revoked": True})
