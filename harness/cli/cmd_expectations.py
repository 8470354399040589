"""``shipei expectations update``: draft a target's expectations file from a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import (
    CliError,
    add_run_location_options,
    load_located_run,
    output_file,
    writing,
)
from harness.verdicts.expectations import Expectations, ExpectationsError, render


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "expectations", help="draft expectations files from a run",
        description="Write the non-pass results of one target in a run as an expectations "
                    "file. Reasons already reviewed in --previous are kept; new entries "
                    "carry the recorded message and must be reviewed before committing.")
    parser.add_argument("action", choices=["update"])
    parser.add_argument("run_id", help="run id, unique prefix, or run folder")
    parser.add_argument("--target", required=True, help="target label in that run")
    parser.add_argument("--previous", type=Path, help="existing expectations file to keep "
                        "reasons from (default: the output file, if it exists)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.output, "-o")
    run_dir, _, records = load_located_run(args.results_dir, args.run_id)
    mine = [r for r in records if r["target"] == args.target]
    if not mine:
        labels = sorted({r["target"] for r in records})
        raise CliError(f"run {run_dir.name} has no records for {args.target!r}; it has {labels}")
    previous_path = args.previous or (args.output if args.output.exists() else None)
    try:
        previous = Expectations.load([previous_path]) if previous_path else None
    except ExpectationsError as exc:
        hint = "" if args.previous else " (an existing -o file is read for its reviewed reasons)"
        raise CliError(f"{exc}{hint}") from None
    header = (f"Expected non-pass results for {args.target}.\n"
              f"Drafted from run {run_dir.name}; every reason is reviewed by a person.")
    text = render(mine, previous, header)
    with writing("the expectations file", args.output):
        args.output.write_text(text, encoding="utf-8")
    count = sum(1 for line in text.splitlines() if line.startswith("status = "))
    print(f"wrote {count} entries to {args.output}")
    return 0
