"""The center's one revocation list, kept in the database and served as the same signed
list ``shipei cert verify`` reads (:mod:`harness.cert.revocation`).

The database is the single source of truth whenever a center keeps one: ``shipei db
revoke``, ``shipei cert revoke``, the web admin's revoke and every renewal add to the
same entries and the same sequence here, and :func:`export` writes the current signed
list as ``revocations.dsse.json`` beside the certificates. A list file written before the
center had a database is adopted once (:func:`adopt`): its entries are carried over and
the database's sequence continues above the file's.

Each change (a revocation) and each renewal (the list's ``next_update`` came within
:data:`RENEW_BEFORE` of now) signs a new list with the next sequence number and keeps
it in ``revocation_lists``; one list per sequence: concurrent first fetches or
revocations that race for the same sequence are retried against the winner's list
(:func:`_in_savepoint`). A verifier that has seen sequence N refuses any list below N,
and any list past its ``next_update``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import false, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
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
    check_days,
    find_revocation,
    load_revocations,
    parse_time,
)

RENEW_BEFORE = timedelta(days=1)
#: how often a write that lost a race for a sequence is tried again
ATTEMPTS = 8
T = TypeVar("T")


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


#: the advisory lock PostgreSQL writers of the revocation list take turns on ("SHIPEIRL")
WRITE_LOCK_KEY = 0x534849504549524C


def _take_write_lock(session: Session) -> None:
    """On SQLite, take the write lock before reading the newest sequence: a transaction
    that read first and then wrote after another writer committed would fail at once
    ("database is locked", a stale snapshot) instead of waiting its turn. A no-op
    UPDATE takes the lock (waiting for it with the busy timeout) and, being the first
    write, makes the driver open the real transaction, so the savepoint after it nests
    inside the caller's transaction instead of committing on release. On PostgreSQL a
    transaction-level advisory lock does the same: writers take turns, and each reads
    (READ COMMITTED) what the one before it committed, so concurrent first fetches sign
    one list (the unique sequence alone let a retry sign a second one, seen in CI)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(update(RevocationList).where(false()).values(sequence=0))
    elif dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})


def _in_savepoint(session: Session, write: Callable[[], T]) -> T:
    """``write()`` in a savepoint; when another transaction took the same sequence (or
    revoked the same certificate) first, the savepoint is rolled back and ``write`` runs
    again on what that transaction committed, so no request fails and no sequence is
    signed twice."""
    _take_write_lock(session)
    for attempt in range(ATTEMPTS):
        try:
            with session.begin_nested():
                return write()
        except (IntegrityError, OperationalError) as exc:
            if attempt == ATTEMPTS - 1:
                reason = str(getattr(exc, "orig", exc)).splitlines()[0]
                raise RevocationError(f"the revocation list could not be signed: another "
                                      f"writer kept winning ({reason}); try again") from None
            session.expire_all()
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def latest_sequence(session: Session) -> int:
    return int(session.scalar(select(func.max(RevocationList.sequence))) or 0)


def _fresh(row: RevocationList | None) -> bool:
    return row is not None and parse_time(row.next_update, "next_update") - RENEW_BEFORE \
        > _now()


def current_list(session: Session, key: Ed25519PrivateKey, days: int = DEFAULT_LIST_DAYS
                 ) -> RevocationList:
    """The list to serve: the newest, renewed first when it is (nearly) stale. Concurrent
    callers that all find it stale sign one list between them."""

    def newest() -> RevocationList | None:
        latest = latest_sequence(session)
        return session.get(RevocationList, latest) if latest else None

    def newest_or_renewed() -> RevocationList:
        row = newest()
        if row is not None and _fresh(row):
            return row  # another request renewed it while this one waited
        return _sign(session, key, latest_sequence(session) + 1, days)

    row = newest()
    if row is not None and _fresh(row):
        return row  # the common case reads only: no lock, no write
    return _in_savepoint(session, newest_or_renewed)


def renew(session: Session, key: Ed25519PrivateKey, days: int = DEFAULT_LIST_DAYS
          ) -> RevocationList:
    """Sign the next list now (same entries, new ``next_update``)."""
    check_days(days)
    return _in_savepoint(session, lambda: _sign(session, key, latest_sequence(session) + 1,
                                                days))


def _known(session: Session, certificate_id: str, known: set[str]) -> bool:
    return certificate_id in known or session.scalar(
        select(Certificate.id).where(Certificate.certificate_id == certificate_id)) is not None


def revoke(session: Session, key: Ed25519PrivateKey, certificate_id: str, reason: str,
           days: int = DEFAULT_LIST_DAYS, known: set[str] | None = None) -> RevocationList:
    """Revoke ``certificate_id`` (a certificate in the registry, or one of ``known``: the
    file-issued certificates ``shipei cert revoke`` sees) and sign the next list."""
    if not reason.strip():
        raise RevocationError("a revocation needs a reason")
    check_days(days)
    if not _known(session, certificate_id, known or set()):
        raise RevocationError(f"no certificate {certificate_id} in this registry")

    def add_and_sign() -> RevocationList:
        if session.scalar(select(Revocation).where(Revocation.certificate_id
                                                   == certificate_id)):
            raise RevocationError(f"certificate {certificate_id} is already revoked")
        sequence = latest_sequence(session) + 1
        session.add(Revocation(certificate_id=certificate_id, reason=reason.strip(),
                               revoked_at=_now().isoformat(), sequence=sequence))
        session.flush()
        return _sign(session, key, sequence, days)

    return _in_savepoint(session, add_and_sign)


def adopt(session: Session, key: Ed25519PrivateKey, listed: dict[str, Any]) -> int:
    """Carry a verified list file's revocations into the database (one signed list per
    adopted entry) and lift the database's sequence above the file's, so a verifier that
    saw the file's list accepts the database's next one. Returns how many were adopted."""
    missing = [e for e in listed["revoked"]
               if find_revocation(revoked_list(session), e["certificate_id"]) is None]
    if not missing and latest_sequence(session) >= listed["sequence"]:
        return 0

    def carry() -> int:
        sequence = max(latest_sequence(session), int(listed["sequence"]))
        for entry in missing:
            sequence += 1
            session.add(Revocation(certificate_id=entry["certificate_id"],
                                   reason=entry["reason"], revoked_at=entry["revoked_at"],
                                   sequence=sequence))
            session.flush()
            _sign(session, key, sequence, DEFAULT_LIST_DAYS)
        if not missing:
            _sign(session, key, sequence + 1, DEFAULT_LIST_DAYS)
        return len(missing)

    return _in_savepoint(session, carry)


def adopt_file(session: Session, key: Ed25519PrivateKey, path: Path) -> int:
    """:func:`adopt` the list file at ``path`` when there is one; it must be signed by
    ``key`` (a list this center did not sign is refused, never overwritten)."""
    if not path.exists():
        return 0
    return adopt(session, key, load_revocations(path, key.public_key()))


def write_list(path: Path, envelope: bytes) -> None:
    """Write a signed list to ``path`` atomically: a reader sees the old list or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(envelope)
    os.replace(partial, path)


def revoked_list(session: Session) -> dict[str, Any]:
    """The database's entries in the list payload's shape (for :func:`find_revocation`)."""
    return {"revoked": [{"certificate_id": r.certificate_id, "reason": r.reason,
                         "revoked_at": r.revoked_at}
                        for r in session.scalars(select(Revocation))]}


def revoked(session: Session) -> dict[str, Any]:
    return {r.certificate_id: {"reason": r.reason, "revoked_at": r.revoked_at}
            for r in session.scalars(select(Revocation))}
