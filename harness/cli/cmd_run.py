"""``shipei run``: a thin front over pytest for running suites on targets."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import CliError, add_run_location_options, known_suites, resolve_suite
from harness.modelfile import ModelFileError, check_model_file
from harness.selection import SelectionError, continuation_argv, finalize, resolve_run

DEFAULT_SUITE = "operators"
MODEL_FILE_SUITE = "model_file"

#: pytest exit status -> shipei exit status (0 ok, 1 unexpected results, 2 usage/config)
EXIT_CODES = {0: 0, 1: 1, 2: 130, 3: 3, 4: 2, 5: 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run suites on targets (a front over pytest)",
        description="Run suites on targets. Everything after '--' goes to pytest unchanged. "
                    "Exit status: 0 every case passed or matched its expectation, 1 an "
                    "unexpected result, 2 a usage or configuration error.",
    )
    parser.add_argument("--suite", action="append", default=[],
                        help=f"suite name or path; repeatable (default {DEFAULT_SUITE}; "
                             f"known: {', '.join(_suite_names())})")
    parser.add_argument("--target", action="append", default=[],
                        help="target NAME[:CONFIG][,k=v]; repeatable (default onnxruntime-cpu)")
    parser.add_argument("--model", action="append", default=[], type=Path,
                        help="an ONNX model file to check on every target; repeatable")
    parser.add_argument("-k", dest="keyword", help="only cases matching this pytest -k expression")
    parser.add_argument("-m", dest="markexpr", help="only cases matching this marker expression")
    parser.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first "
                        "unexpected result")
    parser.add_argument("-n", dest="numprocesses", help="parallel pytest-xdist workers (auto, N)")
    parser.add_argument("--case-timeout", type=float, help="per-case timeout in seconds")
    parser.add_argument("--isolation", choices=("process", "inline"),
                        help="worker subprocess per target (default) or in-process")
    parser.add_argument("--expectations", action="append", default=[], type=Path,
                        help="expectations file to use instead of the targets' own")
    parser.add_argument("--run-id", help="id for this run (default: new timestamped id)")
    parser.add_argument("--shard", metavar="I/N", help="run only the I-th of N balanced parts "
                        "of the cases (one job of a CI matrix); join them with shipei merge")
    parser.add_argument("--durations-from", metavar="RUN",
                        help="balance --shard by the durations recorded in RUN")
    parser.add_argument("--resume", metavar="RUN", help="run only the cases missing from RUN "
                        "(an interrupted run), appending to it; alone, repeats RUN's selection")
    parser.add_argument("--retry-failed", metavar="RUN", help="re-run the cases that ended "
                        "unexpectedly in RUN, recording the new attempt (failed then passed "
                        "is reported as flaky)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    add_run_location_options(parser)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    parser.set_defaults(handler=run)


def _suite_names() -> list[str]:
    try:
        return [n for n in known_suites() if n != MODEL_FILE_SUITE]
    except CliError:
        return []


def check_targets(labels: list[str]) -> None:
    """Fail fast, with one line, on an unknown, misconfigured or unavailable target."""
    from harness.registry import RegistryError, TargetRequest, discover

    registry = discover()
    for label in labels:
        try:
            request = TargetRequest.parse(label)
            target = registry.build(request)
        except RegistryError as exc:
            raise CliError(str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise CliError(f"bad options for target {label!r}: {exc}") from None
        availability = target.availability()
        if not availability.available:
            raise CliError(f"target {label!r} is not available here: {availability.reason}")


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    check_targets(args.target)
    for path in args.model:
        try:
            check_model_file(path)
        except ModelFileError as exc:
            raise CliError(str(exc)) from None
    suites = args.suite or ([MODEL_FILE_SUITE] if args.model else [DEFAULT_SUITE])
    if args.model and MODEL_FILE_SUITE not in suites:
        suites.append(MODEL_FILE_SUITE)
    argv = [str(resolve_suite(name)) for name in suites]
    argv += ["-p", "no:cacheprovider", "-rfE", "--tb=short"]
    argv.append("-v" if args.verbose else "-q")
    for target in args.target:
        argv += ["--target", target]
    for path in args.model:
        argv += ["--model", str(path)]
    for path in args.expectations:
        argv += ["--expectations", str(path)]
    options = {"-k": args.keyword, "-m": args.markexpr, "-n": args.numprocesses,
               "--case-timeout": args.case_timeout, "--isolation": args.isolation,
               "--run-id": args.run_id, "--shard": args.shard,
               "--durations-from": args.durations_from, "--resume": args.resume,
               "--retry-failed": args.retry_failed}
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    if args.exitfirst:
        argv.append("-x")
    argv += ["--results-dir", str(args.results_dir), "--reports-dir", str(args.reports_dir)]
    return argv + list(args.pytest_args)


def run(args: argparse.Namespace) -> int:
    import pytest

    continuing = args.resume or args.retry_failed
    try:
        argv = continuation_argv(args.results_dir, args.reports_dir, args.resume,
                                 args.retry_failed, args.numprocesses) if continuing and not (
            args.suite or args.target or args.model or args.keyword or args.markexpr
            or args.pytest_args) else pytest_arguments(args)
    except SelectionError as exc:
        raise CliError(str(exc)) from None
    status = int(pytest.main(argv))
    if status == 5 and continuing:
        run_dir = resolve_run(args.results_dir, continuing, "--resume")
        info = finalize(run_dir, args.reports_dir)
        print(f"nothing left to {'resume' if args.resume else 'retry'} in run {run_dir.name}")
        return int(info.get("exit_status") or 0)
    if status == 5:
        raise CliError("no cases were selected (check --suite, -k and -m)")
    return EXIT_CODES.get(status, status)
