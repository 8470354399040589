"""``shipei cert``: verify, publish, revoke and render certificates; list profiles."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bounded import CERTIFICATE_BYTES, KEY_BYTES, REVOCATIONS_BYTES
from harness.cert.keys import (
    DEFAULT_KEY_DIR,
    PRIVATE_FILE,
    PUBLIC_FILE,
    KeyFileError,
    fingerprint,
    load_private_key,
    load_public_key,
)
from harness.cert.page import render_certificate
from harness.cert.profile import ProfileError, available_profiles, load_profile
from harness.cert.publish import CertificateRegistryError, publish
from harness.cert.revocation import (
    DEFAULT_LIST_DAYS,
    REVOCATIONS_FILE,
    RevocationError,
    SeenSequences,
    check_days,
    find_revocation,
    load_revocations,
    renew,
    revoke,
)
from harness.cert.verify import (
    VerificationError,
    VerifyOptions,
    check_validity,
    open_certificate,
    revocation_list_for,
    verify_certificate,
)
from harness.cli.cmd_certify import DEFAULT_CERT_DIR
from harness.cli.common import CliError
from harness.cli.list_files import certificate_ids, update_registry
from harness.cli.option_files import check_option_file, read_option_file

DEFAULT_REGISTRY = Path("reports") / "registry"
DEFAULT_PUBKEY = DEFAULT_KEY_DIR / PUBLIC_FILE
DEFAULT_KEY = DEFAULT_KEY_DIR / PRIVATE_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cert", help="verify, publish, revoke or render certificates",
        description="Work with certificates written by 'shipei certify'.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify", help="verify a certificate offline",
        description="Check the signature, the validity period and the revocation list; with "
                    "--records, that the cited records are unchanged and give the claimed "
                    "level; with --check-files, that the driver, suite and model files "
                    "installed here are the certified ones. Exit 0 valid, 1 invalid (one-line "
                    "reason), 2 usage error.")
    verify.add_argument("certificate", type=Path, help="a .dsse.json certificate")
    verify.add_argument("--pubkey", type=Path, default=DEFAULT_PUBKEY,
                        help=f"the center's public key (default {DEFAULT_PUBKEY})")
    verify.add_argument("--records", type=Path, metavar="DIR",
                        help="results folder (or one run folder) holding the cited runs")
    verify.add_argument("--revocations", type=_list_file, metavar="FILE",
                        help=f"signed revocation list (default: {REVOCATIONS_FILE} beside "
                             "the certificate or one folder up)")
    verify.add_argument("--no-revocation-check", action="store_true",
                        help="verify without a revocation list (the output says NOT CHECKED); "
                             "without this, a missing list makes the certificate INVALID")
    verify.add_argument("--min-sequence", type=_sequence, metavar="N",
                        help="refuse a revocation list older than #N (the center's current "
                             "one); lists seen before are remembered in "
                             "$SHIPEI_STATE_DIR (default ~/.local/state/shipei)")
    verify.add_argument("--check-files", action="store_true",
                        help="re-hash the cited driver, suite and model files installed here")
    verify.add_argument("--at", type=_timestamp, metavar="ISO_TIME",
                        help="check validity at this time instead of now")
    verify.add_argument("--bundle", type=Path, metavar="FILE",
                        help="for a certificate issued from a vendor's bundle: check the chain "
                             "vendor attestation -> certificate against this bundle")
    verify.add_argument("--vendor-pubkey", type=Path, metavar="FILE",
                        help="the vendor's public key that signed --bundle")
    verify.set_defaults(handler=run_verify)

    pub = actions.add_parser(
        "publish", help="add certificates to a static registry folder",
        description="Verify each certificate and add it, with its page, to a static folder "
                    "(index.json and a searchable index.html, no external assets) that a "
                    "center can host as it is.")
    pub.add_argument("certificates", type=Path, nargs="+", help=".dsse.json certificates")
    pub.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                     help=f"registry folder (default {DEFAULT_REGISTRY}/)")
    pub.add_argument("--pubkey", type=Path, default=DEFAULT_PUBKEY,
                     help=f"the center's public key (default {DEFAULT_PUBKEY})")
    pub.set_defaults(handler=run_publish)
    db_help = ("the center's database, which holds its one revocation list (default "
               "$SHIPEI_DB, or center/center.db when it exists; without one the list file "
               "is the master)")

    rev = actions.add_parser(
        "revoke", help="revoke a certificate (signed revocation list)",
        description=f"Add a certificate to the signed {REVOCATIONS_FILE} in "
                    "--certificates-dir and, when it exists, in the registry folder.")
    rev.add_argument("certificate_id", help="certificate id, e.g. SP-20260101-1A2B3C4D")
    rev.add_argument("--reason", required=True, help="why it is revoked (published)")
    rev.add_argument("--key", type=Path, default=DEFAULT_KEY,
                     help=f"the center's private key (default {DEFAULT_KEY})")
    rev.add_argument("--certificates-dir", type=Path, default=DEFAULT_CERT_DIR,
                     help=f"where certificates are (default {DEFAULT_CERT_DIR}/)")
    rev.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                     help=f"registry folder to update if it exists (default {DEFAULT_REGISTRY}/)")
    rev.add_argument("--db", help=db_help)
    rev.set_defaults(handler=run_revoke)

    lists = actions.add_parser(
        "revocations", help="show or renew the signed revocation list",
        description=f"Show the signed {REVOCATIONS_FILE} in --certificates-dir; with --renew, "
                    "re-sign it (created empty if absent) with a higher sequence and a new "
                    "next-update time. Verifiers refuse a list after its next update, so a "
                    "center renews it before then and publishes it with 'cert publish'.")
    lists.add_argument("--renew", action="store_true", help="re-sign the list")
    lists.add_argument("--days", type=int, default=DEFAULT_LIST_DAYS,
                       help=f"with --renew: days until the next update is due (default "
                            f"{DEFAULT_LIST_DAYS})")
    lists.add_argument("--key", type=Path, default=DEFAULT_KEY,
                       help=f"the center's private key (default {DEFAULT_KEY})")
    lists.add_argument("--pubkey", type=Path, default=DEFAULT_PUBKEY,
                       help=f"the center's public key, to show the list (default "
                            f"{DEFAULT_PUBKEY})")
    lists.add_argument("--certificates-dir", type=Path, default=DEFAULT_CERT_DIR,
                       help=f"where the list is (default {DEFAULT_CERT_DIR}/)")
    lists.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                       help=f"registry folder to update if it exists (default "
                            f"{DEFAULT_REGISTRY}/)")
    lists.add_argument("--db", help=db_help)
    lists.set_defaults(handler=run_revocations)

    page = actions.add_parser(
        "page", help="render a certificate's bilingual HTML page (and PDF)",
        description="Write the certificate's page from the verified certificate alone.")
    page.add_argument("certificate", type=Path, help="a .dsse.json certificate")
    page.add_argument("--pubkey", type=Path, default=DEFAULT_PUBKEY,
                      help=f"the center's public key (default {DEFAULT_PUBKEY})")
    page.add_argument("-o", "--output", type=Path, help="HTML file (default: beside the "
                      "certificate)")
    page.add_argument("--pdf", type=Path, metavar="FILE",
                      help="also write an A4 PDF (needs weasyprint: pip install 'shipei[pdf]')")
    page.set_defaults(handler=run_page)

    profiles = actions.add_parser("profiles", help="list certification profiles",
                                  description="List the packaged certification profiles.")
    profiles.set_defaults(handler=run_profiles)


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _list_file(text: str) -> Path:
    if text.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text} is a URL: fetch the list first (curl -o {REVOCATIONS_FILE} URL) and "
            "pass the file; verification reads nothing from the network")
    return Path(text)


def _sequence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a sequence number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a sequence number is 0 or more")
    return value


def _public_key(path: Path) -> Any:
    try:
        return load_public_key(check_option_file(path, KEY_BYTES, "public key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def _read(path: Path, limit: int = CERTIFICATE_BYTES, what: str = "certificate") -> bytes:
    return read_option_file(path, limit, what)


def _chain_check(args: argparse.Namespace) -> Any:
    """The vendor-attestation chain check, when --bundle and --vendor-pubkey are given."""
    if (args.bundle is None) != (args.vendor_pubkey is None):
        raise CliError("--bundle and --vendor-pubkey go together")
    if args.bundle is None:
        return None
    from harness.center.bundle import MAX_BUNDLE_BYTES
    from harness.center.certify_bundle import bundle_chain_lines

    data = _read(args.bundle, MAX_BUNDLE_BYTES, "bundle")
    pem = _read(args.vendor_pubkey, KEY_BYTES, "public key").decode("ascii", "replace")
    return lambda statement: bundle_chain_lines(data, pem, statement)


def run_verify(args: argparse.Namespace) -> int:
    key = _public_key(args.pubkey)
    check_option_file(args.certificate, CERTIFICATE_BYTES, "certificate")
    if not args.certificate.is_file():
        raise CliError(f"certificate {args.certificate} does not exist")
    if args.records is not None and not args.records.is_dir():
        raise CliError(f"records folder {args.records} does not exist")
    if args.revocations is not None and args.no_revocation_check:
        raise CliError("--revocations and --no-revocation-check exclude each other")
    if args.revocations is not None:
        check_option_file(args.revocations, REVOCATIONS_BYTES, "revocation list")
    options = VerifyOptions(key, args.records, args.revocations, args.check_files, args.at,
                            check_revocation=not args.no_revocation_check,
                            seen=SeenSequences(SeenSequences.default_path()),
                            min_sequence=args.min_sequence)
    try:
        lines = verify_certificate(args.certificate, options, chain_check=_chain_check(args))
    except VerificationError as exc:
        print(f"shipei cert verify: INVALID: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"{option} {path} is not a folder")


def run_publish(args: argparse.Namespace) -> int:
    key = _public_key(args.pubkey)
    _folder(args.registry, "--registry")
    index = None
    for certificate in args.certificates:
        try:
            statement = open_certificate(_read(certificate), key)
            check_validity(statement["predicate"], datetime.now(UTC))
        except VerificationError as exc:
            raise CliError(f"{certificate}: not published: {exc}") from None
        page = certificate.with_name(certificate.name.replace(".dsse.json", ".html"))
        try:
            index = publish(args.registry, certificate, page, statement, key,
                            revocation_list_for(certificate.resolve()))
        except CertificateRegistryError as exc:
            raise CliError(f"{certificate}: {exc}") from None
        print(f"published {statement['predicate']['certificate_id']} "
              f"({statement['predicate']['level']['en']})")
    print(f"registry: {index}")
    return 0


def _private_key(path: Path) -> Any:
    try:
        return load_private_key(check_option_file(path, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def _in_database(args: argparse.Namespace, key: Any, master: Path,
                 change: Any = None) -> int | None:
    """With a center database, the change goes to its one list (and the list file is
    rewritten from it); None when the center keeps no database."""
    from harness.cli.cmd_db import center_database, master_list

    url = center_database(args.db)
    if url is None:
        return None
    return master_list(url, key, master, change)


def run_revoke(args: argparse.Namespace) -> int:
    key = _private_key(args.key)
    known = certificate_ids(args.certificates_dir, args.registry)
    master = args.certificates_dir / REVOCATIONS_FILE

    def in_db(session: Any) -> Any:
        from harness.center import revocations

        return revocations.revoke(session, key, args.certificate_id, args.reason, known=known)

    sequence = _in_database(args, key, master, in_db)
    if sequence is None:
        if args.certificate_id not in known:
            raise CliError(f"no certificate {args.certificate_id} in {args.certificates_dir}/ "
                           f"or {args.registry}/")
        try:
            sequence = revoke(master, key, args.certificate_id, args.reason)["sequence"]
        except RevocationError as exc:
            raise CliError(str(exc)) from None
    print(f"revoked {args.certificate_id}: {args.reason} (list #{sequence}, {master})")
    update_registry(args.registry, key, master, args.certificate_id)
    return 0


def run_revocations(args: argparse.Namespace) -> int:
    master = args.certificates_dir / REVOCATIONS_FILE
    if args.renew:
        key = _private_key(args.key)
        try:
            check_days(args.days)

            def in_db(session: Any) -> Any:
                from harness.center import revocations

                return revocations.renew(session, key, args.days)

            if _in_database(args, key, master, in_db) is None:
                renew(master, key, args.days)
        except RevocationError as exc:
            raise CliError(str(exc)) from None
        print(f"renewed {master}")
        update_registry(args.registry, key, master)
        public = key.public_key()
    elif not master.exists():
        raise CliError(f"no revocation list at {master} (create one with --renew)")
    else:
        public = _public_key(args.pubkey)
    try:
        data = load_revocations(master, public)
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    print(f"list #{data['sequence']}, updated {data.get('updated_at') or 'never'}, next update "
          f"due {data.get('next_update') or 'not set'}, {len(data['revoked'])} revoked")
    for entry in data["revoked"]:
        print(f"  {entry['certificate_id']}  {entry['revoked_at']}  {entry['reason']}")
    return 0


def _revocation_of(certificate: Path, statement: dict[str, Any], key: Any
                   ) -> dict[str, Any] | None:
    """The certificate's entry in the center's list beside it (None: not revoked, or no
    list there); a list that does not verify is an error, never 'not revoked'."""
    listed = revocation_list_for(certificate.resolve())
    if listed is None:
        return None
    try:
        data = load_revocations(listed, key)
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    return find_revocation(data, statement["predicate"]["certificate_id"])


def run_page(args: argparse.Namespace) -> int:
    key = _public_key(args.pubkey)
    try:
        statement = open_certificate(_read(args.certificate), key)
    except VerificationError as exc:
        raise CliError(f"{args.certificate}: {exc}") from None
    output = args.output or args.certificate.with_name(
        args.certificate.name.replace(".dsse.json", ".html"))
    for path, option in ((output, "-o"), (args.pdf, "--pdf")):
        if path is None:
            continue
        if path.is_dir():
            raise CliError(f"{option} {path} is a folder; name the file to write")
        if not path.parent.is_dir():
            raise CliError(f"{option} {path}: folder {path.parent} does not exist")
    html_text = render_certificate(statement, fingerprint(key),
                                   _revocation_of(args.certificate, statement, key))
    try:
        output.write_text(html_text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    print(f"page: {output}")
    if args.pdf:
        from harness.cert.pdf import PdfError, write_pdf

        try:
            write_pdf(html_text, args.pdf)
        except PdfError as exc:
            raise CliError(str(exc)) from None
        print(f"pdf:  {args.pdf}")
    return 0


def run_profiles(args: argparse.Namespace) -> int:
    for name in available_profiles():
        try:
            profile = load_profile(name)
        except ProfileError as exc:
            print(f"{name}: broken: {exc}")
            continue
        scopes = ", ".join(profile.scopes)
        print(f"{profile.name:<10} v{profile.version:<5} kind {profile.kind:<9} "
              f"suites {', '.join(profile.suites)}; scopes {scopes}")
        print(f"           {profile.title_zh} / {profile.title_en}")
    return 0
