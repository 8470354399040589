"""``shipei matrix RUN_ID...``: the operator coverage matrix of one or more runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import CliError, add_run_location_options, load_located_run, writing
from harness.reports.matrix import GROUPINGS, build, text_lines, write_reports


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "matrix", help="operator coverage matrix: each target's status per ONNX operator",
        description="Show, per ONNX operator, how many cases each target passed, side by "
                    "side, with per-target totals; write matrix.csv (per operator), "
                    "matrix-cases.csv (per case) and matrix.html into reports/<first "
                    "run id>/ (or --output-dir). Several runs are combined into one "
                    "matrix; a target label that appears in two runs becomes "
                    "label@run-id.")
    parser.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                        help="run id, unique prefix, or run folder; repeatable")
    parser.add_argument("--by", choices=GROUPINGS, default="op",
                        help="rows of the printed table: per operator (default), per "
                             "operator and input dtypes, or per case")
    parser.add_argument("--only-differences", action="store_true",
                        help="print only the rows where the targets differ")
    parser.add_argument("--output-dir", type=Path,
                        help="where to write the files (default reports/<first run id>/)")
    parser.add_argument("--no-files", action="store_true", help="print only; write no files")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    runs = []
    run_dirs = []
    for run_id in args.run_ids:
        run_dir, info, records = load_located_run(args.results_dir, run_id)
        if run_dir.resolve() in run_dirs:
            raise CliError(f"run {run_dir.name} given twice")
        run_dirs.append(run_dir.resolve())
        if not records:
            raise CliError(f"run {run_dir.name} has no records")
        info.setdefault("run_id", run_dir.name)
        runs.append((info, records))
    matrix = build(runs)
    for line in text_lines(matrix, args.by, args.only_differences):
        print(line)
    if not args.no_files:
        directory = args.output_dir or args.reports_dir / run_dirs[0].name
        with writing("the matrix", directory):
            written = write_reports(matrix, directory)
        for path in written:
            print(f"report:  {path}")
    return 0
