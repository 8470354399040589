"""``shipei certify``: run what a profile requires on a target (or take existing runs)
and issue a signed certificate under ``reports/certificates/``."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.bounded import EXPECTATIONS_BYTES, KEY_BYTES
from harness.cert.certify import Issued, certify_request, describe_target, issue
from harness.cert.evidence import EvidenceError
from harness.cert.keys import DEFAULT_KEY_DIR, PRIVATE_FILE, KeyFileError, center_name
from harness.cert.keys import load_private_key as load_key
from harness.cert.profile import (
    Profile,
    ProfileError,
    available_profiles,
    check_not_posing,
    level_label,
)
from harness.cert.profile import load_profile as read_profile
from harness.cert.revocation import REVOCATIONS_FILE, ensure_list
from harness.cert.scenario_fit import fit_label, scenario_of
from harness.cli.cmd_db import certifies_dir
from harness.cli.common import (
    CliError,
    add_run_location_options,
    known_suites,
    locate_run,
    positive_seconds,
    worker_count,
)
from harness.cli.option_files import check_option_file
from harness.driver.registry import TargetRequest
from harness.results.record_files import new_run_id

DEFAULT_CERT_DIR = Path("reports") / "certificates"
RUN_OK = (0, 1)  # 1: some case did not go as expected - still evidence


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certify", help="certify a target against a profile and sign the certificate",
        description="Run the suites a certification profile requires on a target (through "
                    "'shipei run'), or take existing runs with --runs, compute the level from "
                    "the records and write a signed certificate (DSSE envelope of an in-toto "
                    "Statement) and its bilingual page under --certificates-dir. Exit status: "
                    "0 a certificate of a compatible level was issued, 1 the certificate "
                    "issued says 不兼容 / Not compatible, 2 no certificate (usage error or "
                    "evidence refused).")
    parser.add_argument("--target", help="target NAME[:CONFIG][,k=v] (not with --bundle)")
    parser.add_argument("--expectations", action="append", default=[], type=Path,
                        metavar="FILE",
                        help="expectations file(s) to judge by instead of the target's own "
                             "(an out-of-tree driver's, say): passed to the run and cited in "
                             "the certificate; give the same files the cited --runs used")
    parser.add_argument("--bundle", type=Path, metavar="FILE",
                        help="certify a vendor's evidence bundle accepted at intake and "
                             "audited (the same as 'shipei db certify FILE'); the certificate "
                             "says the evidence came from the vendor's lab")
    parser.add_argument("--db", help="the center's database URL (default $SHIPEI_DB or the "
                                     "embedded SQLite file): with --bundle, where the "
                                     "bundle was accepted; always, when the center keeps "
                                     "one, the source of the revocation list written "
                                     "beside the certificate")
    parser.add_argument("--publish", action="store_true",
                        help="with --bundle: publish the certificate in the registry")
    parser.add_argument("--profile", required=True,
                        help=f"profile name ({', '.join(available_profiles())}) or TOML path")
    parser.add_argument("--scope", default="full",
                        help="which cases the certificate rests on (profile scopes: full, "
                             "representative); a subset scope caps the level")
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID",
                        help="certify from these existing runs instead of running suites")
    parser.add_argument("--key", type=Path, default=DEFAULT_KEY_DIR / PRIVATE_FILE,
                        help=f"the center's private key (default {DEFAULT_KEY_DIR}/{PRIVATE_FILE})")
    parser.add_argument("--valid-days", type=int,
                        help="validity in days (default and maximum: the profile's)")
    parser.add_argument("--certificates-dir", type=Path, default=DEFAULT_CERT_DIR,
                        help=f"where certificates go (default {DEFAULT_CERT_DIR}/)")
    parser.add_argument("--case-timeout", type=positive_seconds,
                        help="per-case timeout for the run")
    parser.add_argument("--isolation", choices=("process", "inline"),
                        help="worker subprocess per target (default) or in-process")
    parser.add_argument("-n", dest="numprocesses", type=worker_count,
                        help="parallel pytest-xdist workers")
    parser.add_argument("--perf-min-queries", type=int, metavar="N",
                        help="minimum queries (samples offline) per timed case, for slow "
                             "runtimes; at least the profile's [performance] minimum "
                             "(default: the harness's, 1024)")
    parser.add_argument("--perf-min-duration", type=float, metavar="SECONDS",
                        help="minimum timed duration per case; at least the profile's "
                             "minimum (default: the harness's, 10)")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def _certify_bundle(args: argparse.Namespace) -> int:
    """``shipei certify --bundle FILE``: the center database's certification of a bundle."""
    if args.target or args.runs:
        raise CliError("--bundle certifies the bundle's own runs: drop --target and --runs")
    from harness.cli.cmd_db import certify_command

    return certify_command(args)


def _start_revocation_list(args: argparse.Namespace, key: Any) -> None:
    """Verification fails closed without a revocation list: write the center's beside
    the certificate (its database's one list when it keeps a database)."""
    master = args.certificates_dir / REVOCATIONS_FILE
    from harness.cli.cmd_db import center_database, master_list

    url = center_database(args.db)
    if url is not None:
        sequence = master_list(url, key, master)
        print(f"certify: wrote the center database's revocation list #{sequence} to {master}")
    elif ensure_list(master, key):
        print(f"certify: started the signed revocation list {master} (renew it with "
              "'shipei cert revocations --renew' before its next update is due)")


def _profile(args: argparse.Namespace) -> Profile:
    try:
        profile = read_profile(args.profile)
        check_not_posing(profile)
        profile.scope(args.scope)
    except ProfileError as exc:
        raise CliError(str(exc)) from None
    return profile


def performance_options(args: argparse.Namespace, profile: Profile) -> list[str]:
    """The ``--perf-*`` options for the run, after checking them against the profile's
    minimum; the settings are recorded with every timed case and stated on the
    certificate."""
    given = {"min_queries": args.perf_min_queries, "min_duration_s": args.perf_min_duration}
    options = []
    for key, value in given.items():
        if value is None:
            continue
        flag = f"--perf-{key.removesuffix('_s').replace('_', '-')}"
        if args.runs:
            raise CliError(f"{flag} applies to the run certify makes, not to --runs (their "
                           "recorded settings are checked against the profile)")
        least = profile.performance.get(key, 1)
        if not math.isfinite(value) or value < least:
            raise CliError(f"{flag} must be at least {least:g} (profile {profile.name} "
                           f"v{profile.version}), not {value:g}")
        options.append(f"{flag}={value:g}")
    return options


def _target(label: str, expectations: list[Path] | None = None
            ) -> tuple[TargetRequest, dict[str, Any], list[Path]]:
    """:func:`harness.cert.certify.describe_target`, its refusal as a one-line CliError."""
    try:
        return describe_target(label, expectations)
    except EvidenceError as exc:
        raise CliError(str(exc)) from None


def _run_suites(args: argparse.Namespace, profile: Profile, label: str,
                perf_options: list[str]) -> Path:
    installed = known_suites()
    suites = [s for s in profile.suites if s in installed]
    for missing in (s for s in profile.suites if s not in installed):
        print(f"certify: suite {missing!r} is not installed; criteria over it will be "
              "'not measured'")
    if not suites:
        raise CliError(f"none of the suites profile {profile.name!r} requires is installed")
    scope = profile.scope(args.scope)
    run_id = new_run_id()
    # every value is attached to its option (--opt=value), so none can pose as an option
    argv = [sys.executable, "-m", "harness", "run", f"--target={label}",
            f"--results-dir={args.results_dir}", f"--reports-dir={args.reports_dir}",
            f"--run-id={run_id}", *(f"--suite={suite}" for suite in suites)]
    options = {"-m": scope.markexpr, "--case-timeout": args.case_timeout,
               "--isolation": args.isolation, "-n": args.numprocesses}
    argv += [f"{flag}{'=' if flag.startswith('--') else ''}{value}"
             for flag, value in options.items() if value is not None]
    argv += [f"--expectations={path}" for path in args.expectations]
    if perf_options:
        argv += ["--", *perf_options]
    selection = (f"cases marked -m {scope.markexpr} in {', '.join(suites)}; a suite with no "
                 "such case is not measured" if scope.markexpr else ", ".join(suites))
    print(f"certify: running {selection} on {label} (scope {scope.name}, run {run_id})",
          flush=True)
    status = subprocess.run(argv, check=False).returncode
    if status not in RUN_OK:
        raise CliError(f"'shipei run' ended with exit status {status}; no certificate issued")
    return args.results_dir / run_id


def _summary(issued: Issued) -> list[str]:
    lines = []
    for result in issued.evaluation.criteria:
        c = result.criterion
        shown = (f"{result.passed}/{result.measured} = {result.value:.2%}" if result.is_measured
                 else f"not measured: {result.reason}")
        lines.append(f"  {c.id:<18} {c.suite:<12} {shown}")
    p = issued.statement["predicate"]
    lines += [f"level:       {level_label(p['level']['id'])} (scope {p['scope']['name']})"]
    if scenario_of(p["profile"]["name"]) is not None:  # a scenario's words for the level
        lines.append(f"scenario:    {fit_label(p['level']['id'])}")
    lines += [f"certificate: {issued.certificate}",
              f"page:        {issued.page}",
              f"id:          {p['certificate_id']}, valid until {p['expires_at']}"]
    return lines


def run(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        return _certify_bundle(args)
    if not args.target:
        raise CliError("give --target (or --bundle FILE for a vendor's evidence bundle)")
    profile = _profile(args)
    try:
        key = load_key(check_option_file(args.key, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    certifies_dir(args.certificates_dir)
    valid_days = profile.validity_days if args.valid_days is None else args.valid_days
    if not 1 <= valid_days <= profile.validity_days:
        raise CliError(f"--valid-days must be between 1 and {profile.validity_days} "
                       f"(profile {profile.name})")
    perf_options = performance_options(args, profile)
    for path in args.expectations:
        check_option_file(path, EXPECTATIONS_BYTES, "expectations file")
    request, described, driver_files = _target(args.target, args.expectations)
    if args.runs:
        run_dirs = [locate_run(args.results_dir, r) for r in args.runs]
    else:
        if not described.get("available"):
            raise CliError(f"target {request.label!r} is not available here: "
                           f"{described.get('reason')}")
        run_dirs = [_run_suites(args, profile, request.label, perf_options)]
    certify = certify_request(profile, args.scope, request.label, described, driver_files,
                              key, center_name(args.key.parent), valid_days,
                              args.certificates_dir)
    try:
        issued = issue(certify, run_dirs)
    except EvidenceError as exc:
        raise CliError(f"cannot certify: {exc}") from None
    try:
        _start_revocation_list(args, key)
    except CliError as exc:
        raise CliError(f"certificate {issued.certificate} was issued, but the revocation list "
                       f"beside it was not written: {exc}") from None
    for line in _summary(issued):
        print(line)
    for line in _notes(issued, profile):
        print(line)
    if issued.evaluation.level == "none":
        print(f"certify: the certificate says {level_label('none')}: the target reached no "
              "compatibility level (exit status 1)")
        return 1
    return 0


def _notes(issued: Issued, profile: Profile) -> list[str]:
    """What the certificate does not rest on: suites with no records in this scope, and
    checks that did not apply."""
    predicate = issued.statement["predicate"]
    missing = [s for s in profile.suites if s not in predicate["suites"]]
    notes = []
    if missing:
        notes.append(f"not measured: {', '.join(missing)} (no case of "
                     f"{'these suites' if len(missing) > 1 else 'this suite'} in scope "
                     f"{predicate['scope']['name']}; criteria over them cap the level)")
    for row in predicate["criteria"]:
        if row.get("not_applicable"):
            notes.append(f"not applicable: {row['not_applicable']} case(s) of {row['id']} "
                         "(skipped checks the target does not claim, e.g. thread safety)")
    settings = (predicate.get("latency") or {}).get("settings")
    if settings:
        notes.append("performance measured with: " + ", ".join(
            f"{k} >= {v:g}" for k, v in sorted(settings.items())))
    return notes
