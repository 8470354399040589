"""What every blueprint of the registry shares: the center's store and key, who is
asking, and how a page or its JSON twin is answered."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import abort, current_app, jsonify, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center.auth import Principal, identify, token_from
from harness.center.models import Bundle, Certificate
from harness.center.store import Store
from harness.cert.keys import fingerprint
from harness.cert.profile import level_label

EXTENSION = "shipei"


@dataclass(frozen=True)
class WebContext:
    store: Store
    center_key: Ed25519PrivateKey
    admin_digest: str | None
    describe_target: Callable[[str], dict[str, Any]]
    max_upload: int
    center_name: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.center_key.public_key()

    @property
    def keyid(self) -> str:
        return fingerprint(self.public_key)

    @property
    def raw_public_key(self) -> str:
        return base64.b64encode(self.public_key.public_bytes_raw()).decode()


def context() -> WebContext:
    return current_app.extensions[EXTENSION]


def principal(session: Session) -> Principal:
    """Who sent this request: a bearer token, the upload form's token or the cookie."""
    return identify(session, token_from(request.headers, request.form, request.cookies),
                    context().admin_digest)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def page(template: str, data: dict[str, Any], status: int = 200) -> Any:
    """The page, or its JSON twin under ``/api/``."""
    if wants_json():
        return jsonify(data), status
    ctx = context()
    return render_template(template, data=data, center=ctx.center_name, keyid=ctx.keyid,
                           level_label=level_label), status


def visible_or_404(session: Session, row: Bundle | Certificate | None, missing: str
                   ) -> Any:
    """``row`` when the asker may see it (published, or theirs, or the admin), else 404
    with ``missing``: the same answer as for a row that does not exist."""
    if row is None or not (row.published or principal(session).owns(row.vendor_id)):
        abort(404, missing)
    return row


def visible_run(session: Session, run: dict[str, Any], who: Principal) -> bool:
    if run["bundle"] is None:
        return True
    row = session.scalar(select(Bundle).where(Bundle.digest == run["bundle"]))
    return row is None or row.published or who.owns(row.vendor_id)


def summary(row: Certificate, revoked: dict[str, Any]) -> dict[str, Any]:
    provenance = (row.statement.get("predicate") or {}).get("provenance") or {}
    return {"certificate_id": row.certificate_id, "target": row.target, "chip": row.chip,
            "framework": row.framework, "level": row.level, "level_label": level_label(row.level),
            "profile": row.profile, "scope": row.scope, "issued_at": row.issued_at,
            "expires_at": row.expires_at, "published": row.published,
            "vendor": row.vendor.name if row.vendor else None,
            "evidence": provenance.get("source", "center"),
            "revoked": revoked.get(row.certificate_id)}
