"""``shipei intake``: the center reviews a vendor's evidence bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.cmd_db import add_db_option, open_store
from harness.cli.option_files import read_option_file

INTAKE_REPORT_DIR = Path("reports") / "intake"


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.center.bundle import MAX_BUNDLE_BYTES
    from harness.center.intake_checks import CHECKS

    parser = subparsers.add_parser(
        "intake", help="review a vendor's evidence bundle (signature, digests, completeness, "
                       "anti-gaming audits)",
        description="Checks, in order: " + ", ".join(CHECKS) + ". The first that fails "
                    "refuses the bundle and is named. An accepted bundle, its runs and records "
                    "go into the database; a bilingual report goes to --report-dir either way. "
                    "Exit 0 accepted, 1 refused, 2 usage error.")
    parser.add_argument("bundle", type=Path, help="a bundle written by 'shipei bundle'")
    parser.add_argument("--profile", required=True, help="certification profile name or TOML")
    parser.add_argument("--scope", default="full", help="profile scope (default full)")
    parser.add_argument("--max-bytes", type=int, default=MAX_BUNDLE_BYTES,
                        help=f"largest bundle accepted (default {MAX_BUNDLE_BYTES})")
    parser.add_argument("--report-dir", type=Path, default=INTAKE_REPORT_DIR,
                        help=f"where intake reports go (default {INTAKE_REPORT_DIR}/)")
    add_db_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from harness.center.center_target import describe_center_target
    from harness.center.intake import IntakeRequest, review
    from harness.center.report import text_lines, write_report

    data = read_option_file(args.bundle, args.max_bytes, "bundle")
    store = open_store(args)
    try:
        with store.session() as session:
            result = review(session, data, IntakeRequest(
                profile=args.profile, scope=args.scope, describe_target=describe_center_target,
                max_bytes=args.max_bytes))
    finally:
        store.close()
    report = result.to_dict()
    stem = f"intake-{report['report_id']}"
    paths = write_report(args.report_dir, stem, report, "入库审查报告", "Intake report")
    for line in text_lines(report):
        print(line)
    print(f"report:  {paths[1]}")
    if not result.accepted:
        print(f"intake: {result.refusal()}")
        return 1
    print(f"intake: accepted bundle #{result.bundle_id} from {result.vendor} "
          f"({result.target}, reaches {result.level})")
    return 0
