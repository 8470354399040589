"""``bench/serial_throughput.py --device URL`` measures a board the vendor names (here
the reference simulator on a socket, standing in for their board), through the same
``BoardClient.infer_many`` the harness offers for pipelining."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from targets.serial.sim.board import BoardSimulator
from tests.serial_peers import ThreadedSim

pytest.importorskip("serial")
pytest.importorskip("onnxruntime")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serial_throughput.py"


def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("serial_throughput", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_measures_a_named_device(tmp_path, capsys):
    out = tmp_path / "figures.json"
    with ThreadedSim(BoardSimulator, pipeline=4, max_chunk=8192) as sim:
        code = bench().main(["--device", sim.url, "--sizes", "1K,4K", "--load-mb", "0.1",
                             "--json", str(out)])
        executed = sim.sim.infers_executed
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["device"] == sim.url
    assert [row["size_B"] for row in figures["rows"]] == [1024, 4096]
    for row in figures["rows"]:
        for key in ("one_at_a_time_uplink_fraction", "pipelined_downlink_fraction"):
            assert row[key] > 0, key
    assert figures["load"]["chunks"] == 25  # 100 kB in 4 KiB chunks, the default
    # each size: 5 one at a time and 20 pipelined per direction
    assert executed == 2 * 2 * (5 + 20)
    assert "Payload throughput of the board at" in capsys.readouterr().out


def test_the_bench_refuses_bad_sizes(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench().main(["--device", "socket://127.0.0.1:9", "--sizes", "1Q"])
    assert exit_.value.code == 2
    assert "--sizes" in capsys.readouterr().err
