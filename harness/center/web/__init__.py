"""The web registry (Flask, server-rendered bilingual pages, a JSON twin of each page),
in blueprints by concern:

:mod:`~harness.center.web.pages` (search and pages)
    ``/`` search and filter published certificates; ``/certificates/<id>`` criteria,
    blockers, matrix and "verify in the browser" (WebCrypto Ed25519 against the center
    key, then the server's re-check); ``/certificates/<id>.dsse.json``;
    ``/targets/<label>`` a target's history with a plot; ``/center.pub``
:mod:`~harness.center.web.uploads` (uploads)
    ``/upload`` vendors upload bundles (token), intake runs before anything is stored;
    ``/bundles/<id>`` a bundle and its intake report (its vendor and the admin, until
    published); ``/intake/<report>`` any intake report, refused ones included (its vendor
    and the admin)
:mod:`~harness.center.web.admin` (admin)
    ``POST /api/certificates/<id>/revoke`` and ``.../publish``;
    ``POST /api/vendors/<name>/token/rotate`` and ``.../revoke``
:mod:`~harness.center.web.api` (API)
    ``POST /api/certificates/<id>/verify`` the server-side re-check;
    ``/revocations.dsse.json`` the signed revocation list
:mod:`~harness.center.web.scenarios` (scenarios)
    ``/scenarios`` the scenario catalogue and the admin's demands; ``/scenarios/<id>`` a
    demand matched against the supply; ``/supply`` the supply-capability catalogue

``/api/...`` answers in JSON. :mod:`~harness.center.web.security` adds the CSRF check,
the cookie flags and the security headers to every blueprint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from harness.center.bundle import MAX_BUNDLE_BYTES
from harness.center.store import Store, token_digest
from harness.center.web import security
from harness.center.web.admin import admin
from harness.center.web.api import api
from harness.center.web.context import EXTENSION, WebContext, page
from harness.center.web.lab import lab
from harness.center.web.pages import pages
from harness.center.web.scenarios import scenarios
from harness.center.web.uploads import uploads

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BLUEPRINTS = (pages, uploads, admin, api, scenarios, lab)


def create_app(store: Store, center_key: Ed25519PrivateKey, admin_token: str | None,
               describe_target: Callable[[str], dict[str, Any]],
               max_upload: int = MAX_BUNDLE_BYTES, center_name: str = "") -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES))
    app.config["MAX_CONTENT_LENGTH"] = max_upload
    app.extensions[EXTENSION] = WebContext(
        store, center_key, token_digest(admin_token) if admin_token else None,
        describe_target, max_upload, center_name)
    security.install(app, center_key.private_bytes_raw())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if isinstance(exc, RequestEntityTooLarge):
            exc.description = f"the upload is over the limit of {max_upload} bytes"
        data = {"error": exc.name, "status": exc.code, "detail": exc.description}
        return page("error.html", data, exc.code or 500)

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
