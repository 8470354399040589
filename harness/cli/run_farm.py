"""``shipei run --places TAG=VALUE [--max-places N]``: one selection on every matching
labgrid place at once (:mod:`harness.lab.farm`), joined into one run.

The places are reserved through labgrid's reservations at the coordinator
``LG_COORDINATOR``, acquired (their boards power-cycled where a place has a power
resource), given one shard each, and released and their reservations cancelled on every
exit path. ``--target`` names the board's target without a place or url
(``serial-board`` or ``serial-board,timeout=5``); each place's serial URL is added to it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.cli.common import CliError

#: seconds to wait for matching places held by others to be allocated to us
PLACE_WAIT_S = 60.0
#: places acquired at once (each acquisition is a holder process and a labgrid session)
ACQUIRE_THREADS = 16
#: ``shipei run`` options a farm run sets itself, or that do not apply to one
REFUSED = {"shard": "--shard", "resume": "--resume", "retry_failed": "--retry-failed",
           "durations_from": "--durations-from", "numprocesses": "-n"}


def add_farm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--places", metavar="TAG=VALUE[,TAG=VALUE]",
                        help="run on every labgrid place with these tags at once (reserved at "
                             "LG_COORDINATOR), in shards joined into one run; a place lost "
                             "mid-run has its remaining cases re-run on another")
    parser.add_argument("--max-places", type=_positive_int, default=0, metavar="N",
                        help="with --places: use at most N places (default: all matching)")
    parser.add_argument("--shards-per-place", type=_positive_int, default=1, metavar="K",
                        help="with --places: split the selection into K shards per place "
                             "(default 1); the places take them from one queue, so a faster "
                             "board runs more of them and a lost board's shard is smaller")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def child_run_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``shipei run`` arguments every shard repeats (all but target, run id, places,
    folders and pytest's)."""
    argv: list[str] = []
    for suite in args.suite:
        argv += ["--suite", suite]
    for model in args.model:
        argv += ["--model", str(model)]
    for path in args.expectations:
        argv += ["--expectations", str(path)]
    for flag, value in (("-k", args.keyword), ("-m", args.markexpr),
                        ("--case-timeout", args.case_timeout), ("--isolation", args.isolation),
                        ("--worker-memory-limit", args.worker_memory_limit)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["-x"] if args.exitfirst else []
    argv += ["-v"] if args.verbose else []
    return tuple(argv)


def check_request(args: argparse.Namespace) -> None:
    """Refuse, in one line, what a farm run cannot do."""
    if args.max_places and not args.places:
        raise CliError("--max-places needs --places")
    if args.shards_per_place != 1 and not args.places:
        raise CliError("--shards-per-place needs --places")
    given = [flag for attr, flag in REFUSED.items() if getattr(args, attr, None)]
    if given:
        raise CliError(f"--places runs its own shards: {', '.join(given)} cannot be combined "
                       "with it")
    if len(args.target) != 1:
        raise CliError("--places needs exactly one --target: the board's target without "
                       "place= or url= (e.g. --target serial-board)")


def run_farm(args: argparse.Namespace) -> int:
    """Reserve, acquire, run, join, release: ``shipei run --places``."""
    from harness.lab.coordinator import LabError, coordinator_address
    from harness.lab.farm import FarmError
    from harness.lab.reservations import cancel_reservations, parse_filter, reserve_places
    from harness.results.record_files import check_run_id

    check_request(args)
    try:
        tags = parse_filter(args.places)
        if args.run_id is not None:
            check_run_id(args.run_id)
        address = coordinator_address()
    except (ValueError, LabError) as exc:
        raise CliError(str(exc)) from None
    _check_farm_target(args.target[0])
    try:
        allocations = reserve_places(address, tags, args.max_places, PLACE_WAIT_S)
    except LabError as exc:
        raise CliError(str(exc)) from None
    print(f"farm: reserved {len(allocations)} place(s): "
          f"{', '.join(a.place for a in allocations)}")
    acquired: list[Any] = []
    try:
        places = _acquire(address, [a.place for a in allocations], acquired)
        return _run_and_join(args, places)
    except FarmError as exc:
        raise CliError(str(exc)) from None
    finally:
        for place in acquired:
            with contextlib.suppress(Exception):
                place.release()
        for problem in cancel_reservations(address, [a.token for a in allocations]):
            print(f"farm: note: {problem}")


def _check_farm_target(target: str) -> None:
    from harness.lab.farm import FarmError, check_target

    try:
        check_target(target)
    except FarmError as exc:
        raise CliError(str(exc)) from None


def _acquire(address: str, names: Sequence[str], acquired: list[Any]) -> list[Any]:
    """Acquire the places at once (each a holder process), power-cycling each board that
    can be; a place that cannot be acquired or cycled is left out with a note. Appends
    to ``acquired`` as it goes, so the caller releases even what a failure midway left
    held."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(names), ACQUIRE_THREADS) or 1) as pool:
        found = list(pool.map(lambda name: _acquire_one(address, name, acquired), names))
    places = [place for place in found if place is not None]
    if not places:
        raise CliError(f"none of the reserved places ({', '.join(names)}) could be used")
    return places


def _acquire_one(address: str, name: str, acquired: list[Any]) -> Any:
    from harness.lab.coordinator import LabError
    from harness.lab.farm import Place
    from harness.lab.place import acquire_place

    try:
        place = acquire_place(name, address)
    except LabError as exc:
        print(f"farm: place {name} left out: {exc}")
        return None
    acquired.append(place)  # list.append is atomic: the threads share the list
    try:
        if place.power_port() is not None:
            place.power_cycle("before the farm's run")
        return Place(name, place.serial_url, dict(place.state.tags), place.identity)
    except LabError as exc:
        print(f"farm: place {name} left out: {exc}")
        return None


def farm_plan(args: argparse.Namespace) -> Any:
    """The :class:`~harness.lab.farm.FarmPlan` of ``shipei run --places`` arguments."""
    from harness.lab.farm import FarmPlan

    return FarmPlan(target=args.target[0], run_args=child_run_args(args),
                    results_dir=Path(args.results_dir), reports_dir=Path(args.reports_dir),
                    run_id=args.run_id or "", pytest_args=tuple(args.pytest_args),
                    shards_per_place=args.shards_per_place)


def _run_and_join(args: argparse.Namespace, places: Sequence[Any]) -> int:
    from harness.lab.farm import Farm
    from harness.lab.farm_merge import join
    from harness.reports.writing import terminal_summary
    from harness.results.record_files import latest_attempts

    farm = Farm(farm_plan(args), places)
    result = join(farm, farm.run())
    for child in result.info["farm"]["children"]:
        lost = f", place lost: {child['lost']}" if child["lost"] else ""
        print(f"farm: run {child['run_id']} (shard {child['shard']}) on {child['place']}: "
              f"{child['finished_cases']} case(s) finished in {child['wall_s']:.1f} s{lost}")
    for note in result.notes:
        print(f"note: {note}")
    effective = latest_attempts(result.records)
    for line in terminal_summary(effective, result.info, result.paths, result.report_files):
        print(line)
    return 1 if any(not record.get("as_expected", True) for record in effective) else 0
