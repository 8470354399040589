"""The API's own answers (no page twin): the server-side re-check of a certificate and
the signed revocation list."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, make_response

from harness.center import revocations
from harness.center.certify_bundle import chain_check
from harness.center.web.context import context
from harness.center.web.pages import visible_certificate
from harness.center.web.security import csrf_exempt
from harness.cert.verify import VerificationError, VerifyOptions, verify_certificate

api = Blueprint("api", __name__)


@api.post("/api/certificates/<cid>/verify")
@csrf_exempt  # public and read-only: it re-checks, it changes nothing anyone owns
def verify(cid: str) -> Any:
    """The server-side re-check: signature, validity, revocation (the current signed
    list, no older than the newest sequence served) and the vendor chain."""
    ctx = context()
    with ctx.store.session() as session:
        row = visible_certificate(session, cid)
        listed = revocations.current_list(session, ctx.center_key)
        with tempfile.TemporaryDirectory(prefix="shipei-verify-") as tmp:
            cert_path, list_path = Path(tmp) / f"{cid}.dsse.json", Path(tmp) / "rev.json"
            cert_path.write_bytes(row.envelope)
            list_path.write_bytes(listed.envelope)
            options = VerifyOptions(public_key=ctx.public_key, revocations=list_path,
                                    min_sequence=revocations.latest_sequence(session))
            try:
                lines = verify_certificate(cert_path, options, chain_check(session))
            except VerificationError as exc:
                return jsonify({"valid": False, "reason": str(exc)})
    return jsonify({"valid": True, "lines": lines})


@api.get("/revocations.dsse.json")
@api.get("/api/revocations")
def revocation_list() -> Any:
    ctx = context()
    with ctx.store.session() as session:
        listed = revocations.current_list(session, ctx.center_key)
        body, sequence = listed.envelope, listed.sequence
    response = make_response(body)
    response.mimetype = "application/json"
    response.headers["X-Revocation-Sequence"] = str(sequence)
    response.headers["Cache-Control"] = "no-cache"
    return response
