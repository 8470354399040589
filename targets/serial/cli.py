"""``shipei sim``: device simulators serving the serial protocol.

Registered through the ``shipei.commands`` entry-point group::

    shipei sim board                       # on a new pty; prints the path to connect to
    shipei sim imu --tcp 0 --fault bit_errors=0.01 --events faults.jsonl
    shipei sim ultrasonic --link /tmp/ranger --fault disconnect=0.005

The first line on stdout is the URL to give the target
(``--target serial-board,url=URL``); it is flushed at once so a script can read it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from harness.cli.common import CliError

SENSOR_KINDS = ("imu", "ultrasonic")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="simulate a serial board or sensor (for CI and for trying Shipei out)",
        description="Serve the Shipei serial protocol as a simulated device on a "
                    "pseudo-terminal or a TCP port on 127.0.0.1, with optional fault "
                    "injection. See docs/serial.md.")
    devices = parser.add_subparsers(dest="device", metavar="DEVICE", required=True)
    board = devices.add_parser("board", help="a board that runs models with onnxruntime",
                               description="A development board: loads models and answers "
                                           "INFER with onnxruntime on the CPU.")
    _common_options(board, "board")
    board.add_argument("--slots", type=int, default=4, help="models held at once (default 4)")
    board.add_argument("--max-chunk", type=int, default=4096,
                       help="largest LOAD_CHUNK the board accepts (default 4096)")
    board.add_argument("--ready-chunk", type=int, default=None, metavar="BYTES",
                       help="max_chunk announced in LOAD_READY (default: --max-chunk); the "
                            "smaller of the two applies")
    board.add_argument("--pipeline", type=int, default=4, metavar="N",
                       help="requests the board accepts in flight, capability pipeline "
                            "(default 4; 1: a stop-and-wait device of revision 1.2)")
    board.add_argument("--max-payload", type=int, default=16 * 1024 * 1024, metavar="BYTES",
                       help="largest frame payload the board accepts (default 16777216); "
                            "larger requests are answered TOO_LARGE")
    board.set_defaults(handler=run_board)
    for kind in SENSOR_KINDS:
        what = ("a 6-axis IMU (accelerometer + gyroscope) on a figure-eight motion"
                if kind == "imu" else "an ultrasonic ranger facing a moving reflector")
        sensor = devices.add_parser(kind, help=what, description=f"Stream samples of {what}.")
        _common_options(sensor, kind)
        sensor.add_argument("--rate", type=float, default=None,
                            help="samples per second (default 400 for imu, 40 for ultrasonic)")
        sensor.add_argument("--export-truth", type=Path, metavar="CSV",
                            help="write the ground truth as a reference recording and exit")
        sensor.add_argument("--truth-span", default="0:120", metavar="START:END",
                            help="device-time span in seconds for --export-truth (0:120)")
        sensor.add_argument("--truth-rate", type=float, default=1000.0,
                            help="rows per second for --export-truth (default 1000)")
        sensor.set_defaults(handler=run_sensor, sensor=kind)


def _common_options(parser: argparse.ArgumentParser, kind: str) -> None:
    from targets.serial.sim.faults import BOARD_FAULTS, FAULT_HELP, SENSOR_FAULTS

    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true",
                       help="serve on a new pseudo-terminal (the default)")
    where.add_argument("--tcp", type=int, metavar="PORT",
                       help="serve on this TCP port of 127.0.0.1 (0: any free port)")
    parser.add_argument("--link", type=Path, metavar="PATH",
                        help="keep a symlink to the pty here (stable across reconnects)")
    parser.add_argument("--baud", type=float, default=0.0,
                        help="pace output to this line rate (default 0: unpaced)")
    parser.add_argument("--bits-per-byte", type=float, default=10.0,
                        help="bits on the line per byte when pacing (8N1: 10)")
    allowed = BOARD_FAULTS if kind == "board" else SENSOR_FAULTS
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=VALUE",
                        help="inject a fault; repeatable. " + "; ".join(
                            f"{k}: {FAULT_HELP[k]}" for k in allowed))
    parser.add_argument("--seed", type=int, default=0, help="fault seed (default 0)")
    parser.add_argument("--events", type=Path, metavar="JSONL",
                        help="append every injected fault to this file as it happens")
    parser.add_argument("--stall-ms", type=float, default=1000.0,
                        help="length of an injected stall (default 1000)")
    parser.add_argument("--down-ms", type=float, default=300.0,
                        help="how long an injected disconnect lasts (default 300)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until stopped)")
    parser.add_argument("--exit-after", type=int, default=None, metavar="N",
                        help="vanish (close the line and exit) after answering N requests")
    parser.add_argument("--mute-after", type=int, default=None, metavar="N",
                        help="hang (stay connected, answer nothing) after N requests")
    parser.add_argument("-q", "--quiet", action="store_true", help="no log lines on stderr")


def _fault_plan(args: argparse.Namespace, allowed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from targets.serial.sim.faults import FaultPlan, FaultSpecError, parse_faults

    try:
        faults = parse_faults(args.fault, allowed)
    except FaultSpecError as exc:
        raise CliError(str(exc)) from None
    if "disconnect" in faults and args.tcp is None and args.link is None:
        raise CliError("an injected disconnect on a pty needs --link PATH: the pty is "
                       "replaced on reconnect and only the link stays put")
    return FaultPlan(faults, seed=args.seed, log_path=args.events)


def _endpoint(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from targets.serial.pacing import Pacer
    from targets.serial.sim.endpoint import PtyEndpoint, TcpEndpoint

    if not (args.baud >= 0 and math.isfinite(args.baud) and args.bits_per_byte > 0
            and math.isfinite(args.bits_per_byte)):
        raise CliError("--baud must be a finite number >= 0 and --bits-per-byte a finite "
                       "number > 0")
    pacer = Pacer(args.baud, args.bits_per_byte)
    if args.tcp is not None:
        if not 0 <= args.tcp <= 65535:
            raise CliError(f"--tcp {args.tcp}: not a port number")
        try:
            return TcpEndpoint(args.tcp, pacer=pacer)
        except OSError as exc:
            raise CliError(f"cannot listen on 127.0.0.1:{args.tcp}: {exc}") from None
    if args.link is not None and args.link.exists() and not args.link.is_symlink():
        raise CliError(f"--link {args.link} exists and is not a symlink; not replacing it")
    if args.link is not None and not args.link.parent.is_dir():
        raise CliError(f"--link {args.link}: folder {args.link.parent} does not exist")
    try:
        return PtyEndpoint(args.link, pacer=pacer)
    except OSError as exc:
        raise CliError(f"cannot create a pseudo-terminal: {exc}") from None


def _announce(endpoint, kind: str, target: str) -> None:  # type: ignore[no-untyped-def]
    print(endpoint.url, flush=True)
    where = getattr(endpoint, "pty_path", None)
    extra = f" (pty {where})" if where and where != endpoint.url else ""
    print(f"shipei sim {kind}: serving on {endpoint.url}{extra}; connect with "
          f"--target {target},url={endpoint.url}   (pid {os.getpid()}; Ctrl-C stops)",
          file=sys.stderr, flush=True)


def _run_options(args: argparse.Namespace) -> dict:
    for name in ("stall_ms", "down_ms"):
        if not math.isfinite(getattr(args, name)) or getattr(args, name) < 0:
            raise CliError(f"--{name.replace('_', '-')} must be a finite number >= 0")
    if args.duration is not None and not (math.isfinite(args.duration)
                                          and args.duration > 0):
        raise CliError(f"--duration {args.duration:g}: must be a finite number of "
                       "seconds > 0")
    for name in ("exit_after", "mute_after"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CliError(f"--{name.replace('_', '-')} {value}: must be a number of "
                           "requests >= 0")
    return {"down_s": args.down_ms / 1000.0, "stall_s": args.stall_ms / 1000.0,
            "duration": args.duration, "exit_after": args.exit_after,
            "mute_after": args.mute_after, "quiet": args.quiet}


def run_board(args: argparse.Namespace) -> int:
    from targets.serial.sim.board import BoardSimulator
    from targets.serial.sim.faults import BOARD_FAULTS

    plan = _fault_plan(args, BOARD_FAULTS)
    if min(args.slots, args.max_chunk, args.ready_chunk or 1, args.pipeline) < 1:
        raise CliError("--slots, --max-chunk, --ready-chunk and --pipeline must be >= 1")
    if not 64 <= args.max_payload <= 16 * 1024 * 1024:
        raise CliError("--max-payload must be in [64, 16777216]")
    options = _run_options(args)
    # imported before serving, not while the first IDENTIFY waits (seconds on a busy host)
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    endpoint = _endpoint(args)
    sim = BoardSimulator(endpoint, plan, slots=args.slots, max_chunk=args.max_chunk,
                         ready_chunk=args.ready_chunk, jitter_s=plan.value("jitter"),
                         noise=plan.value("noise"), max_payload=args.max_payload,
                         pipeline=args.pipeline, **options)
    _announce(endpoint, "board", "serial-board")
    sim.serve()
    return 0


def run_sensor(args: argparse.Namespace) -> int:
    from targets.serial.sim.faults import SENSOR_FAULTS
    from targets.serial.sim.sensor import SensorSimulator

    plan = _fault_plan(args, SENSOR_FAULTS)
    if args.rate is not None and not 0 < args.rate <= 10_000:
        raise CliError("--rate must be in (0, 10000]")
    if args.export_truth is not None:
        return _export_truth(args)
    options = _run_options(args)
    endpoint = _endpoint(args)
    sim = SensorSimulator(endpoint, plan, sensor=args.sensor, rate_hz=args.rate, **options)
    _announce(endpoint, args.sensor, f"serial-{args.sensor}")
    sim.serve()
    return 0


def _export_truth(args: argparse.Namespace) -> int:
    from targets.serial.groundtruth import FigureEight, MovingReflector, write_csv

    try:
        start, end = (float(v) for v in args.truth_span.split(":"))
    except ValueError:
        raise CliError(f"--truth-span {args.truth_span!r}: expected START:END seconds") \
            from None
    if not (end > start and args.truth_rate > 0 and math.isfinite(end - start)
            and math.isfinite(args.truth_rate)):
        raise CliError("--truth-span needs END > START and --truth-rate > 0")
    truth = FigureEight() if args.sensor == "imu" else MovingReflector()
    try:
        rows = write_csv(args.export_truth, truth, start, end, args.truth_rate)
    except OSError as exc:
        raise CliError(f"cannot write {args.export_truth}: {exc}") from None
    print(f"wrote {rows} rows of {truth.description} to {args.export_truth}")
    return 0
