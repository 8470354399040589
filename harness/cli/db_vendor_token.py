"""``shipei db vendor-token rotate|revoke NAME``: a vendor's upload token replaced (the
new one printed once) or withdrawn; the old token stops working at once."""

from __future__ import annotations

import argparse
from typing import Any

from harness.cli.common import CliError


def add_parser(actions: argparse._SubParsersAction,
               add_db_option: Any) -> None:
    parser = actions.add_parser("vendor-token", help="rotate or revoke a vendor's upload token")
    parser.add_argument("token_action", choices=("rotate", "revoke"), metavar="ACTION",
                        help="rotate (print a new token; the old one stops working) or "
                             "revoke (no token works until the next rotate)")
    parser.add_argument("name", help="the vendor's registered name")
    add_db_option(parser)


def vendor_token(session: Any, args: argparse.Namespace) -> int:
    from harness.center.store import StoreError, revoke_token, rotate_token

    try:
        if args.token_action == "rotate":
            token = rotate_token(session, args.name)
            print(f"vendor:  {args.name}")
            print(f"token:   {token}   (shown once: the old token no longer works)")
        else:
            revoke_token(session, args.name)
            print(f"vendor:  {args.name}: upload token revoked")
    except StoreError as exc:
        raise CliError(str(exc)) from None
    return 0
