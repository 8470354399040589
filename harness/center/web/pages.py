"""Search and pages: the certificate search, a certificate's page and file, a target's
history, the center's public key (each page with its JSON twin under ``/api/``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center import revocations
from harness.center.models import Certificate, Vendor
from harness.center.plots import history_svg
from harness.center.store import target_history
from harness.center.web.context import (
    context,
    page,
    principal,
    summary,
    visible_or_404,
    visible_run,
    wants_json,
)
from harness.cert.keys import public_pem
from harness.cert.profile import LEVELS

FILTERS = ("vendor", "chip", "framework", "level", "profile", "date_from", "date_to")
#: the filters matched as substrings; ``%`` and ``_`` in them are literal characters
SUBSTRING_FILTERS = {"vendor": Vendor.name, "chip": Certificate.chip,
                     "framework": Certificate.framework}

pages = Blueprint("pages", __name__)


@pages.get("/")
@pages.get("/api/certificates")
def search() -> Any:
    with context().store.session() as session:
        who = principal(session)
        query = select(Certificate).outerjoin(Vendor, Certificate.vendor_id == Vendor.id)
        if not who.is_admin:
            query = query.where(Certificate.published.is_(True))
        args = {k: request.args.get(k, "").strip() for k in FILTERS}
        for name, column in SUBSTRING_FILTERS.items():
            if args[name]:
                query = query.where(column.contains(args[name], autoescape=True))
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
        found = [summary(c, revoked) for c in rows]
    return page("search.html", {"filters": args, "levels": list(LEVELS), "certificates": found})


def visible_certificate(session: Session, cid: str) -> Certificate:
    """A published certificate, or one of the asking vendor's (any, for the admin)."""
    row = session.scalar(select(Certificate).where(Certificate.certificate_id == cid))
    return visible_or_404(session, row, f"no published certificate {cid}")


@pages.get("/certificates/<cid>")
@pages.get("/api/certificates/<cid>")
def certificate(cid: str) -> Any:
    ctx = context()
    with ctx.store.session() as session:
        row = visible_certificate(session, cid)
        revoked = revocations.revoked(session)
        data = summary(row, revoked) | {
            "predicate": row.statement["predicate"],
            "envelope": row.envelope.decode("utf-8"),
            "center_public_key": ctx.raw_public_key, "center_keyid": ctx.keyid}
    return page("certificate.html", data)


@pages.get("/certificates/<cid>.dsse.json")
def certificate_file(cid: str) -> Response:
    with context().store.session() as session:
        row = visible_certificate(session, cid)
        return Response(row.envelope, mimetype="application/json")


@pages.get("/center.pub")
def center_pub() -> Response:
    return Response(public_pem(context().public_key), mimetype="text/plain")


@pages.get("/targets/<path:label>")
@pages.get("/api/targets/<path:label>")
def target(label: str) -> Any:
    with context().store.session() as session:
        who = principal(session)
        history = [h for h in target_history(session, label) if visible_run(session, h, who)]
        certs = session.scalars(select(Certificate).where(
            Certificate.target == label, Certificate.published.is_(True))).all()
        revoked = revocations.revoked(session)
        data = {"target": label, "runs": history,
                "certificates": [summary(c, revoked) for c in certs]}
    if not wants_json():
        data["plot"] = history_svg(history)
    return page("target.html", data)
