"""``shipei audit``: re-run a seeded random sample of an accepted bundle's cases on the
center's own copy of the target and compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.cmd_db import add_db_option, open_store
from harness.cli.common import CliError, add_run_location_options
from harness.cli.option_files import read_option_file

AUDIT_REPORT_DIR = Path("reports") / "audit"
#: a re-timing's verdict as a report row's state
TIMING_STATES = {"consistent": "pass", "refused": "fail", "inconclusive": "inconclusive"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="re-run a seeded sample of a bundle's cases here and compare",
        description="Draw a random sample (seeded; the seed is printed and stored) of the "
                    "conformance cases the center's own copy of the suites selects for an "
                    "accepted bundle's runs and scope (a case the bundle has no record of "
                    "disagrees), re-run them on this machine's copy of "
                    "the target through 'shipei run -k', and compare statuses and accuracy "
                    "figures. Agreement below the profile's tolerance blocks certification. "
                    "Exit 0 agreed, 1 disagreed, 2 usage error.")
    parser.add_argument("bundle", type=Path, help="a bundle accepted by 'shipei intake'")
    parser.add_argument("--sample", type=int, required=True, metavar="N", help="cases to re-run")
    parser.add_argument("--seed", type=int, help="sample seed (default: a new random one)")
    parser.add_argument("--profile", default="framework",
                        help="profile whose [audit] min_agreement applies (default framework)")
    parser.add_argument("--min-agreement", type=float,
                        help="share of sampled cases that must agree (default: the profile's, "
                             "else 1.0)")
    parser.add_argument("--case-timeout", type=float, help="per-case timeout for the re-run")
    parser.add_argument("--retime", type=int, default=1, metavar="N",
                        help="timed (performance) cases to time again here with the vendor's "
                             "settings and compare (default 1; 0: none). A vendor more than "
                             "2x faster than this machine's quiet run on the same hardware "
                             "fails the audit; what cannot be compared fairly is inconclusive")
    parser.add_argument("--report-dir", type=Path, default=AUDIT_REPORT_DIR,
                        help=f"where audit reports go (default {AUDIT_REPORT_DIR}/)")
    add_run_location_options(parser)
    add_db_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from harness.center.audit import SampleAuditError, audit_bundle, min_agreement, new_seed
    from harness.center.bundle import MAX_BUNDLE_BYTES, BundleError, open_bundle
    from harness.center.models import Audit, Bundle, IntakeReport
    from harness.center.report import text_lines, write_report
    from harness.center.store import now
    from harness.cert.profile import ProfileError, load_profile
    from harness.results.record_files import new_run_id

    try:
        bundle = open_bundle(read_option_file(args.bundle, MAX_BUNDLE_BYTES, "bundle"))
        profile = load_profile(args.profile)
    except OSError as exc:
        raise CliError(f"cannot read {args.bundle}: {exc.strerror}") from None
    except (BundleError, ProfileError) as exc:
        raise CliError(str(exc)) from None
    threshold = args.min_agreement if args.min_agreement is not None \
        else min_agreement(profile.definition)
    if not 0.0 < threshold <= 1.0:
        raise CliError("--min-agreement must be in (0, 1]")
    if args.retime < 0:
        raise CliError("--retime must be 0 or more")
    seed = args.seed if args.seed is not None else new_seed()
    store = open_store(args)
    try:
        with store.session() as session:
            row = session.scalar(select(Bundle).where(Bundle.digest == bundle.digest))
            if row is None:
                raise CliError("this bundle was not accepted at intake; run 'shipei intake' "
                               "first")
            scope = session.scalar(select(IntakeReport.scope).where(
                IntakeReport.bundle_id == row.id, IntakeReport.accepted.is_(True)))
            try:
                markexpr = load_profile(args.profile).scope(scope or "full").markexpr
            except ProfileError as exc:
                raise CliError(f"{exc} (the scope bundle #{row.id} was accepted for)") \
                    from None
            run_id = f"audit-{new_run_id()}"
            print(f"audit: bundle #{row.id} ({row.target}), seed {seed}, sample {args.sample}, "
                  f"center run {run_id}", flush=True)
            try:
                result = audit_bundle(bundle, row.target, args.sample, seed, threshold,
                                      args.results_dir, args.reports_dir, run_id,
                                      args.case_timeout, markexpr, args.retime)
            except SampleAuditError as exc:
                raise CliError(str(exc)) from None
            report = result.to_dict()
            audit = Audit(bundle_id=row.id, seed=seed, sample=report["sample"],
                          agreement=result.agreement, passed=result.passed, detail=report,
                          created_at=now())
            session.add(audit)
            session.flush()
            report["audit_id"], report["bundle_id"] = audit.id, row.id
    finally:
        store.close()
    checks = [{"id": f"{c['suite']}::{c['case']}", "title_zh": "抽样复测", "title_en":
               "sampled re-run", "state": "pass" if c["agrees"] else "fail",
               "detail": c["reason"] or f"{c['vendor_status']} = {c['center_status']}"}
              for c in report["cases"]]
    checks += [{"id": f"performance::{t['case']}", "title_zh": "复测计时", "title_en":
                "center re-timing", "state": TIMING_STATES[t["status"]], "detail": t["reason"]}
               for t in report["timings"]]
    paths = write_report(args.report_dir, f"audit-{report['audit_id']}",
                         {**{k: v for k, v in report.items() if k not in ("cases", "sample")},
                          "accepted": result.passed,
                          "failed_check": None if result.passed else "agreement",
                          "checks": checks}, "抽样复测报告", "Audit re-run report")
    for line in text_lines({"checks": checks}):
        print(line)
    print(f"report:  {paths[1]}")
    for timing in report["timings"]:
        print(f"audit: re-timed {timing['case']}: {timing['status']}")
    refused = [t["case"] for t in report["timings"] if t["status"] == "refused"]
    verdict = ("agrees" if result.passed else
               f"re-timing refused {', '.join(refused)} (certification blocked)" if refused else
               "DISAGREES (certification blocked)")
    print(f"audit: {sum(c['agrees'] for c in report['cases'])}/{len(report['cases'])} sampled "
          f"cases agree ({result.agreement:.0%}, needed {threshold:.0%}): {verdict}")
    return 0 if result.passed else 1
