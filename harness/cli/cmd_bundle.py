"""``shipei bundle``: pack a vendor's runs into a signed, reproducible evidence bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.bounded import KEY_BYTES
from harness.center.bundle import BundleError, BundleRequest, build_bundle
from harness.center.vendor_keys import PRIVATE_FILE, vendor_name
from harness.cert.files import cite_file
from harness.cert.keys import KeyFileError, load_private_key
from harness.cli.common import CliError, add_run_location_options, locate_run
from harness.cli.option_files import check_option_file
from harness.results.record_files import load_run_info

DEFAULT_VENDOR_KEY = Path("keys") / "vendor" / PRIVATE_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bundle", help="pack runs into a vendor-signed evidence bundle for a center",
        description="Pack runs (run.json, records, samples, LoadGen logs, reports and "
                    "matrix, environment and installed package versions, sha256 of the "
                    "driver's files) into one .tar.gz with a manifest of sha256 digests, "
                    "signed by the vendor (in-toto Statement in a DSSE envelope). The same "
                    "runs and key give the same bytes. Make a key with "
                    "'shipei keys init --role vendor --vendor NAME'.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids or run folders")
    parser.add_argument("--key", type=Path, default=DEFAULT_VENDOR_KEY,
                        help=f"the vendor's private key (default {DEFAULT_VENDOR_KEY})")
    parser.add_argument("--vendor", help="vendor name (default: the one recorded with the key)")
    parser.add_argument("--target", help="the target label the bundle is for (default: the "
                                         "runs' only target)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    add_run_location_options(parser)
    parser.set_defaults(handler=run)


def _driver_files(label: str) -> list[dict[str, str]]:
    from harness.center.center_target import describe_center_target

    return [cite_file(p) for p in describe_center_target(label)["driver_files"]]


def run(args: argparse.Namespace) -> int:
    try:
        key = load_private_key(check_option_file(args.key, KEY_BYTES, "private key"))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    vendor = args.vendor or vendor_name(args.key)
    if not vendor:
        raise CliError(f"no vendor name recorded beside {args.key}; pass --vendor NAME")
    run_dirs = [locate_run(args.results_dir, r) for r in args.runs]
    try:
        infos = [load_run_info(d) for d in run_dirs]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    labels = sorted({t for info in infos for t in info.get("targets") or {}})
    label = args.target or (labels[0] if len(labels) == 1 else None)
    if label is None:
        raise CliError(f"the runs hold targets {', '.join(labels) or 'none'}; pass --target")
    request = BundleRequest(run_dirs=run_dirs, reports_root=args.reports_dir, vendor=vendor,
                            target=label, environment=infos[0].get("environment") or {},
                            driver_files=_driver_files(label), key=key)
    try:
        data = build_bundle(request)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"bundle: {args.output} ({len(data)} bytes, {len(run_dirs)} run(s), target "
          f"{label}, vendor {vendor})")
    return 0
