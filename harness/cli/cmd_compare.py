"""``shipei compare BASELINE NEW``: latency regression check on stored samples."""

from __future__ import annotations

import argparse
import json
import math

from harness.cli.common import CliError, add_run_location_options, locate_run
from harness.perf.compare import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_THRESHOLD,
    compare_runs,
    format_table,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare the latency of two runs; fail on a significant regression",
        description="Compare every performance case two runs share: the change of the median "
                    "inference time with a block-bootstrap confidence interval. Exit status: "
                    "0 no regression, 1 a regression whose whole interval lies beyond the "
                    "threshold (or, with --strict, a case that could not be compared), "
                    "2 a usage error.")
    parser.add_argument("baseline", help="baseline run id, unique prefix, or run folder")
    parser.add_argument("new", help="new run id, unique prefix, or run folder")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD * 100,
                        metavar="PERCENT", help="slowdown that counts as a regression "
                        f"(default {DEFAULT_THRESHOLD:.0%}%)")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE * 100,
                        metavar="PERCENT", help="confidence level of the interval "
                        f"(default {DEFAULT_CONFIDENCE:.0%}%)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--baseline-repeat", action="append", default=[], metavar="RUN",
                        help="another run of the baseline build; repeatable (run-to-run "
                             "spread then widens the interval)")
    parser.add_argument("--new-repeat", action="append", default=[], metavar="RUN",
                        help="another run of the new build; repeatable")
    parser.add_argument("--pair", action="append", default=[], metavar="BASE=NEW",
                        help="compare baseline target label BASE with new label NEW; "
                             "repeatable (default: equal labels)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when a baseline case cannot be compared")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        base, sep, new = item.partition("=")
        if not sep or not base or not new:
            raise CliError(f"--pair {item!r} is not BASE=NEW")
        pairs[base] = new
    return pairs


def run(args: argparse.Namespace) -> int:
    if args.resamples < 100:
        raise CliError("--resamples must be at least 100")
    for option, value in (("--threshold", args.threshold), ("--confidence", args.confidence)):
        if not math.isfinite(value):
            raise CliError(f"{option} must be a finite number of percent, not {value}")
    baseline = [locate_run(args.results_dir, r) for r in [args.baseline, *args.baseline_repeat]]
    new = [locate_run(args.results_dir, r) for r in [args.new, *args.new_repeat]]
    try:
        result = compare_runs(baseline, new, threshold=args.threshold / 100,
                              confidence=args.confidence / 100, pairs=_pairs(args.pair),
                              resamples=args.resamples)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if not result.cases and not result.not_compared:
        raise CliError(f"runs {result.baseline_run} and {result.new_run} share no "
                       "performance cases (run shipei run --suite performance first)")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(format_table(result)))
    failed = bool(result.regressions) or (args.strict and bool(result.not_compared))
    return 1 if failed else 0
