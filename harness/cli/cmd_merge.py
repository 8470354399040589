"""``shipei merge RUN_ID...``: join shard runs (or runs from several machines) into one run."""

from __future__ import annotations

import argparse

from harness.cli.common import CliError, add_run_location_options, locate_run
from harness.reports.writing import terminal_summary
from harness.results.merge import MergeError, load_parts, merge_runs
from harness.results.record_files import RecordError, check_run_id, latest_attempts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="join shard runs into one run",
        description="Join runs made apart (the shards of 'shipei run --shard I/N', or runs "
                    "on several machines) into one new run that reports and certifies like a "
                    "run made in one go. Refuses parts from different environments or "
                    "targets, overlapping cases, missing shards and unfinished runs unless "
                    "told otherwise. Exit status: 0 every merged case passed or matched its "
                    "expectation, 1 the merged run holds an unexpected result, 2 a usage "
                    "error.")
    parser.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                        help="run ids, unique prefixes or run folders")
    parser.add_argument("--run-id", help="id of the merged run (default: a new timestamped id)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="merge runs from different environments or target builds")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="merge runs that share cases; the later run's record wins")
    parser.add_argument("--allow-partial", action="store_true",
                        help="merge an incomplete set (missing shards, unfinished runs)")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.run_id is not None:
            check_run_id(args.run_id)
        for run_id in args.run_ids:
            locate_run(args.results_dir, run_id)  # a one-line error for a missing part
        parts = load_parts(args.results_dir, args.run_ids)
        result = merge_runs(parts, args.results_dir, args.reports_dir, args.run_id,
                            allow_mixed=args.allow_mixed, allow_overlap=args.allow_overlap,
                            allow_partial=args.allow_partial)
    except (MergeError, RecordError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot merge: {exc.strerror or exc} ({exc.filename})") from None
    for part in result.info["merged_from"]:
        shard = f" shard {part['shard']}" if part["shard"] else ""
        print(f"merged {part['run_id']}{shard}: {part['records']} records")
    for note in result.notes:
        print(f"note: {note}")
    effective = latest_attempts(result.records)
    for line in terminal_summary(effective, result.info, result.paths, result.report_files):
        print(line)
    return 1 if any(not record.get("as_expected", True) for record in effective) else 0
