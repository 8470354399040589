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
from typing import Any, NoReturn

from harness import __version__
from harness.cli.common import CliError
from harness.isolation.process_exit import exit_without_teardown

COMMANDS_GROUP = "shipei.commands"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (built-in and from the entry-point group)."""
    return _build()[0]


def _build(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser and its commands by name; ``only`` registers just the built-in module
    of that name (``cmd_<only>``) when there is one, so ``shipei run`` does not import
    the certificate, center and benchmark modules it never uses (0.15 s, measured)."""
    parser = OneLineParser(
        prog="shipei",
        description="Shipei (适配): certify AI software-hardware compatibility.",
    )
    parser.add_argument("--version", action="version", version=f"shipei {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=OneLineParser)
    import harness.cli as package

    modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                      if m.name.startswith("cmd_"))
    wanted = f"cmd_{only.replace('-', '_')}" if only else None
    if wanted in modules:
        modules = [wanted]
    for name in modules:
        try:
            module = importlib.import_module(f"harness.cli.{name}")
            _check_requirements(module)
        except ImportError as exc:  # an optional dependency is missing: say which
            _register_unavailable(subparsers, name.removeprefix("cmd_"), exc,
                                  getattr(sys.modules.get(f"harness.cli.{name}"), "EXTRA",
                                          None))
            continue
        module.register(subparsers)
    if wanted not in modules:
        for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
            try:
                ep.load()(subparsers)
            except Exception as exc:  # a broken driver's command must not break the others
                print(f"shipei: warning: command {ep.name!r} ({ep.value}) failed to load: "
                      f"{exc}", file=sys.stderr)
    return parser, subparsers.choices


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed by the parser of just the command it names when that command is a
    built-in one, else by the whole parser (help, unknown commands, drivers' commands)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        parser, commands = _build(argv[0])
        if argv[0] in commands:
            return parser.parse_args(argv)
    return build_parser().parse_args(argv)


def _check_requirements(module: object) -> None:
    """A command module names the optional packages it needs in ``REQUIRES``; they are
    looked up, not imported, so ``shipei --help`` stays quick."""
    for name in getattr(module, "REQUIRES", ()):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _register_unavailable(subparsers: argparse._SubParsersAction, name: str,
                          exc: ImportError, extra: str | None = None) -> None:
    """A command whose dependencies are not installed still answers, ``--help`` included,
    with one line naming the missing package and the extra that installs it."""
    install = f"pip install 'shipei[{extra}]'" if extra else \
        "pip install 'shipei[test]' (every extra)"
    reason = f"needs {exc.name or exc}, not installed: {install}"
    parser = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=False,
                                   prefix_chars="\0")
    parser.add_argument("args", nargs=argparse.REMAINDER)

    def unavailable(_: argparse.Namespace) -> int:
        raise CliError(f"this command {reason}")

    parser.set_defaults(handler=unavailable)


#: commands after which the program ends without tearing the interpreter down
#: (see :func:`console_main`)
EXIT_AT_ONCE = frozenset({"run"})


def main(argv: Sequence[str] | None = None) -> int:
    return _dispatch(parse_arguments(argv))


def console_main() -> int:
    """The ``shipei`` program: :func:`main`, except that a finished ``shipei run`` (whose
    records, run.json and reports are written and closed by then) ends the process at
    once, flushing only standard output and error. Freeing a run's thousands of cases,
    models and reference tensors one by one at interpreter exit took 0.2 s of a 2.6 s
    operator run (measured); nothing of the run is left to write by then."""
    args = parse_arguments()
    code = _dispatch(args)
    if args.command in EXIT_AT_ONCE:
        _release_lab_places()
        exit_without_teardown(code)
    return code


def _release_lab_places() -> None:
    """The labgrid places a run held are released before the process ends without its
    exit handlers (else the holder frees them only when it sees this process gone)."""
    place = sys.modules.get("harness.lab.place")
    if place is not None:
        place.release_all()


def _dispatch(args: argparse.Namespace) -> int:
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
    sys.exit(console_main())
