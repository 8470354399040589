"""The center's lab page (``/lab``, ``/api/lab``) on a real labgrid lab on loopback and
a real registry database: each place free, busy (and who holds it) or lost (no
resource exported, or its exporter killed), and for a place tagged ``device=MODEL`` the
registry's runs of that board and whether it was ever certified."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.center.intake import store_run
from harness.center.store import Store
from harness.center.web import create_app
from harness.cert.keys import load_private_key
from tests.center_support import ADMIN_TOKEN, describe, make_center
from tests.lab_support import Lab, running_lab

ROOT = Path(__file__).resolve().parent.parent
#: the blueprint's module (the package's name ``lab`` is the blueprint itself)
lab_module = importlib.import_module("harness.center.web.lab")


def board_run(folder: Path) -> Path:
    """A real run of one case on a simulated board (device ``sim-npu-1``)."""
    sim = subprocess.Popen([sys.executable, "-m", "harness", "sim", "board", "--tcp", "0",
                            "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, cwd=ROOT)
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        done = subprocess.run(
            [sys.executable, "-m", "harness", "run", "-m", "representative", "-k", "test_abs",
             "--target", f"serial-board,url={url}", "--run-id", "board-run",
             "--results-dir", str(folder / "results"), "--reports-dir",
             str(folder / "reports"), "--", "-p", "no:labgrid"],
            capture_output=True, text=True, cwd=ROOT, check=False)
    finally:
        sim.terminate()
        sim.wait(10)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder / "results" / "board-run"


def registry(folder: Path) -> tuple[Store, object]:
    center = make_center(folder)
    store = Store(center.db)
    with store.session() as session:
        store_run(session, board_run(folder), None)
    app = create_app(store, load_private_key(center.center_key), ADMIN_TOKEN, describe,
                     max_upload=1 << 20, center_name="Test Center")
    return store, app.test_client()


def exporter_of(lab: Lab) -> subprocess.Popen[bytes]:
    """The lab's exporter process (started last, after the coordinator and the boards)."""
    return lab._procs[-1]


@pytest.mark.extended
def test_places_free_busy_lost_with_their_boards_history(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(lab_module, "CACHE_S", 600.0)  # the page reads what the API read
    store, client = registry(tmp_path)
    with running_lab(boards=2) as lab:
        lab.create_place("p-free", board=0, tags={"device": "sim-npu-1"})
        lab.create_place("p-busy", board=1, tags={"device": "npu-x"})
        lab.create_place("p-lost", board=7)  # matches nothing exported
        lab.client("acquire", place="p-busy", user="alice")
        monkeypatch.setenv("LG_COORDINATOR", lab.address)
        answer = client.get("/api/lab")
        assert answer.status_code == 200, answer.json
        data = answer.json
        places = {p["name"]: p for p in data["places"]}
        assert {n: p["status"] for n, p in places.items()} == {
            "p-free": "free", "p-busy": "busy", "p-lost": "lost"}
        assert data["counts"] == {"free": 1, "busy": 1, "lost": 1}
        assert places["p-busy"]["acquired"].endswith("/alice")
        assert [r["run_id"] for r in places["p-free"]["runs"]] == ["board-run"]
        assert places["p-free"]["certified"] is False  # runs, but never certified
        assert places["p-busy"]["runs"] == [] and places["p-busy"]["certified"] is False
        assert places["p-lost"]["device"] is None and places["p-lost"]["certified"] is None
        html = client.get("/lab").get_data(as_text=True)
        assert "从未认证 / never certified" in html and "失联 / lost" in html
        assert "board-run" in html and "alice" in html

        monkeypatch.setattr(lab_module, "CACHE_S", 0.0)
        os.killpg(exporter_of(lab).pid, signal.SIGKILL)  # the exporter host is gone
        deadline = time.monotonic() + 60
        while True:
            places = {p["name"]: p for p in client.get("/api/lab").json["places"]}
            if places["p-free"]["status"] == "lost":
                break
            assert time.monotonic() < deadline, places
            time.sleep(1)
        assert places["p-busy"]["status"] == "lost"  # held, but its board is unreachable
    store.close()


def test_without_a_coordinator_the_page_says_how_to_set_one(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    center = make_center(tmp_path)
    store = Store(center.db)
    client = create_app(store, load_private_key(center.center_key), ADMIN_TOKEN,
                        describe).test_client()
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    answer = client.get("/api/lab")
    assert answer.status_code == 200
    assert "LG_COORDINATOR" in answer.json["error"] and answer.json["places"] == []
    monkeypatch.setenv("LG_COORDINATOR", "127.0.0.1:9")  # nobody listens there
    answer = client.get("/api/lab")
    assert answer.status_code == 503
    assert "127.0.0.1:9" in answer.json["error"]
    assert "127.0.0.1:9" in client.get("/lab").get_data(as_text=True)
    store.close()
