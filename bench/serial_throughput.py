"""Serial-link throughput of serial-board: payload bytes per second, paced and not.

A pseudo-terminal enforces no baud rate, so the board simulator paces its output
(``shipei sim board --baud``) and the host paces its writes (``pace_baud``) to a
configured line rate, bits per byte included (10 for 8N1). For tensors from 1 KiB
to 1 MiB this measures, through the real protocol stack (framing, CRCs,
onnxruntime on the simulated device):

- uplink: INFER carries the tensor, RESULT a scalar (ReduceSum);
- downlink: INFER carries a shape, RESULT the tensor (ConstantOfShape);

and reports payload bytes delivered per second as a fraction of the line rate,
both one request at a time (tensor bytes / host round trip) and pipelined
(``BoardClient.infer_many``: up to the board's ``pipeline`` INFERs in flight,
docs/protocol.md section 3.2; tensor bytes x requests / batch time). The goal,
>= 0.9 of the line rate at 921600 baud, is for the pipelined figures: one at a
time, the line idles while RESULT travels and during each turnaround. Then the
same unpaced over the pty, next to the raw pty throughput measured in the same run.

Then the model load rate, unpaced, over a pty and over TCP (``socket://`` to
``shipei sim board --tcp``): LOAD_BEGIN, 4 KiB LOAD_CHUNKs (the default chunk),
LOAD_END, for a model of ``--load-mb`` megabytes; model bytes per second.

    python bench/serial_throughput.py [--baud 921600] [--bits-per-byte 10]
        [--sizes 1K,4K,16K,64K,256K,1M] [--load-mb 4] [--json out.json] [--plot out.png]

With ``--device URL`` it measures a vendor's own board instead of the simulator
(``/dev/ttyUSB0``, ``socket://HOST:PORT``, any URL the serial-board target takes):
one at a time and pipelined, as fractions of the line rate given by ``--baud`` and
``--bits-per-byte`` (the UART's own rate: the host does not pace), and the model
load rate on that link when ``--load-mb`` is not 0. The board must run ReduceSum
(float32) and ConstantOfShape (int64 shape to float32); it is driven through
``BoardClient`` exactly as the harness drives it, pipelining up to the board's
declared ``pipeline``:

    python bench/serial_throughput.py --device /dev/ttyUSB0 --baud 921600 \
        --sizes 1K,4K,64K --load-mb 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tty
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from targets.serial.board import BoardClient  # noqa: E402
from targets.serial.protocol import OVERHEAD, encode_infer, encode_result  # noqa: E402
from targets.serial.sim.launch import SimProcess  # noqa: E402
from targets.serial.transport import LinkSettings, SerialLink  # noqa: E402

GOAL = 0.9


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024 * 1024}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def models() -> dict[str, bytes]:
    opset = [helper.make_opsetid("", 17)]
    uplink = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "uplink",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])
    downlink = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"],
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        "downlink", [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    return {name: helper.make_model(g, opset_imports=opset).SerializeToString()
            for name, g in (("uplink", uplink), ("downlink", downlink))}


def pipelined_Bps(client: BoardClient, handle: int, feed: list, size: int, count: int
                  ) -> float:
    """Tensor bytes per second through ``count`` INFERs sent with ``infer_many``."""
    started = time.perf_counter()
    results = client.infer_many(handle, [feed] * count)
    seconds = time.perf_counter() - started
    assert len(results) == count
    return size * count / seconds


def measure(client: BoardClient, handles: dict[str, int], size: int, repeats: int
            ) -> dict[str, dict[str, float]]:
    """Median round trip and device compute time per direction for ``size`` bytes,
    and the pipelined rate over ``4 * repeats`` requests (at least 8)."""
    count = size // 4
    feeds = {"uplink": [("x", np.ones(count, np.float32))],
             "downlink": [("shape", np.array([count], np.int64))]}
    result = {}
    for direction in ("uplink", "downlink"):
        trips, computes = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            outputs, compute_s = client.infer(handles[direction], feeds[direction])
            trips.append(time.perf_counter() - started)
            computes.append(compute_s)
        if direction == "downlink":
            assert outputs[0][1].nbytes == size
        result[direction] = {"round_trip_s": statistics.median(trips),
                             "device_compute_s": statistics.median(computes),
                             "payload_Bps": size / statistics.median(trips),
                             "pipelined_Bps": pipelined_Bps(client, handles[direction],
                                                            feeds[direction], size,
                                                            max(8, 4 * repeats))}
    return result


def run_board(baud: float, bits: float, sizes: list[int], repeats_for, log: Path
              ) -> dict[int, dict[str, dict[str, float]]]:
    args = ["-q", "--max-chunk", "65536"]
    if baud:
        args += ["--baud", str(baud), "--bits-per-byte", str(bits)]
    with SimProcess("board", *args, log=log) as sim:
        settings = LinkSettings(sim.url, timeout=5.0, pace_baud=baud, bits_per_byte=bits,
                                baudrate=int(baud) or 921600)
        return measure_sizes(settings, sizes, repeats_for, "paced" if baud else "unpaced")


def measure_sizes(settings: LinkSettings, sizes: list[int], repeats_for, label: str
                  ) -> dict[int, dict[str, dict[str, float]]]:
    """:func:`measure` for each size on the board at ``settings.url``."""
    with SerialLink(settings) as link:
        client = BoardClient(link, infer_timeout=60.0, chunk=65536)
        identity = client.identify()
        max_chunk = identity.cap_int("max_chunk", 0)
        handles = {name: client.load(raw, name, max_chunk).handle
                   for name, raw in models().items()}
        results = {}
        for size in sizes:
            results[size] = measure(client, handles, size, repeats_for(size))
            line = "  ".join(f"{d} {r['payload_Bps'] / 1e3:9.1f} kB/s "
                             f"(pipelined {r['pipelined_Bps'] / 1e3:9.1f})"
                             for d, r in results[size].items())
            print(f"  {label:8s}{size:>9,d} B  {line}", file=sys.stderr, flush=True)
        for handle in handles.values():
            client.unload(handle)
        return results


def device_main(args: argparse.Namespace, sizes: list[int]) -> int:
    """``--device URL``: the figures of a vendor's own board."""
    line_Bps = args.baud / args.bits_per_byte
    settings = LinkSettings(args.device, timeout=5.0, baudrate=int(args.baud),
                            bits_per_byte=args.bits_per_byte)
    results = measure_sizes(settings, sizes, lambda n: 5 if n <= 16384 else 2, "device")
    rows = []
    print(f"\nPayload throughput of the board at {args.device}, {args.baud:g} baud "
          f"({args.bits_per_byte:g} bits/byte, line {line_Bps:,.0f} B/s)\n")
    print("| tensor | up | down | pipelined up | pipelined down | framing bound | "
          "device compute up ms | device compute down ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, row in results.items():
        fractions = {f"{key}_{d}_fraction": row[d][f"{rate}_Bps"] / line_Bps
                     for d in ("uplink", "downlink")
                     for key, rate in (("one_at_a_time", "payload"), ("pipelined", "pipelined"))}
        rows.append({"size_B": size, **fractions,
                     **{f"device_{d}_compute_ms": row[d]["device_compute_s"] * 1e3
                        for d in ("uplink", "downlink")}})
        print(f"| {size / 1024:g} KiB | {fractions['one_at_a_time_uplink_fraction']:.3f} | "
              f"{fractions['one_at_a_time_downlink_fraction']:.3f} | "
              f"{fractions['pipelined_uplink_fraction']:.3f} | "
              f"{fractions['pipelined_downlink_fraction']:.3f} | "
              f"{size / line_bytes(size, 'uplink'):.3f} | "
              f"{row['uplink']['device_compute_s'] * 1e3:.3f} | "
              f"{row['downlink']['device_compute_s'] * 1e3:.3f} |")
    load = {}
    if args.load_mb > 0:
        raw = big_model(args.load_mb)
        with SerialLink(settings) as link:
            client = BoardClient(link, load_timeout=120.0)
            identity = client.identify()
            loaded = client.load(raw, "load-rate", identity.cap_int("max_chunk", 0))
            client.unload(loaded.handle)
        load = {"load_s": loaded.host_load_s, "load_MBps": len(raw) / loaded.host_load_s / 1e6,
                "chunks": loaded.chunks}
        print(f"\nModel load: {len(raw) / 1e6:.2f} MB in {loaded.chunks} chunks, "
              f"{load['load_s']:.2f} s, {load['load_MBps']:.3f} MB/s")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "baud": args.baud,
                                         "bits_per_byte": args.bits_per_byte, "rows": rows,
                                         "load": load}, indent=2))
    return 0


def line_bytes(size: int, direction: str) -> int:
    """Bytes on the line for one round trip (request and response frames)."""
    count = size // 4
    if direction == "uplink":
        request = encode_infer(1, [("x", np.ones(count, np.float32))])
        response = encode_result(1, 0, [("s", np.float32(0).reshape(()))])
    else:
        request = encode_infer(1, [("shape", np.array([count], np.int64))])
        response = encode_result(1, 0, [("y", np.ones(count, np.float32))])
    return 2 * OVERHEAD + len(request) + len(response)


def raw_pty_Bps(size: int, repeats: int = 5) -> float:
    """Bytes per second written into a pty master and read back from its slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    data = bytes(size)
    best = []
    try:
        for _ in range(repeats):
            got = 0
            started = time.perf_counter()
            view = memoryview(data)
            while got < size:
                if view:
                    written = os.write(master, view[:4096])
                    view = view[written:]
                got += len(os.read(slave, 1 << 16))
            best.append(size / (time.perf_counter() - started))
    finally:
        os.close(master)
        os.close(slave)
    return statistics.median(best)


def big_model(megabytes: float) -> bytes:
    """``y = x + w`` with a constant ``w`` of about ``megabytes`` MB."""
    count = int(megabytes * 1e6 / 4)
    w = numpy_helper.from_array(np.arange(count, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "load",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [count])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def load_rate(where: str, raw: bytes, log: Path, repeats: int = 3) -> dict[str, float]:
    """Median seconds and model bytes per second to load ``raw`` over ``where``
    ("pty" or "tcp"), with the host's default chunk size."""
    args = ["-q", "--slots", "1"] + (["--tcp", "0"] if where == "tcp" else [])
    times = []
    with SimProcess("board", *args, log=log) as sim, \
            SerialLink(LinkSettings(sim.url, timeout=5.0)) as link:
        client = BoardClient(link, load_timeout=120.0)
        client.identify()
        for _ in range(repeats):
            started = time.perf_counter()
            client.load(raw, "load", 4096)
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    print(f"  load {where:3s} {len(raw) / 1e6:6.1f} MB in {seconds:6.2f} s = "
          f"{len(raw) / seconds / 1e6:6.2f} MB/s", file=sys.stderr, flush=True)
    return {"model_MB": len(raw) / 1e6, "load_s": seconds, "load_MBps": len(raw) / seconds / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baud", type=float, default=921600)
    parser.add_argument("--bits-per-byte", type=float, default=10.0)
    parser.add_argument("--sizes", default="1K,4K,16K,64K,256K,1M")
    parser.add_argument("--load-mb", type=float, default=4.0,
                        help="model size for the load-rate measurement (0: skip it)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the paced fractions here")
    parser.add_argument("--device", metavar="URL",
                        help="measure this board (a port or URL) instead of the simulator")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--sizes {args.sizes!r}: expected sizes such as 1K,4K,1M")
    if not (args.baud > 0 and args.bits_per_byte > 0 and min(sizes) >= 4):
        parser.error("--baud and --bits-per-byte must be > 0 and every size >= 4 bytes")
    if args.device:
        return device_main(args, sizes)
    line_Bps = args.baud / args.bits_per_byte
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "shipei-bench-serial-sim.log"
    print(f"line rate {args.baud:g} baud, {args.bits_per_byte:g} bits/byte = "
          f"{line_Bps:,.0f} B/s", file=sys.stderr)
    paced = run_board(args.baud, args.bits_per_byte, sizes,
                      lambda n: 5 if n <= 16384 else (2 if n <= 262144 else 1), log)
    unpaced = run_board(0, args.bits_per_byte, sizes, lambda n: 9 if n <= 262144 else 5, log)
    raw = {size: raw_pty_Bps(size) for size in sizes}
    rows = []
    for size in sizes:
        row = {"size_B": size, "raw_pty_MBps": raw[size] / 1e6}
        for direction in ("uplink", "downlink"):
            row[f"{direction}_framing_bound"] = size / line_bytes(size, direction)
            row[f"paced_{direction}_fraction"] = paced[size][direction]["payload_Bps"] / line_Bps
            row[f"paced_pipelined_{direction}_fraction"] = \
                paced[size][direction]["pipelined_Bps"] / line_Bps
            row[f"unpaced_pipelined_{direction}_MBps"] = \
                unpaced[size][direction]["pipelined_Bps"] / 1e6
            row[f"unpaced_{direction}_MBps"] = unpaced[size][direction]["payload_Bps"] / 1e6
            row[f"device_{direction}_compute_ms"] = \
                paced[size][direction]["device_compute_s"] * 1e3
        rows.append(row)
    print(f"\nPayload throughput at {args.baud:g} baud ({args.bits_per_byte:g} bits/byte, "
          f"line {line_Bps:,.0f} B/s; goal >= {GOAL} of the line rate, pipelined)\n")
    print("| tensor | paced up | paced down | pipelined up | pipelined down | framing bound | "
          "unpaced up MB/s | unpaced down MB/s | raw pty MB/s | unpaced down / raw |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['size_B'] / 1024:g} KiB | {row['paced_uplink_fraction']:.3f} | "
              f"{row['paced_downlink_fraction']:.3f} | "
              f"{row['paced_pipelined_uplink_fraction']:.3f} | "
              f"{row['paced_pipelined_downlink_fraction']:.3f} | "
              f"{row['uplink_framing_bound']:.3f} | "
              f"{row['unpaced_uplink_MBps']:.1f} | "
              f"{row['unpaced_downlink_MBps']:.1f} | {row['raw_pty_MBps']:.1f} | "
              f"{row['unpaced_downlink_MBps'] / row['raw_pty_MBps']:.2f} |")
    print()
    for label, key in (("pipelined", "paced_pipelined"), ("one at a time", "paced")):
        short = [r["size_B"] for r in rows
                 if min(r[f"{key}_uplink_fraction"], r[f"{key}_downlink_fraction"]) < GOAL]
        print(f"goal >= {GOAL}, {label}: " + (
            "met for every size" if not short else
            f"missed for {', '.join(f'{s} B' for s in short)}"))
    loads = {}
    if args.load_mb > 0:
        raw = big_model(args.load_mb)
        loads = {where: load_rate(where, raw, log) for where in ("pty", "tcp")}
        print(f"\nModel load rate, unpaced, 4 KiB chunks ({len(raw) / 1e6:.1f} MB model)\n")
        print("| link | load time | model MB/s |")
        print("|---|---:|---:|")
        for where, row in loads.items():
            print(f"| {where} | {row['load_s']:.2f} s | {row['load_MBps']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"baud": args.baud, "bits_per_byte": args.bits_per_byte,
                                         "rows": rows, "load": loads}, indent=2))
    if args.plot:
        plot(rows, args.plot, args.baud)
    return 0


def plot(rows: list[dict], path: Path, baud: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size_B"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogx(sizes, [r["paced_uplink_fraction"] for r in rows], "o-", label="uplink")
    ax.semilogx(sizes, [r["paced_downlink_fraction"] for r in rows], "s-", label="downlink")
    ax.semilogx(sizes, [r["uplink_framing_bound"] for r in rows], ":", color="grey",
                label="framing bound (round trip)")
    ax.axhline(GOAL, color="grey", linestyle="--", label=f"goal {GOAL}")
    ax.set_xlabel("tensor bytes")
    ax.set_ylabel("fraction of line rate")
    ax.set_title(f"serial-board payload throughput at {baud:g} baud")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
