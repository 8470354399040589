"""``python -m targets.serial.sim DEVICE ...``: ``shipei sim`` without the rest of the
command line's imports, so a test or a benchmark starts a dozen simulators quickly."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from harness.cli.common import CliError
from targets.serial.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="shipei")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"shipei sim: error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
