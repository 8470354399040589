"""``shipei db``: the center's results database (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.bounded import KEY_BYTES
from harness.cli.common import CliError
from harness.cli.option_files import check_option_file, read_option_file

#: optional packages this command needs (the 'center' extra); checked by harness.cli.main
REQUIRES = ("sqlalchemy",)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    from harness.center import DEFAULT_URL, URL_ENV

    parser.add_argument("--db", help=f"database URL: sqlite:///FILE or "
                                     f"postgresql://USER@HOST/DB (default ${URL_ENV} or "
                                     f"{DEFAULT_URL})")


def open_store(args: argparse.Namespace) -> Any:
    from harness.center.store import Store, StoreError

    try:
        return Store(args.db)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db", help="create, migrate and query the center's results database",
        description="The center's database of vendors, bundles, intake reports, runs, records, "
                    "audits, certificates and revocations. 'init' creates or upgrades the "
                    "schema (Alembic migrations); the queries print JSON.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create or upgrade the schema (no server needed "
                                           "for SQLite)")
    add_db_option(init)
    vendor = actions.add_parser("vendor-add", help="register a vendor's public key; prints "
                                                   "its upload token once")
    vendor.add_argument("name")
    vendor.add_argument("--pubkey", type=Path, required=True, help="the vendor's vendor.pub")
    add_db_option(vendor)
    history = actions.add_parser("history", help="a target's runs across versions")
    history.add_argument("target")
    add_db_option(history)
    regress = actions.add_parser("regressions", help="targets whose operators stopped passing "
                                                     "since a runtime release")
    regress.add_argument("--runtime", required=True, help="distribution, e.g. onnxruntime")
    regress.add_argument("--since", required=True, metavar="VERSION")
    add_db_option(regress)
    certs = actions.add_parser("certificates", help="every certificate of a vendor")
    certs.add_argument("--vendor", required=True)
    add_db_option(certs)
    certify = actions.add_parser(
        "certify", help="certify an accepted, audited bundle (vendor-lab provenance)",
        description="Issue a certificate from a bundle that passed intake and whose latest "
                    "audit agreed. Its predicate's provenance names the vendor lab, the vendor "
                    "attestation's sha256 and the audit (seed, sample, agreement).")
    certify.add_argument("bundle", type=Path)
    certify.add_argument("--profile", required=True)
    certify.add_argument("--scope", default="full")
    certify.add_argument("--key", type=Path, default=Path("keys") / "center.key",
                         help="the center's private key (default keys/center.key)")
    certify.add_argument("--valid-days", type=int)
    certify.add_argument("--certificates-dir", type=Path,
                         default=Path("reports") / "certificates")
    certify.add_argument("--results-dir", type=Path, default=Path("results"),
                         help="the bundle's runs are unpacked under RESULTS/bundles/")
    certify.add_argument("--publish", action="store_true", help="publish it in the registry")
    add_db_option(certify)
    publish = actions.add_parser("publish", help="publish a certificate (and its bundle)")
    publish.add_argument("certificate_id")
    add_db_option(publish)
    revoke = actions.add_parser("revoke", help="revoke a certificate; re-signs the list")
    revoke.add_argument("certificate_id")
    revoke.add_argument("--reason", required=True)
    revoke.add_argument("--key", type=Path, default=Path("keys") / "center.key")
    add_db_option(revoke)
    parser.set_defaults(handler=run)


def _center_key(path: Path) -> Any:
    from harness.cert.keys import KeyFileError, load_private_key

    try:
        return load_private_key(check_option_file(path, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def _certify(session: Any, args: argparse.Namespace) -> int:
    from harness.center.bundle import BundleError, open_bundle
    from harness.center.certify_bundle import CertifyError, certify_bundle
    from harness.cert.keys import center_name
    from harness.cert.profile import ProfileError

    key = _center_key(args.key)
    try:
        digest = open_bundle(args.bundle.read_bytes()).digest
        issued = certify_bundle(session, digest, args.profile, args.scope, key,
                                center_name(args.key.parent), args.valid_days,
                                args.certificates_dir, args.results_dir, args.publish)
    except OSError as exc:
        raise CliError(f"cannot read {args.bundle}: {exc.strerror}") from None
    except (BundleError, CertifyError, ProfileError) as exc:
        raise CliError(str(exc)) from None
    print(f"certificate: {issued.certificate} ({issued.certificate_id}, level {issued.level}"
          f"{', published' if args.publish else ''})")
    print(f"page:        {issued.page}")
    return 0


def _publish(session: Any, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from harness.center.models import Bundle, Certificate

    row = session.scalar(select(Certificate)
                         .where(Certificate.certificate_id == args.certificate_id))
    if row is None:
        raise CliError(f"no certificate {args.certificate_id} in the database")
    row.published = True
    if row.bundle_id is not None:
        session.get(Bundle, row.bundle_id).published = True
    print(f"published: {row.certificate_id}")
    return 0


def _revoke(session: Any, args: argparse.Namespace) -> int:
    from harness.center.revocations import revoke
    from harness.cert.revocation import RevocationError

    try:
        listed = revoke(session, _center_key(args.key), args.certificate_id, args.reason)
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    print(f"revoked: {args.certificate_id} (revocation list #{listed.sequence})")
    return 0


ACTIONS = {"certify": _certify, "publish": _publish, "revoke": _revoke}


def _init(args: argparse.Namespace) -> int:
    from harness.center.store import StoreError, default_url, upgrade

    try:
        upgrade(args.db)
        store = open_store(args)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    from harness.center.store import current_revision

    print(f"database: {args.db or default_url()} at revision {current_revision(store.engine)}")
    store.close()
    return 0


def run(args: argparse.Namespace) -> int:
    from harness.center import store as db

    if args.action == "init":
        return _init(args)
    store = open_store(args)
    try:
        with store.session() as session:
            if args.action in ACTIONS:
                return ACTIONS[args.action](session, args)
            if args.action == "vendor-add":
                try:
                    pem = read_option_file(args.pubkey, KEY_BYTES, "public key").decode("ascii")
                except UnicodeDecodeError as exc:
                    raise CliError(f"cannot read {args.pubkey}: {exc}") from None
                vendor, token = db.add_vendor(session, args.name, pem)
                print(f"vendor:  {vendor.name} (key {vendor.keyid[:16]}...)")
                print(f"token:   {token}   (shown once: the vendor uploads with it)")
                return 0
            if args.action == "history":
                found: Any = db.target_history(session, args.target)
            elif args.action == "regressions":
                found = db.regressions_since(session, args.runtime, args.since)
            else:
                found = [{"certificate_id": c.certificate_id, "target": c.target,
                          "level": c.level, "profile": c.profile, "issued_at": c.issued_at,
                          "published": c.published}
                         for c in db.vendor_certificates(session, args.vendor)]
    except db.StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    print(json.dumps(found, ensure_ascii=False, indent=2))
    return 0
