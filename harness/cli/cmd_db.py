"""``shipei db``: the center's results database (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bounded import KEY_BYTES
from harness.cli.common import CliError
from harness.cli.db_vendor_token import add_parser as add_vendor_token_parser
from harness.cli.db_vendor_token import vendor_token
from harness.cli.option_files import check_option_file, read_option_file

#: optional packages this command needs (the 'center' extra); checked by harness.cli.main
REQUIRES = ("sqlalchemy",)
#: the extra that installs REQUIRES
EXTRA = "center"


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


def center_database(db: str | None) -> str | None:
    """The center's database when it keeps one (then it holds the one revocation list):
    ``--db``, ``$SHIPEI_DB``, or the default SQLite file when it exists."""
    from harness.center import DEFAULT_URL, URL_ENV

    url = db or os.environ.get(URL_ENV)
    if url:
        return url
    if importlib.util.find_spec("sqlalchemy") is None:
        return None
    return DEFAULT_URL if Path(DEFAULT_URL.removeprefix("sqlite:///")).is_file() else None


def master_list(url: str, key: Any, list_file: Path,
                change: Callable[[Any], Any] | None = None) -> int:
    """Apply ``change`` (a revocation, a renewal) to the database's revocation list, after
    adopting the list file at ``list_file`` if it has entries the database lacks, and
    write the resulting signed list to ``list_file`` once committed; its sequence."""
    from sqlalchemy.exc import SQLAlchemyError

    from harness.center import revocations
    from harness.cert.revocation import RevocationError

    store = open_store(argparse.Namespace(db=url))
    try:
        with store.session() as session:
            adopted = revocations.adopt_file(session, key, list_file)
            listed = (change or (lambda s: revocations.current_list(s, key)))(session)
            sequence, envelope = listed.sequence, listed.envelope
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise CliError(f"database: {str(getattr(exc, 'orig', exc)).splitlines()[0]}; the "
                       "revocation list was not changed") from None
    finally:
        store.close()
    if adopted:
        print(f"revocations: adopted {adopted} entr{'y' if adopted == 1 else 'ies'} of "
              f"{list_file} into the center database")
    try:
        revocations.write_list(list_file, envelope)
    except OSError as exc:
        raise CliError(f"the database holds revocation list #{sequence}, but {list_file} "
                       f"could not be written: {exc.strerror}") from None
    return int(sequence)


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
                    "attestation's sha256 and the audit (seed, sample, agreement). The "
                    "files appear once the registry holds the certificate, with the "
                    "center's revocation list beside them; a bundle is certified once "
                    "(revoke its certificate to certify it again). Exit status: 0 a "
                    "compatible level, 1 不兼容 / Not compatible, 2 nothing issued.")
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
    bundle = actions.add_parser("bundle", help="hand back an accepted bundle")
    bundle_actions = bundle.add_subparsers(dest="bundle_action", metavar="ACTION",
                                           required=True)
    get = bundle_actions.add_parser(
        "get", help="write an accepted bundle's archive to a file",
        description="Write the archive of a bundle the registry accepted (by number or "
                    "digest), byte for byte as the vendor signed it: the FILE that "
                    "'shipei audit' and 'shipei certify --bundle' take.")
    get.add_argument("bundle", metavar="ID", help="bundle number (12 or #12) or 8+ hex "
                                                  "digits of its digest")
    get.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    add_db_option(get)
    publish = actions.add_parser("publish", help="publish a certificate (and its bundle)")
    publish.add_argument("certificate_id")
    add_db_option(publish)
    revoke = actions.add_parser(
        "revoke", help="revoke a certificate; re-signs the center's one list",
        description="Revoke a certificate in the center's one revocation list (the same "
                    "list 'shipei cert revoke' and the registry change), then write it to "
                    "--certificates-dir and the static registry, and mark the "
                    "certificate's page there as revoked.")
    revoke.add_argument("certificate_id")
    revoke.add_argument("--reason", required=True)
    revoke.add_argument("--key", type=Path, default=Path("keys") / "center.key")
    revoke.add_argument("--certificates-dir", type=Path,
                        default=Path("reports") / "certificates",
                        help="where the signed list is written beside the certificates "
                             "(default reports/certificates/)")
    revoke.add_argument("--registry", type=Path, default=Path("reports") / "registry",
                        help="static registry folder to update if it exists (default "
                             "reports/registry/)")
    add_db_option(revoke)
    add_vendor_token_parser(actions, add_db_option)
    parser.set_defaults(handler=run)


def _center_key(path: Path) -> Any:
    from harness.cert.keys import KeyFileError, load_private_key

    try:
        return load_private_key(check_option_file(path, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def certifies_dir(path: Path) -> None:
    """``--certificates-dir`` must be a folder (or not exist yet)."""
    if path.exists() and not path.is_dir():
        raise CliError(f"--certificates-dir {path} is not a folder")


def certify_command(args: argparse.Namespace) -> int:
    """``shipei db certify`` / ``shipei certify --bundle``: the certificate is recorded in
    the registry first; its files appear only once that is committed, then the center's
    revocation list is written beside it. Exit 1 when it says 不兼容 / Not compatible."""
    from sqlalchemy.exc import SQLAlchemyError

    from harness.center.bundle import BundleError, open_bundle
    from harness.center.certify_bundle import CertifyError, certify_bundle
    from harness.cert.keys import center_name
    from harness.cert.profile import ProfileError, level_label
    from harness.cert.revocation import REVOCATIONS_FILE

    key = _center_key(args.key)
    certifies_dir(args.certificates_dir)
    try:
        digest = open_bundle(_bounded_read(args.bundle)).digest
    except BundleError as exc:
        raise CliError(str(exc)) from None
    store = open_store(args)
    try:
        with store.session() as session:
            issued = certify_bundle(session, digest, args.profile, args.scope, key,
                                    center_name(args.key.parent), args.valid_days,
                                    args.certificates_dir, args.results_dir, args.publish)
    except (BundleError, CertifyError, ProfileError) as exc:
        raise CliError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise CliError(f"database: {str(getattr(exc, 'orig', exc)).splitlines()[0]}; no "
                       "certificate was issued") from None
    except OSError as exc:
        raise CliError(f"the registry holds the certificate, but its files could not be "
                       f"written to {args.certificates_dir}: {exc.strerror}") from None
    finally:
        store.close()
    try:
        sequence = master_list(store.url, key, args.certificates_dir / REVOCATIONS_FILE)
    except CliError as exc:
        raise CliError(f"certificate {issued.certificate_id} was issued ({issued.certificate}),"
                       f" but the revocation list beside it was not written: {exc}") from None
    print(f"certificate: {issued.certificate} ({issued.certificate_id}, level {issued.level}"
          f"{', published' if args.publish else ''})")
    print(f"page:        {issued.page}")
    print(f"revocations: {args.certificates_dir / REVOCATIONS_FILE} (list #{sequence})")
    if issued.level == "none":
        print(f"certify: the certificate says {level_label('none')}: the target reached no "
              "compatibility level (exit status 1)")
        return 1
    return 0


def _bounded_read(path: Path) -> bytes:
    from harness.center.bundle import MAX_BUNDLE_BYTES

    return read_option_file(path, MAX_BUNDLE_BYTES, "bundle")


def _bundle_get(session: Any, args: argparse.Namespace) -> int:
    from harness.center.certify_bundle import CertifyError, find_bundle

    try:
        bundle = find_bundle(session, args.bundle)
    except CertifyError as exc:
        raise CliError(str(exc)) from None
    if args.output.is_dir():
        raise CliError(f"-o {args.output} is a folder; name the file to write")
    try:
        args.output.write_bytes(bundle.data)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"bundle #{bundle.id} ({bundle.digest[:16]}, {bundle.vendor.name}, "
          f"{bundle.target}): {args.output}")
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


def _revoke(args: argparse.Namespace) -> int:
    from harness.center import revocations
    from harness.cert.revocation import REVOCATIONS_FILE
    from harness.cli.list_files import certificate_ids, update_registry

    key = _center_key(args.key)
    list_file = args.certificates_dir / REVOCATIONS_FILE
    known = certificate_ids(args.certificates_dir, args.registry)
    sequence = master_list(args.db or _default_url(), key, list_file, lambda session:
                           revocations.revoke(session, key, args.certificate_id, args.reason,
                                              known=known))
    print(f"revoked: {args.certificate_id} (revocation list #{sequence}, {list_file})")
    update_registry(args.registry, key, list_file, args.certificate_id)
    return 0


def _default_url() -> str:
    from harness.center.store import default_url

    return default_url()


ACTIONS = {"publish": _publish, "bundle": _bundle_get, "vendor-token": vendor_token}


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
    if args.action == "certify":
        return certify_command(args)
    if args.action == "revoke":
        return _revoke(args)
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
