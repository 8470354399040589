"""``shipei gate --target T [--baseline RUN_OR_FILE]``: the CI gate for a target driver."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli.common import (
    CliError,
    add_run_location_options,
    positive_seconds,
    resolve_suite,
    worker_count,
)
from harness.driver.target import TARGET_KINDS
from harness.gate import (
    CONTRACT_SUITE,
    GateError,
    GatePolicy,
    evaluate,
    gate_markexpr,
    load_baseline,
    required_suites,
    with_contract,
    write_outputs,
)
from harness.results.case_record import RunSelection

#: exit statuses: 0 pass, 1 driver findings, 2 usage, 3 only infrastructure failures
EXIT_INFRASTRUCTURE = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    kinds = "; ".join(f"{kind}: " + ", ".join(name + (f" -m {mark}" if mark else "")
                                              for name, mark in required_suites(kind))
                      for kind in TARGET_KINDS)
    parser = subparsers.add_parser(
        "gate", help="CI gate for a target driver: contract + required suites vs a baseline",
        description="Run the driver contract and the suites the target's kind requires "
                    f"({kinds}), then "
                    "fail on any contract violation, unexpected result, or regression against "
                    "--baseline (pass to fail/error, accuracy drift, significant latency "
                    "regression). Prints a Markdown summary for a pull-request comment and "
                    "writes gate.md, gate.json and gate-junit.xml next to the run's junit.xml. "
                    "Exit status: 0 pass, 1 findings, 2 usage error, 3 infrastructure "
                    "failures only.")
    parser.add_argument("--target", required=True, help="target NAME[:CONFIG][,k=v]")
    parser.add_argument("--baseline", metavar="RUN_OR_FILE",
                        help="run id, run folder or records.jsonl file to compare against")
    parser.add_argument("--suite", action="append", default=[],
                        help="suite to require instead of the kind's (repeatable); the "
                             "contract always runs")
    parser.add_argument("-m", dest="markexpr",
                        help="marker expression for the non-contract cases (default: the "
                             "kind's, above; 'all' for every case)")
    parser.add_argument("--profile", metavar="NAME_OR_TOML",
                        help="certification profile whose suites the gate requires (default: "
                             "the packaged profile of the target's kind)")
    parser.add_argument("-n", dest="numprocesses", type=worker_count,
                        help="parallel pytest-xdist workers")
    parser.add_argument("--case-timeout", type=positive_seconds,
                        help="per-case timeout in seconds")
    parser.add_argument("--expectations", action="append", default=[], type=Path,
                        help="expectations file to use instead of the target's own")
    parser.add_argument("--run-id", help="id for the gate's run (default: a new one)")
    parser.add_argument("--drift-factor", type=float, default=GatePolicy.drift_factor,
                        help="accuracy drift: fail when max abs error exceeds FACTOR x "
                             "baseline + max(atol, 1e-6) (default %(default)s)")
    parser.add_argument("--latency-threshold", type=float,
                        default=GatePolicy.latency_threshold,
                        help="relative latency change counted as a regression "
                             "(default %(default)s)")
    add_run_location_options(parser)
    parser.add_argument("pytest_args", nargs="*",
                        help="extra pytest arguments after '--' (e.g. --perf-model NAME)")
    parser.set_defaults(handler=run)


def _selection(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The gate's suites (the contract aside) and its -m expression: the kind's, from its
    certification profile and the suites' declarations, unless --suite/-m say otherwise."""
    from harness.driver.registry import discover

    kind = discover().build(args.target).identity.kind
    try:
        defaults = required_suites(kind, args.profile)
    except GateError as exc:
        raise CliError(str(exc)) from None
    if args.suite:
        mark = args.markexpr if args.markexpr not in (None, "", "all") else ""
        chosen = with_contract((name, mark) for name in args.suite)
    elif args.markexpr is not None:
        mark = "" if args.markexpr in ("", "all") else args.markexpr
        chosen = [(name, "" if name == CONTRACT_SUITE else mark) for name, _ in defaults]
    else:
        chosen = defaults
    for name, _ in chosen:
        resolve_suite(name)
    suites = [name for name, _ in chosen if name != CONTRACT_SUITE]
    markexpr = None if all(not mark for _, mark in chosen) else gate_markexpr(chosen)
    return suites, markexpr


def _pytest_argv(args: argparse.Namespace, suites: list[str], markexpr: str | None,
                 run_id: str) -> list[str]:
    from harness.cli.cmd_run import RunOptions, pytest_argv

    selection = RunSelection(suites=(CONTRACT_SUITE, *suites), targets=(args.target,),
                             markexpr=markexpr)
    options = RunOptions(numprocesses=args.numprocesses, case_timeout=args.case_timeout,
                         expectations=tuple(args.expectations), run_id=run_id,
                         results_dir=args.results_dir, reports_dir=args.reports_dir,
                         pytest_args=tuple(args.pytest_args))
    return pytest_argv(selection, options)


def run(args: argparse.Namespace) -> int:
    import pytest

    from harness.cli.cmd_run import check_targets
    from harness.results.record_files import RunPaths, find_run, load_run, new_run_id

    try:  # thresholds that would pass or stop everything are refused before any case runs
        policy = GatePolicy(drift_factor=args.drift_factor,
                            latency_threshold=args.latency_threshold)
    except ValueError as exc:
        raise CliError(f"--{exc}") from None
    check_targets([args.target])
    suites, markexpr = _selection(args)
    try:
        baseline = load_baseline(args.baseline, args.results_dir, args.target) \
            if args.baseline else None
    except GateError as exc:
        raise CliError(str(exc)) from None
    run_id = args.run_id or new_run_id()
    status = int(pytest.main(_pytest_argv(args, suites, markexpr, run_id)))
    if status == 5:
        raise CliError("the gate selected no cases (check --suite and -m)")
    try:
        run_dir = find_run(args.results_dir, run_id)
    except FileNotFoundError:
        raise CliError(f"the gate run recorded nothing (pytest exit status {status})") from None
    if status in (2, 3, 4):
        print(f"shipei gate: pytest ended with status {status}; judging what was recorded")
    info, records = load_run(run_dir)
    verdict = evaluate(info, records, args.target, suites, markexpr, baseline, policy, run_dir)
    paths = RunPaths(args.results_dir, args.reports_dir, run_id)
    markdown = write_outputs(verdict, records, paths.report_dir)
    print()
    print(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # GitHub Actions shows this on the workflow run's page
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown)
    if verdict.passed:
        return 0
    return EXIT_INFRASTRUCTURE if verdict.infrastructure_only else 1
