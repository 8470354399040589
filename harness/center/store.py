"""Opening the center database, migrating it, and the questions people ask of it.

SQLite (``sqlite:///center/center.db``, the default, no server) or PostgreSQL
(``postgresql://user@host/db``, driven by psycopg 3). Every submission is one
transaction: it is in the database once :func:`session` commits, or not at all.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from harness.cases.suite_registry import cases_from_user
from harness.center import DEFAULT_URL, URL_ENV
from harness.center.models import Certificate, Record, Run, Vendor

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StoreError(Exception):
    """A database that cannot be opened or a request it cannot answer (one line)."""


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy's default driver is psycopg2)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r} (sqlite:///FILE or "
                         "postgresql://USER@HOST/DB)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "postgresql+psycopg"):
        raise StoreError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # a killed writer leaves committed data intact
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _make_folder(url: str) -> None:
    """SQLite creates the file, not the folder holding it."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def open_engine(url: str | None = None) -> Engine:
    url = normalize_url(url or default_url())
    parsed = make_url(url)
    _make_folder(url)
    engine = create_engine(url, pool_pre_ping=True)
    if parsed.drivername == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` with the Alembic migrations."""
    from alembic import command

    url = normalize_url(url or default_url())
    _make_folder(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreError(f"cannot migrate {make_url(url)!r}: {reason}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class Store:
    """The database and a session factory; ``with store.session() as s:`` commits at the
    end of the block or rolls back on an exception."""

    def __init__(self, url: str | None = None) -> None:
        self.url = normalize_url(url or default_url())
        self.engine = open_engine(self.url)
        try:
            revision = current_revision(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the database {make_url(self.url)!r}: "
                             f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None
        if revision is None:
            raise StoreError(f"database {make_url(self.url)!r} has no schema; run "
                             "'shipei db init' first")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_vendor(session: Session, name: str, public_pem: str) -> tuple[Vendor, str]:
    """Register a vendor and its public key; return it and its new upload token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from harness.cert.keys import fingerprint

    try:
        key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise StoreError("the vendor's public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StoreError("the vendor's public key is not an Ed25519 key")
    keyid = fingerprint(key)
    if session.scalar(select(Vendor).where((Vendor.name == name) | (Vendor.keyid == keyid))):
        raise StoreError(f"vendor {name!r} or key {keyid[:16]}... is already registered")
    token = "sv_" + secrets.token_urlsafe(24)
    vendor = Vendor(name=name, keyid=keyid, public_pem=public_pem,
                    token_sha256=token_digest(token), created_at=now())
    session.add(vendor)
    session.flush()
    return vendor, token


#: what a revoked vendor's token_sha256 starts with: never a sha256 (hex has no ':'), so no
#: token matches it, and the column stays unique and set
REVOKED_TOKEN = "revoked:"


def _vendor_named(session: Session, name: str) -> Vendor:
    vendor = session.scalar(select(Vendor).where(Vendor.name == name))
    if vendor is None:
        raise StoreError(f"no vendor named {name!r}")
    return vendor


def rotate_token(session: Session, name: str) -> str:
    """Give vendor ``name`` a new upload token (returned once); the old one stops working."""
    vendor = _vendor_named(session, name)
    token = "sv_" + secrets.token_urlsafe(24)
    vendor.token_sha256 = token_digest(token)
    return token


def revoke_token(session: Session, name: str) -> None:
    """Vendor ``name``'s token stops working and no token replaces it until rotated."""
    _vendor_named(session, name).token_sha256 = REVOKED_TOKEN + secrets.token_hex(16)


# ---------------------------------------------------------------- the questions

def _pass_rates(records: list[Record]) -> dict[str, dict[str, Any]]:
    rates: dict[str, dict[str, Any]] = {}
    for record in records:
        entry = rates.setdefault(record.suite, {"cases": 0, "passed": 0})
        entry["cases"] += 1
        entry["passed"] += record.status == "pass"
    for entry in rates.values():
        entry["pass_rate"] = entry["passed"] / entry["cases"] if entry["cases"] else None
    return rates


def target_history(session: Session, target: str) -> list[dict[str, Any]]:
    """Each run of ``target``, oldest first (by finish time, then runtime and driver
    version): versions, platform and pass rate per suite."""
    runs = sorted(session.scalars(select(Run).where(Run.target == target)).all(),
                  key=lambda r: (r.finished_at, _version_key(r.runtime_version),
                                 _version_key(r.driver_version), r.run_id))
    return [{"run_id": r.run_id, "finished_at": r.finished_at,
             "driver_version": r.driver_version, "runtime": r.runtime,
             "runtime_version": r.runtime_version, "harness_version": r.harness_version,
             "platform_id": r.platform_id, "bundle": r.bundle.digest if r.bundle else None,
             "suites": _pass_rates(r.records)} for r in runs]


def _version_key(text: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(text))
    except InvalidVersion:
        return (1, text)


def regressions_since(session: Session, runtime: str, release: str) -> list[dict[str, Any]]:
    """Targets on ``runtime`` whose operators passed in their newest run before
    ``release`` and do not pass in their newest run at or after it."""
    runs = session.scalars(select(Run).where(Run.runtime == runtime)).all()
    boundary = _version_key(release)
    found = []
    for target in sorted({r.target for r in runs}):
        mine = sorted((r for r in runs if r.target == target),
                      key=lambda r: (_version_key(r.runtime_version), r.finished_at))
        before = [r for r in mine if _version_key(r.runtime_version) < boundary]
        after = [r for r in mine if _version_key(r.runtime_version) >= boundary]
        if not before or not after:
            continue
        old, new = before[-1], after[-1]
        passed_before = _operator_status(old)
        now_status = _operator_status(new)
        regressed = sorted(op for op, ok in passed_before.items()
                           if ok and now_status.get(op) is False)
        if regressed:
            found.append({"target": target, "operators": regressed,
                          "before": {"run_id": old.run_id, "version": old.runtime_version},
                          "after": {"run_id": new.run_id, "version": new.runtime_version}})
    return found


def _operator_status(run: Run) -> dict[str, bool]:
    """Per operator: True when every operator case of it passed in ``run`` (the cases
    tagged with an operator, of suites with a known list of cases)."""
    status: dict[str, bool] = {}
    for record in run.records:
        if record.op_type and record.status != "skip" and not cases_from_user(record.suite):
            status[record.op_type] = status.get(record.op_type, True) and record.status == "pass"
    return status


def vendor_certificates(session: Session, vendor: str) -> list[Certificate]:
    return list(session.scalars(select(Certificate).join(Vendor)
                                .where(Vendor.name == vendor)
                                .order_by(Certificate.issued_at)).all())
