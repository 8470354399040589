"""``shipei env``: build, list and remove the environments targets run in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.cli.common import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env", help="build, list and remove target environments",
        description="Target environments: a vendor SDK that pins versions the harness cannot "
                    "share runs its worker in an environment of its own, built from a declared "
                    "spec (interpreter, pinned packages, install options) and cached under the "
                    "Shipei cache directory.")
    parser.set_defaults(handler=run_list, json=False)
    commands = parser.add_subparsers(dest="env_command", metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="every declared or built environment (default)",
                                  description="List every declared or built environment, "
                                              "whether it is ready, and why not.")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)
    create = commands.add_parser(
        "create", help="build an environment from its spec",
        description="Build environment NAME from its declared spec (or --spec FILE), showing "
                    "progress, and record the exact versions installed. An environment "
                    "already built from the same spec is kept unless --force.")
    create.add_argument("name", metavar="NAME", nargs="?",
                        help="the environment (see shipei env list)")
    create.add_argument("--spec", type=Path, help="a spec file instead of a declared name")
    create.add_argument("--force", action="store_true", help="rebuild even if up to date")
    create.set_defaults(handler=run_create)
    remove = commands.add_parser("remove", help="delete a built environment",
                                 description="Delete built environment NAME from the cache.")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=run_remove)
    show = commands.add_parser("show", help="what an environment holds, as recorded",
                               description="Print the record of a built environment: "
                                           "interpreter, architecture and every package with "
                                           "its version, as run.json carries it.")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=run_show)


def _envs():  # type: ignore[no-untyped-def]
    from harness.environments import target_envs as envs
    return envs


def run_list(args: argparse.Namespace) -> int:
    envs = _envs()
    try:
        rows = envs.listing()
    except envs.EnvError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no environments declared (drivers declare them through the "
              f"{envs.ENTRY_POINT_GROUP!r} entry-point group)")
        return 0
    header = ("ENVIRONMENT", "KIND", "READY", "PYTHON", "MACHINE", "PACKAGES")
    table = [(r["name"], r["kind"], "yes" if r["ready"] else "no", r["python"] or "-",
              r["machine"] or "-", str(r["packages"] or "-")) for r in rows]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row, source in zip([header, *table], [None, *rows], strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        detail = "SUMMARY / REASON" if source is None else (source["reason"] or source["summary"])
        print(f"{line}  {detail}")
    return 0


def run_create(args: argparse.Namespace) -> int:
    envs = _envs()
    if (args.name is None) == (args.spec is None):
        raise CliError("give an environment NAME or --spec FILE (one of them)")
    try:
        spec = envs.EnvSpec.from_file(args.spec) if args.spec else envs.find_spec(args.name)
        envs.create(spec, force=args.force, progress=lambda line: print(line, flush=True))
    except envs.EnvError as exc:
        raise CliError(str(exc)) from None
    return 0


def run_remove(args: argparse.Namespace) -> int:
    envs = _envs()
    try:
        removed = envs.remove(args.name)
    except envs.EnvError as exc:
        raise CliError(str(exc)) from None
    if not removed:
        raise CliError(f"no built environment named {args.name!r}")
    print(f"removed environment {args.name!r}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    envs = _envs()
    try:
        described = envs.identity(args.name)
    except envs.EnvError as exc:
        raise CliError(str(exc)) from None
    if not described.get("created"):
        raise CliError(f"environment {args.name!r} is not created; "
                       f"run: shipei env create {args.name}")
    print(json.dumps(described, indent=2, ensure_ascii=False))
    return 0
