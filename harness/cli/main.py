"""Entry point of the ``shipei`` command.

Subcommands come from the ``cmd_*`` modules of this package and from the
``shipei.commands`` entry-point group, through which a driver distribution adds
commands of its own (the serial driver adds ``shipei sim``). Each is a callable
``register(subparsers)`` that adds a parser with ``set_defaults(handler=...)``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from harness import __version__
from harness.cli.common import CliError

COMMANDS_GROUP = "shipei.commands"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="shipei",
        description="Shipei (适配): certify AI software-hardware compatibility.",
    )
    parser.add_argument("--version", action="version", version=f"shipei {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=OneLineParser)
    import harness.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            try:
                module = importlib.import_module(f"harness.cli.{info.name}")
                _check_requirements(module)
            except ImportError as exc:  # an optional dependency is missing: say which
                _register_unavailable(subparsers, info.name.removeprefix("cmd_"), exc)
                continue
            module.register(subparsers)
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            ep.load()(subparsers)
        except Exception as exc:  # a broken driver's command must not break the others
            print(f"shipei: warning: command {ep.name!r} ({ep.value}) failed to load: {exc}",
                  file=sys.stderr)
    return parser


def _check_requirements(module: object) -> None:
    """A command module names the optional packages it needs in ``REQUIRES``; they are
    looked up, not imported, so ``shipei --help`` stays quick."""
    for name in getattr(module, "REQUIRES", ()):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _register_unavailable(subparsers: argparse._SubParsersAction, name: str,
                          exc: ImportError) -> None:
    """A command whose dependencies are not installed still answers, with the reason."""
    reason = f"needs {exc.name or exc} (pip install 'shipei[test]' installs every extra)"
    parser = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER)

    def unavailable(_: argparse.Namespace) -> int:
        raise CliError(f"this command {reason}")

    parser.set_defaults(handler=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        # piped into `head`: stop quietly, like other command-line tools, without changing
        # SIGPIPE for the whole process (a run in progress still finalizes its records)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except CliError as exc:
        print(f"shipei {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("shipei: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
