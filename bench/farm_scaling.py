"""Farm scaling: one selection on 1, 2, 4, 8 simulated boards at once, wall time and
efficiency per board count.

Each board is a ``shipei sim board --tcp 0`` process on loopback; the farm
(:mod:`harness.lab.farm`) runs one ``shipei run --shard I/N`` child per board and joins
them (:mod:`harness.lab.farm_merge`), exactly as ``shipei run --places`` does after
labgrid has handed it the places (reservation and acquisition are not timed here: they
cost a few ``labgrid-client`` calls per place, before the run). For each board count:

- ``wall_s``: from the first child started to the joined run written (join included);
- ``speedup``: one board's wall time over this one's; ``efficiency``: speedup / boards;
- ``join_s``: the merge alone; ``child_s``: each child's wall time (slowest, median);
- ``cpu_s``: the CPU time all of it took (boards, children, workers): near ``wall_s``
  times the cores, the host's CPU is what limits the run, not the boards;
- ``load_average``: the machine's one-minute load when the measurement ended.

With ``--repeat R`` the board counts are measured R times, interleaved (1, 2, 4, 1, 2,
4, ...), and each figure is the median: on a shared machine the load changes.

``--line-baud B`` paces each simulated board's answers to a serial line of B baud (and
the host's writes, ``pace_baud``), so a case costs what the link costs, as on a real
board, instead of the host's CPU running the simulated chip: on a host with few cores the
unpaced figures measure the host, not the farm.

    python bench/farm_scaling.py [--boards 1,2,4,8] [--selection representative|full]
        [--line-baud 0] [--repeat 1] [--shards-per-place 1] [--json out.json]

Everything runs on this machine: the boards, the children and the join share its
cores (say how many next to the figures; ``cpu_count`` is in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.lab.farm import Farm, FarmPlan, Place  # noqa: E402
from harness.lab.farm_merge import join  # noqa: E402
from harness.results.record_files import load_run  # noqa: E402

SELECTIONS = {
    "representative": ("--suite", "operators", "-m", "representative"),
    "full": ("--suite", "operators"),
}


def start_board(line_baud: int) -> subprocess.Popen[str]:
    extra = ["--baud", str(line_baud)] if line_baud else []
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "sim", "board", "--tcp", "0", "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)


def cpu_seconds() -> float:
    """CPU time of every finished child process of this one (boards, children, their
    workers), user and system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(count: int, selection: str, line_baud: int, workdir: Path, rep: int,
            shards_per_place: int = 1) -> dict:
    cpu_before = cpu_seconds()
    boards = [start_board(line_baud) for _ in range(count)]
    try:
        urls = [b.stdout.readline().strip() for b in boards]  # type: ignore[union-attr]
        target = "serial-board" + (f",pace_baud={line_baud}" if line_baud else "")
        run_id = f"farm{count}x{shards_per_place}-{selection}-{rep}"
        plan = FarmPlan(target, SELECTIONS[selection], workdir / "results",
                        workdir / "reports", run_id=run_id, shards_per_place=shards_per_place)
        farm = Farm(plan, [Place(f"sim-{i}", url) for i, url in enumerate(urls)],
                    log=lambda line: None)
        started = time.monotonic()
        jobs = farm.run()
        joined_at = time.monotonic()
        result = join(farm, jobs)
        ended = time.monotonic()
    finally:
        for board in boards:
            board.terminate()
        for board in boards:
            board.wait(10)
    _, records = load_run(result.paths.run_dir)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    children = [c.wall_s for job in jobs for c in job.runs]
    return {"boards": count, "shards": len(jobs), "cases": len(records), "statuses": counts,
            "wall_s": round(ended - started, 2), "join_s": round(ended - joined_at, 2),
            "cpu_s": round(cpu_seconds() - cpu_before, 2),
            "load_average": round(os.getloadavg()[0], 1),
            "child_s_max": round(max(children), 2),
            "child_s_median": round(statistics.median(children), 2),
            "lost": sorted(farm.lost)}


def median_row(rounds: list[dict]) -> dict:
    """One board count's figures: the median of each timing over the rounds."""
    row = dict(rounds[0])
    for key in ("wall_s", "join_s", "child_s_max", "child_s_median", "cpu_s", "load_average"):
        row[key] = round(statistics.median(r[key] for r in rounds), 2)
    row["lost"] = sorted({p for r in rounds for p in r["lost"]})
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boards", default="1,2,4,8",
                        help="board counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--selection", choices=sorted(SELECTIONS), default="representative")
    parser.add_argument("--line-baud", type=int, default=0,
                        help="pace each board to this line rate (0: unpaced)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the board counts, interleaved; each figure is "
                             "the median over the rounds (default 1)")
    parser.add_argument("--shards-per-place", type=int, default=1, metavar="K",
                        help="shards per board, from one queue (shipei run "
                             "--shards-per-place; default 1)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    counts = [int(c) for c in args.boards.split(",")]
    measured: dict[int, list[dict]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory(prefix="farm-scaling-") as tmp:
        for rep in range(args.repeat):
            for count in counts:
                row = measure(count, args.selection, args.line_baud, Path(tmp), rep,
                              args.shards_per_place)
                measured[count].append(row)
                print(json.dumps(row), flush=True)
    rows = [median_row(measured[count]) for count in counts]
    base = next((r["wall_s"] for r in rows if r["boards"] == 1), None)
    for row in rows:
        if base:
            row["speedup"] = round(base / row["wall_s"], 2)
            row["efficiency"] = round(base / row["wall_s"] / row["boards"], 2)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"\nselection {args.selection}, line {args.line_baud or 'unpaced'} baud, "
          f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end")
    print(f"{'boards':>6} {'cases':>6} {'wall s':>8} {'speedup':>8} {'effic.':>7} "
          f"{'join s':>7} {'child max s':>12} {'CPU s':>7} {'load':>5}  (median of "
          f"{args.repeat})")
    for row in rows:
        print(f"{row['boards']:>6} {row['cases']:>6} {row['wall_s']:>8.1f} "
              f"{row.get('speedup', float('nan')):>8.2f} "
              f"{row.get('efficiency', float('nan')):>7.2f} {row['join_s']:>7.2f} "
              f"{row['child_s_max']:>12.1f} {row['cpu_s']:>7.1f} {row['load_average']:>5.1f}")
    if args.json:
        args.json.write_text(json.dumps({
            "selection": args.selection, "line_baud": args.line_baud,
            "cpu_count": os.cpu_count(), "load_average_end": load, "rows": rows,
            "rounds": measured}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
