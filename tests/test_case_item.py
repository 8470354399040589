"""Cases collected as light case items keep pytest's ids, selection and markers."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SUITE = "suites/operators/test_operators.py"
TARGETS = ["onnxruntime-cpu", "onnxruntime-cpu,intra_op_threads=1"]


def collected(*args: str) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
            *[a for t in TARGETS for a in ("--target", t)], *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_each_case_is_one_item_per_target_with_the_parametrized_id() -> None:
    ids = collected(SUITE, "-k", "test_abs or test_neg")
    for case in ("test_abs", "test_neg"):
        first = ids.index(f"{SUITE}::{case}[{TARGETS[0]}]")
        assert ids[first + 1] == f"{SUITE}::{case}[{TARGETS[1]}]"
    assert len(ids) == 2 * len({i.split("[")[0] for i in ids})


def test_a_node_id_without_the_target_selects_the_case_on_every_target() -> None:
    assert collected(f"{SUITE}::test_abs") == [f"{SUITE}::test_abs[{t}]" for t in TARGETS]


def test_markers_of_the_case_and_its_suite_select_items() -> None:
    representative = collected(SUITE, "-m", "operators and representative")
    names = {i.split("::")[1].split("[")[0] for i in representative}
    assert "test_abs" in names and "test_abs_expanded" not in names
    assert len(representative) == 2 * len(names)
    assert len(names) <= 46  # one per representative op
