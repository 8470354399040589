"""``shipei serve``: the center's web registry over its database, served by waitress
(a production WSGI server: a pool of worker threads, request-size limits, no debugger).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from harness.bounded import KEY_BYTES, TOKEN_BYTES
from harness.cli.cmd_db import add_db_option, open_store
from harness.cli.common import CliError
from harness.cli.option_files import check_option_file, read_option_file

#: optional packages this command needs (the 'center' extra); checked by harness.cli.main
REQUIRES = ("flask", "sqlalchemy", "waitress")
#: the extra that installs REQUIRES
EXTRA = "center"
ADMIN_TOKEN_ENV = "SHIPEI_ADMIN_TOKEN"
#: what a reverse proxy in front of the registry may tell it (only when --trusted-proxy)
PROXY_HEADERS = "x-forwarded-proto x-forwarded-host x-forwarded-for x-forwarded-port"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.center.bundle import MAX_BUNDLE_BYTES

    parser = subparsers.add_parser(
        "serve", help="run the web registry (search, certificate pages, vendor uploads)",
        description="Serve the registry with waitress: certificate search and pages with "
                    "in-browser verification, target histories, vendor bundle uploads "
                    "through intake, the signed revocation list and a JSON API under /api/. "
                    "Vendors authenticate with the token 'shipei db vendor-add' printed; the "
                    f"admin with the token in ${ADMIN_TOKEN_ENV} or --admin-token-file. "
                    "Behind a TLS-terminating proxy, name it with --trusted-proxy so that "
                    "cookies are marked Secure and HSTS is sent.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--key", type=Path, default=Path("keys") / "center.key",
                        help="the center's private key (signs the revocation list)")
    parser.add_argument("--admin-token-file", type=Path,
                        help=f"file holding the admin token (default ${ADMIN_TOKEN_ENV})")
    parser.add_argument("--max-upload", type=int, default=MAX_BUNDLE_BYTES,
                        help=f"largest bundle upload in bytes (default {MAX_BUNDLE_BYTES})")
    parser.add_argument("--threads", type=int, default=8,
                        help="worker threads answering requests (default 8)")
    parser.add_argument("--trusted-proxy", metavar="ADDRESS",
                        help="the reverse proxy's address whose X-Forwarded-Proto/-Host/-For "
                             "headers are believed (e.g. 127.0.0.1)")
    add_db_option(parser)
    parser.set_defaults(handler=run)


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.admin_token_file is None:
        return os.environ.get(ADMIN_TOKEN_ENV) or None
    raw = read_option_file(args.admin_token_file, TOKEN_BYTES, "admin token file")
    token = raw.decode("utf-8", "replace").strip()
    if len(token) < 16:
        raise CliError("the admin token must be at least 16 characters")
    return token


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads < 1:
        raise CliError("--threads must be positive")
    options: dict[str, Any] = {"host": args.host, "port": args.port, "threads": args.threads,
                               # an upload a little over the limit still gets its 413 page
                               "max_request_body_size": args.max_upload + (1 << 20)}
    if args.trusted_proxy:
        options |= {"trusted_proxy": args.trusted_proxy,
                    "trusted_proxy_headers": PROXY_HEADERS,
                    "clear_untrusted_proxy_headers": True}
    return options


def run(args: argparse.Namespace) -> int:
    from waitress import create_server

    from harness.center.center_target import describe_center_target
    from harness.center.web import create_app
    from harness.cert.keys import KeyFileError, center_name, load_private_key

    try:
        key = load_private_key(check_option_file(args.key, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    if args.max_upload < 1:
        raise CliError("--max-upload must be positive")
    options = _server_options(args)
    admin_token = _admin_token(args)
    store = open_store(args)
    app = create_app(store, key, admin_token, describe_center_target, args.max_upload,
                     center_name(args.key.parent))
    try:
        try:
            server = create_server(app, **options)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") \
                from None
        print(f"serving on http://{args.host}:{args.port}/ with waitress, {args.threads} "
              f"threads (database {store.engine.url!r})", flush=True)
        server.run()
    finally:
        store.close()
    return 0
