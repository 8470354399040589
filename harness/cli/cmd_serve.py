"""``shipei serve``: the center's web registry over its database."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli.cmd_db import add_db_option, open_store
from harness.cli.common import CliError

#: optional packages this command needs (the 'center' extra); checked by harness.cli.main
REQUIRES = ("flask", "sqlalchemy")
ADMIN_TOKEN_ENV = "SHIPEI_ADMIN_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.center.bundle import MAX_BUNDLE_BYTES

    parser = subparsers.add_parser(
        "serve", help="run the web registry (search, certificate pages, vendor uploads)",
        description="Serve the registry: certificate search and pages with in-browser "
                    "verification, target histories, vendor bundle uploads through intake, "
                    "the signed revocation list and a JSON API under /api/. Vendors "
                    "authenticate with the token 'shipei db vendor-add' printed; the admin "
                    f"with the token in ${ADMIN_TOKEN_ENV} or --admin-token-file.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--key", type=Path, default=Path("keys") / "center.key",
                        help="the center's private key (signs the revocation list)")
    parser.add_argument("--admin-token-file", type=Path,
                        help=f"file holding the admin token (default ${ADMIN_TOKEN_ENV})")
    parser.add_argument("--max-upload", type=int, default=MAX_BUNDLE_BYTES,
                        help=f"largest bundle upload in bytes (default {MAX_BUNDLE_BYTES})")
    add_db_option(parser)
    parser.set_defaults(handler=run)


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.admin_token_file is None:
        return os.environ.get(ADMIN_TOKEN_ENV) or None
    try:
        token = args.admin_token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read {args.admin_token_file}: {exc.strerror}") from None
    if len(token) < 16:
        raise CliError("the admin token must be at least 16 characters")
    return token


def run(args: argparse.Namespace) -> int:
    from harness.center.center_target import describe_center_target
    from harness.center.web import create_app
    from harness.cert.keys import KeyFileError, center_name, load_private_key

    try:
        key = load_private_key(args.key)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    if args.max_upload < 1:
        raise CliError("--max-upload must be positive")
    store = open_store(args)
    app = create_app(store, key, _admin_token(args), describe_center_target, args.max_upload,
                     center_name(args.key.parent))
    print(f"serving on http://{args.host}:{args.port}/ (database {store.engine.url!r})",
          flush=True)
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    finally:
        store.close()
    return 0
