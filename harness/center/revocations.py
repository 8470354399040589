"""The registry's revocations, kept in the database and served as the same signed list
``shipei cert verify`` reads (:mod:`harness.cert.revocation`).

Each change (a revocation) and each renewal (the list's ``next_update`` came within
:data:`RENEW_BEFORE` of now) signs a new list with the next sequence number and keeps
it in ``revocation_lists``; the newest is what the endpoint serves. A verifier that has
seen sequence N refuses any list below N, and any list past its ``next_update``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.center.models import Certificate, Revocation, RevocationList
from harness.cert import dsse
from harness.cert.files import canonical_json
from harness.cert.keys import fingerprint
from harness.cert.revocation import (
    DEFAULT_LIST_DAYS,
    REVOCATIONS_PAYLOAD_TYPE,
    REVOCATIONS_TYPE,
    RevocationError,
    parse_time,
)

RENEW_BEFORE = timedelta(days=1)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _sign(session: Session, key: Ed25519PrivateKey, sequence: int, days: int) -> RevocationList:
    now = _now()
    entries = session.scalars(select(Revocation).order_by(Revocation.sequence)).all()
    payload = {"_type": REVOCATIONS_TYPE, "issuer_keyid": fingerprint(key.public_key()),
               "sequence": sequence, "updated_at": now.isoformat(),
               "next_update": (now + timedelta(days=days)).isoformat(),
               "revoked": [{"certificate_id": e.certificate_id, "reason": e.reason,
                            "revoked_at": e.revoked_at} for e in entries]}
    envelope = dsse.sign(REVOCATIONS_PAYLOAD_TYPE, canonical_json(payload), key,
                         payload["issuer_keyid"])
    row = RevocationList(sequence=sequence, updated_at=payload["updated_at"],
                         next_update=payload["next_update"], envelope=canonical_json(envelope))
    session.add(row)
    session.flush()
    return row


def latest_sequence(session: Session) -> int:
    return int(session.scalar(select(func.max(RevocationList.sequence))) or 0)


def current_list(session: Session, key: Ed25519PrivateKey, days: int = DEFAULT_LIST_DAYS
                 ) -> RevocationList:
    """The list to serve: the newest, renewed first when it is (nearly) stale."""
    newest = session.get(RevocationList, latest_sequence(session))
    if newest is not None and parse_time(newest.next_update, "next_update") - RENEW_BEFORE \
            > _now():
        return newest
    return _sign(session, key, latest_sequence(session) + 1, days)


def revoke(session: Session, key: Ed25519PrivateKey, certificate_id: str, reason: str,
           days: int = DEFAULT_LIST_DAYS) -> RevocationList:
    if not reason.strip():
        raise RevocationError("a revocation needs a reason")
    if session.scalar(select(Certificate).where(Certificate.certificate_id == certificate_id)) \
            is None:
        raise RevocationError(f"no certificate {certificate_id} in this registry")
    if session.scalar(select(Revocation).where(Revocation.certificate_id == certificate_id)):
        raise RevocationError(f"certificate {certificate_id} is already revoked")
    sequence = latest_sequence(session) + 1
    session.add(Revocation(certificate_id=certificate_id, reason=reason.strip(),
                           revoked_at=_now().isoformat(), sequence=sequence))
    session.flush()
    return _sign(session, key, sequence, days)


def revoked(session: Session) -> dict[str, Any]:
    return {r.certificate_id: {"reason": r.reason, "revoked_at": r.revoked_at}
            for r in session.scalars(select(Revocation))}
