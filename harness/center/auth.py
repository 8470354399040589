"""Who is asking: a vendor (upload token), the center's admin (admin token) or anyone.

Tokens come in ``Authorization: Bearer TOKEN``, a form field ``token`` or the
``shipei_token`` cookie the upload page sets. Only their sha256 is stored and
compared (in constant time for the admin).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center.models import Vendor
from harness.center.store import token_digest

COOKIE = "shipei_token"


@dataclass(frozen=True)
class Principal:
    kind: str  # "anonymous", "vendor" or "admin"
    vendor_id: int | None = None
    vendor_name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def owns(self, vendor_id: int | None) -> bool:
        return self.is_admin or (self.kind == "vendor" and self.vendor_id == vendor_id)


ANONYMOUS = Principal("anonymous")


def token_from(headers: dict[str, str] | object, form: dict[str, str] | object,
               cookies: dict[str, str] | object) -> str | None:
    header = getattr(headers, "get", lambda _k, _d=None: None)("Authorization", "") or ""
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    for source in (form, cookies):
        value = getattr(source, "get", lambda _k, _d=None: None)(
            "token" if source is form else COOKIE)
        if value:
            return str(value).strip()
    return None


def identify(session: Session, token: str | None, admin_digest: str | None) -> Principal:
    if not token:
        return ANONYMOUS
    digest = token_digest(token)
    if admin_digest and hmac.compare_digest(digest, admin_digest):
        return Principal("admin")
    vendor = session.scalar(select(Vendor).where(Vendor.token_sha256 == digest))
    if vendor is None:
        return ANONYMOUS
    return Principal("vendor", vendor.id, vendor.name)
