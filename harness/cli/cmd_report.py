"""``shipei report RUN_ID``: rebuild a run's reports from its records alone."""

from __future__ import annotations

import argparse

from harness.cli.common import add_run_location_options, load_located_run, writing
from harness.reports.writing import terminal_summary, write_reports
from harness.results.record_files import RunPaths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild reports (JUnit XML, ...) from a run's records",
        description="Rebuild a run's reports from results/<run-id>/ - also for a run that "
                    "was killed before it could write them.")
    parser.add_argument("run_id", help="run id, unique prefix, or run folder")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_dir, info, records = load_located_run(args.results_dir, args.run_id)
    paths = RunPaths(run_dir.parent, args.reports_dir, run_dir.name)
    with writing("reports", paths.report_dir):
        files = write_reports(paths, info, records)
    for line in terminal_summary(records, info, paths, files):
        print(line)
    return 0
