"""``shipei run``: a thin front over pytest for running suites on targets."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from harness.bounded import EXPECTATIONS_BYTES
from harness.cli.common import (
    CliError,
    add_run_location_options,
    known_suites,
    positive_seconds,
    resolve_suite,
    worker_count,
)
from harness.cli.option_files import check_option_file
from harness.cli.run_farm import add_farm_options
from harness.results.case_record import RunSelection
from harness.run.parallelism import default_numprocesses
from harness.run.plugin import LABGRID_PYTEST_PLUGIN

DEFAULT_SUITE = "operators"
MODEL_FILE_SUITE = "model_file"
#: the suite whose cases are timed: never parallelized by default
TIMED_SUITE = "performance"

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
    parser.add_argument("-n", dest="numprocesses", type=bounded_worker_count,
                        help="parallel pytest-xdist workers (auto, N)")
    parser.add_argument("--case-timeout", type=positive_seconds,
                        help="per-case timeout in seconds")
    parser.add_argument("--isolation", choices=("process", "inline"),
                        help="worker subprocess per target (default) or in-process")
    parser.add_argument("--worker-memory-limit", metavar="SIZE", type=memory_size,
                        help="memory ceiling of each target worker (e.g. 8G, or none); "
                             "default 75%% of physical memory")
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
    parser.add_argument("--lg-coordinator", metavar="HOST:PORT", type=coordinator_argument,
                        help="the labgrid coordinator of place= targets and --places "
                             "(default: LG_COORDINATOR; the name labgrid's pytest plugin uses)")
    add_farm_options(parser)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    parser.set_defaults(handler=run)


def max_workers() -> int:
    """The most parallel workers ``-n`` may ask for: past a few per core they only
    thrash (and pytest-xdist would try to start every one)."""
    return max(64, 4 * (os.cpu_count() or 1))


def bounded_worker_count(text: str) -> str:
    """argparse type for ``-n``: :func:`worker_count`, at most :func:`max_workers`."""
    count = worker_count(text)
    if count.isdigit() and int(count) > max_workers():
        raise argparse.ArgumentTypeError(f"at most {max_workers()} workers, not {text}")
    return count


def coordinator_argument(text: str) -> str:
    """argparse type for ``--lg-coordinator``: ``HOST[:PORT]``, no spaces or commas."""
    address = text.strip()
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    if not host or any(c in address for c in " ,/") or (port and not port.isdigit()):
        raise argparse.ArgumentTypeError(f"not a coordinator address HOST[:PORT]: {text!r}")
    return address


def memory_size(text: str) -> str:
    """argparse type for ``--worker-memory-limit``: a size :mod:`harness.isolation.memory_limit`
    reads, passed on as written."""
    from harness.isolation import memory_limit
    try:
        memory_limit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _suite_names() -> list[str]:
    try:
        return [n for n in known_suites() if n != MODEL_FILE_SUITE]
    except CliError:
        return []


def check_targets(labels: list[str]) -> None:
    """Fail fast, with one line, on an unknown, misconfigured or unavailable target."""
    from harness.cli.target_options import describe_option_error
    from harness.driver.registry import RegistryError, TargetRequest, discover
    from harness.driver.target import TargetError
    from harness.run.target_pool import build_target

    registry = discover()
    for label in labels:
        try:
            request = TargetRequest.parse(label)
            target = build_target(registry, request)
        except RegistryError as exc:
            raise CliError(str(exc)) from None
        except (TypeError, ValueError, TargetError) as exc:
            raise CliError(describe_option_error(registry, request, exc)) from None
        availability = target.availability()
        if not availability.available:
            raise CliError(f"target {label!r} is not available here: {availability.reason}")


@dataclass(frozen=True)
class RunOptions:
    """How to run a selection (everything but which cases)."""

    numprocesses: str | None = None
    case_timeout: float | None = None
    isolation: str | None = None
    worker_memory_limit: str | None = None
    expectations: tuple[Path, ...] = ()
    run_id: str | None = None
    durations_from: str | None = None
    resume: str | None = None
    retry_failed: str | None = None
    exitfirst: bool = False
    verbose: bool = False
    results_dir: Path = Path("results")
    reports_dir: Path = Path("reports")
    pytest_args: tuple[str, ...] = ()


def pytest_argv(selection: RunSelection, options: RunOptions) -> list[str]:
    """The pytest command line for a structured selection and run options."""
    check_targets(list(selection.targets))
    for path in map(Path, selection.models):  # a path that names no file is a usage error;
        if not path.is_file():  # an unusable file is the model_file suite's recorded error
            raise CliError(f"model file {path} does not exist" if not path.exists()
                           else f"model path {path} is not a file")
    argv = [str(resolve_suite(name)) for name in selection.suites]
    argv += ["-p", "no:cacheprovider", "-p", f"no:{LABGRID_PYTEST_PLUGIN}", "-rfE", "--tb=short",
             # this command imported the harness and the suites package before pytest
             # could mark them for assertion rewriting, which they do not need
             "-W", "ignore:Module already imported so cannot be rewritten"
                   ":pytest.PytestAssertRewriteWarning"]
    argv.append("-v" if options.verbose else "-q")
    for target in selection.targets:
        argv += ["--target", target]
    for path in selection.models:
        argv += ["--model", str(path)]
    for path in options.expectations:
        check_option_file(path, EXPECTATIONS_BYTES, "expectations file")
        argv += ["--expectations", str(path)]
    flags = {"-k": selection.keyword, "-m": selection.markexpr, "-n": options.numprocesses,
             "--case-timeout": options.case_timeout, "--isolation": options.isolation,
             "--worker-memory-limit": options.worker_memory_limit,
             "--run-id": options.run_id, "--shard": selection.shard,
             "--durations-from": options.durations_from, "--resume": options.resume,
             "--retry-failed": options.retry_failed}
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    if options.exitfirst:
        argv.append("-x")
    argv += ["--results-dir", str(options.results_dir),
             "--reports-dir", str(options.reports_dir)]
    return argv + list(options.pytest_args)


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    """``shipei run``'s arguments as a selection and options, then as pytest's argv."""
    suites = list(args.suite) or ([MODEL_FILE_SUITE] if args.model else [DEFAULT_SUITE])
    if args.model and MODEL_FILE_SUITE not in suites:
        suites.append(MODEL_FILE_SUITE)
    selection = RunSelection(suites=tuple(suites), targets=tuple(args.target),
                             markexpr=args.markexpr, keyword=args.keyword, shard=args.shard,
                             models=tuple(str(p) for p in args.model))
    options = RunOptions(
        numprocesses=args.numprocesses or (
            None if TIMED_SUITE in suites  # timing must not share the cores
            else default_numprocesses(args.target, args.pytest_args)),
        case_timeout=args.case_timeout,
        isolation=args.isolation, worker_memory_limit=args.worker_memory_limit,
        expectations=tuple(args.expectations), run_id=args.run_id,
        durations_from=args.durations_from, resume=args.resume,
        retry_failed=args.retry_failed, exitfirst=args.exitfirst, verbose=args.verbose,
        results_dir=args.results_dir, reports_dir=args.reports_dir,
        pytest_args=tuple(args.pytest_args))
    return pytest_argv(selection, options)


def run(args: argparse.Namespace) -> int:
    import pytest

    from harness.run.selection import SelectionError, continuation_argv, finalize, resolve_run

    if args.lg_coordinator:  # for this process, its workers and a farm's children
        from harness.lab.coordinator import COORDINATOR_ENV
        os.environ[COORDINATOR_ENV] = args.lg_coordinator
    if args.places or args.max_places or args.shards_per_place != 1:  # many boards at once
        from harness.cli.run_farm import run_farm
        return run_farm(args)
    if args.resume and args.retry_failed:
        raise CliError("--resume and --retry-failed cannot be combined: resume run "
                       f"{args.resume} first, then retry its failures")
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
