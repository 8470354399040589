"""Harness overhead on the models suite: ``shipei`` against a bare onnxruntime loop.

Each round runs, one after the other, fresh processes timed from start to exit:

- **bare**: a loop over the zoo's models that are installed, not ``slow`` and not
  streaming: the verified model bytes and the manifest's data sets, one
  ``InferenceSession`` per model, every data set run and judged against the stored
  golden with the manifest's own policy (the same comparison the suite makes);
- **harness**: ``pytest`` on exactly those cases of ``suites/models`` on
  ``onnxruntime-cpu`` (worker subprocess, records, reports).

It prints both medians over ``--rounds`` and the ratio harness/bare.

    python bench/models_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from operators_overhead import Timed, _line, _timed  # noqa: E402

TEST_FILE = "suites/models/test_models.py"
TARGET = "onnxruntime-cpu"


def chosen_entries() -> tuple[Any, list[Any]]:
    """The zoo and the entries both sides run."""
    from harness.modelzoo.zoo import Zoo

    zoo = Zoo()
    return zoo, [e for e in zoo.entries if e.status().available and not e.manifest.slow
                 and e.manifest.streaming is None]


def bare_main() -> None:
    import onnxruntime as ort

    from harness.modelzoo import golden as golden_store
    from harness.modelzoo.execute import judge_outputs

    zoo, entries = chosen_entries()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    passed = 0
    for entry in entries:
        golden = golden_store.load(zoo.golden_dir, entry.name, entry.manifest.sha256,
                                   entry.inputs_digest())
        session = ort.InferenceSession(entry.model_bytes(), options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        actual = [dict(zip(names, session.run(names, feeds), strict=True))
                  for feeds in entry.data_sets()]
        passed += judge_outputs(entry.manifest, golden.outputs, actual, "fp32")[0]
    print(json.dumps({"cases": len(entries), "passed": passed}))


def harness_run(node_ids: list[str]) -> Timed:
    with tempfile.TemporaryDirectory() as tmp:
        return _timed([sys.executable, "-m", "pytest", *node_ids, "--target", TARGET, "-q",
                       "-p", "no:cacheprovider", "--results-dir", f"{tmp}/results",
                       "--reports-dir", f"{tmp}/reports", "--no-header"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_main()
        return
    _, entries = chosen_entries()
    node_ids = [f"{TEST_FILE}::{e.manifest.case_name}[{TARGET}]" for e in entries]
    bare_argv = [sys.executable, __file__, "--bare"]
    _timed(bare_argv)  # warm the page cache
    bare_runs: list[Timed] = []
    harness_runs: list[Timed] = []
    for round_number in range(args.rounds):
        bare_runs.append(_timed(bare_argv))
        harness_runs.append(harness_run(node_ids))
        print(f"round {round_number + 1}: bare {bare_runs[-1].wall_s:.2f} s, "
              f"shipei {harness_runs[-1].wall_s:.2f} s", file=sys.stderr, flush=True)
    bare = json.loads(bare_runs[-1].stdout.strip().splitlines()[-1])
    print(f"\nmodels: {bare['cases']} (bare passed {bare['passed']})   rounds: {args.rounds}   "
          f"load average at end: {os.getloadavg()[0]:.1f}")
    print(_line("bare onnxruntime", bare_runs, bare_runs))
    print(_line("shipei", harness_runs, bare_runs))

if __name__ == "__main__":
    main()
