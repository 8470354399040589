"""The registry's browser-facing defences.

- **CSRF.** A state-changing request (POST and the like) that carries a credential a
  browser sends by itself (the ``shipei_token`` cookie) or the upload form's ``token``
  field, and is not authenticated by an ``Authorization: Bearer`` header (API clients: a
  browser never adds one on its own), must come from this origin (``Origin``, or
  ``Referer`` when a browser sends no ``Origin``) and carry the form field
  ``csrf_token`` equal to the one in the signed session cookie. Cookies are not isolated
  by port, so ``SameSite`` alone lets a page on another port of the same host post with
  the vendor's cookie; the origin check and the token do not. Views marked
  :func:`csrf_exempt` (the public, read-only re-check of a certificate) are not checked.
- **Cookies** are ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` whenever the request
  came over TLS (directly, or through a proxy named with ``--trusted-proxy``).
- **Headers** on every answer: a Content-Security-Policy with a per-request nonce for the
  pages' own script and style (nothing else runs), ``frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin``, and HSTS over TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface

from harness.center.auth import COOKIE

SESSION_COOKIE = "shipei_session"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
HSTS = "max-age=31536000"


def session_secret(center_key_bytes: bytes) -> bytes:
    """The session cookie's signing key, derived from the center's key: the same across
    restarts and threads, and useless for anything else."""
    return hmac.new(center_key_bytes, b"shipei web session v1", hashlib.sha256).digest()


class _TLSAwareSessions(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def csrf_exempt(view: Callable[..., Any]) -> Callable[..., Any]:
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view


def csrf_token() -> str:
    """This browser session's token (made on first use)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return str(g.csp_nonce)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _check_csrf() -> None:
    if request.method in SAFE_METHODS or request.headers.get("Authorization", "").startswith(
            "Bearer "):
        return
    view = current_view()
    if view is None or getattr(view, "csrf_exempt", False):
        return
    if not (request.cookies.get(COOKIE) or request.form.get("token")):
        return  # no credential rides along: the view answers 401 itself
    own = _origin(request.host_url)
    sent = request.headers.get("Origin")
    if sent is None and request.referrer:
        sent = _origin(request.referrer)
    if sent is None or sent.lower() != own:
        abort(403, f"csrf: a form posted from {sent or 'an unnamed origin'} is not accepted "
                   f"here ({own}); API clients send 'Authorization: Bearer TOKEN'")
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(str(expected), given):
        abort(403, "csrf: the form's token is missing or stale; reload the page and send "
                   "it again")


def current_view() -> Callable[..., Any] | None:
    return current_app.view_functions.get(request.endpoint or "")


def _headers(response: Response) -> Response:
    nonce = csp_nonce()
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def install(app: Flask, center_key_bytes: bytes) -> None:
    """Sessions, CSRF checks, security headers and the template helpers."""
    app.secret_key = session_secret(center_key_bytes)
    app.session_interface = _TLSAwareSessions()
    app.config.update(SESSION_COOKIE_NAME=SESSION_COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")
    app.before_request(_check_csrf)
    app.after_request(_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, csp_nonce=csp_nonce,
                                 csrf_field=CSRF_FIELD)
