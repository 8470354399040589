"""``shipei keys``: the certification center's signing key pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cert.keys import (
    DEFAULT_KEY_DIR,
    PRIVATE_FILE,
    PUBLIC_FILE,
    KeyFileError,
    KeyPair,
    center_name,
    display_fingerprint,
    fingerprint,
    init_keys,
    load_public_key,
)
from harness.cli.common import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys", help="create or show the center's Ed25519 signing key pair",
        description=f"'init' writes {PRIVATE_FILE} (mode 0600, never printed) and "
                    f"{PUBLIC_FILE} into --dir; 'show' prints the public key's fingerprint. "
                    "People verify certificates against the public key and its fingerprint.")
    parser.add_argument("action", choices=["init", "show"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_KEY_DIR,
                        help=f"key folder (default {DEFAULT_KEY_DIR}/)")
    parser.add_argument("--name", default="",
                        help="the center's name, shown on certificates (init)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing key pair (init)")
    parser.add_argument("--role", choices=("center", "vendor"), default="center",
                        help="center: signs certificates (default); vendor: signs evidence "
                             "bundles (vendor.key/vendor.pub, default --dir keys/vendor)")
    parser.add_argument("--vendor", default="", help="the vendor's name (init --role vendor)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.role == "vendor":
        return run_vendor(args)
    try:
        if args.action == "init":
            pair, keyid = init_keys(args.dir, args.name, args.force)
            print(f"private key: {pair.private} (mode 0600; keep it secret, back it up)")
        else:
            pair = KeyPair(args.dir)
            keyid = fingerprint(load_public_key(pair.public))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    print(f"public key:  {pair.public}")
    print(f"center:      {center_name(args.dir) or '(no name; keys init --name)'}")
    print(f"fingerprint: {display_fingerprint(keyid)}")
    return 0


def run_vendor(args: argparse.Namespace) -> int:
    """``shipei keys init|show --role vendor``: the vendor's bundle-signing key pair."""
    from harness.center import vendor_keys

    directory = args.dir if args.dir != DEFAULT_KEY_DIR else DEFAULT_KEY_DIR / "vendor"
    try:
        if args.action == "init":
            public, keyid = vendor_keys.init_vendor_keys(directory, args.vendor or args.name,
                                                         args.force)
            print(f"private key: {directory / vendor_keys.PRIVATE_FILE} "
                  "(mode 0600; keep it secret)")
        else:
            public = directory / vendor_keys.PUBLIC_FILE
            keyid = fingerprint(load_public_key(public))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    print(f"public key:  {public} (give it to the center: shipei db vendor-add NAME --pubkey FILE)")
    print(f"vendor:      {vendor_keys.vendor_name(public) or '(unknown)'}")
    print(f"fingerprint: {display_fingerprint(keyid)}")
    return 0
