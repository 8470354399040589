"""Uploads: the vendor's upload form, the upload itself (intake runs before anything is
stored), a bundle's page and an intake report's page (its vendor and the admin only;
a bundle's also for everyone once published)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, make_response, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center.auth import COOKIE
from harness.center.intake import IntakeRequest, review
from harness.center.models import Bundle, IntakeReport
from harness.center.web.context import context, page, principal, visible_or_404, wants_json
from harness.cert.profile import packaged_names

DEFAULT_PROFILE = "framework"

uploads = Blueprint("uploads", __name__)


@uploads.get("/upload")
def upload_form() -> Any:
    return page("upload.html", {"profile": DEFAULT_PROFILE, "profiles": sorted(packaged_names()),
                                "max_upload": context().max_upload})


def _profile() -> str:
    """Only a packaged profile: a path would read any TOML file on the server."""
    profile = request.form.get("profile") or DEFAULT_PROFILE
    if profile not in packaged_names():
        abort(400, f"profile: {profile[:80]!r} is not a packaged profile (one of "
                   f"{', '.join(sorted(packaged_names()))})")
    return profile


@uploads.post("/upload")
@uploads.post("/api/bundles")
def upload() -> Any:
    ctx = context()
    with ctx.store.session() as session:
        who = principal(session)
        if who.kind == "anonymous":
            abort(401, "upload with your vendor token")
        if who.kind != "vendor":
            abort(403, "bundles are uploaded by vendors")
        sent = request.files.get("bundle")
        if sent is None:
            abort(400, "no file in the form field 'bundle'")
        data = sent.read(ctx.max_upload + 1)
        if len(data) > ctx.max_upload:
            abort(413, f"the upload is over the limit of {ctx.max_upload} bytes")
        result = review(session, data, IntakeRequest(
            profile=_profile(), scope=request.form.get("scope") or "full",
            describe_target=ctx.describe_target, max_bytes=ctx.max_upload,
            uploader=who.vendor_name))
        report = session.get(IntakeReport, result.report_id)
        if report is not None and report.vendor_id is None:
            report.vendor_id = who.vendor_id  # a refusal before the signer was known
        answer = result.to_dict()
    response = make_response(page("intake.html", answer, 201 if result.accepted else 422))
    if not wants_json() and request.form.get("token"):
        response.set_cookie(COOKIE, request.form["token"], httponly=True, samesite="Strict",
                            secure=request.is_secure)
    return response


def _visible_bundle(session: Session, bundle_id: int) -> Bundle:
    """An accepted bundle its vendor and the admin may read, everyone once published."""
    return visible_or_404(session, session.get(Bundle, bundle_id),
                          f"no bundle #{bundle_id} visible to you")


@uploads.get("/bundles/<int:bundle_id>")
@uploads.get("/api/bundles/<int:bundle_id>")
def bundle(bundle_id: int) -> Any:
    with context().store.session() as session:
        row = _visible_bundle(session, bundle_id)
        report = session.scalar(select(IntakeReport).where(
            IntakeReport.bundle_id == bundle_id).order_by(IntakeReport.id.desc()))
        data = {"bundle_id": row.id, "digest": row.digest, "vendor": row.vendor.name,
                "target": row.target, "uploaded_at": row.uploaded_at.isoformat(),
                "size": row.size, "published": row.published,
                "runs": [r.run_id for r in row.runs],
                "accepted": True, "checks": report.checks if report else [],
                "report_id": report.id if report else None}
    return page("intake.html", data)


@uploads.get("/bundles/<int:bundle_id>/archive")
@uploads.get("/api/bundles/<int:bundle_id>/archive")
def bundle_archive(bundle_id: int) -> Response:
    """The accepted bundle's bytes, as the vendor signed them: what ``shipei audit`` and
    ``shipei certify --bundle`` take after a web upload."""
    with context().store.session() as session:
        row = _visible_bundle(session, bundle_id)
        data, digest = row.data, row.digest
    return Response(data, mimetype="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="bundle-{bundle_id}-{digest[:16]}.tar.gz"'})


@uploads.get("/intake/<int:report_id>")
@uploads.get("/api/intake/<int:report_id>")
def intake_report(report_id: int) -> Any:
    """Any intake report, refused ones included: its vendor's and the admin's to read."""
    with context().store.session() as session:
        row = session.get(IntakeReport, report_id)
        if row is None or not principal(session).owns(row.vendor_id):
            abort(404, f"no intake report #{report_id} visible to you")
        data = {"report_id": row.id, "digest": row.bundle_digest, "bundle_id": row.bundle_id,
                "accepted": row.accepted, "failed_check": row.failed_check,
                "profile": row.profile, "scope": row.scope,
                "created_at": row.created_at.isoformat(), "checks": row.checks}
    return page("intake.html", data)
