"""``shipei targets``: every registered target, whether it is available here and why not."""

from __future__ import annotations

import argparse
import json

from harness.registry import ENTRY_POINT_GROUP, discover


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "targets", help="list registered targets and their availability",
        description=f"List every target registered through the {ENTRY_POINT_GROUP!r} "
                    "entry-point group, with availability and the reason when unavailable.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def describe_all() -> dict:
    registry = discover()
    targets = []
    for name in registry.names():
        spec = registry.spec(name)
        try:
            described = spec.build().describe()
        except Exception as exc:  # a broken driver is listed, not fatal
            described = {"name": name, "available": False,
                         "reason": f"driver failed to load: {type(exc).__name__}: {exc}"}
        described["configurations"] = list(spec.configurations)
        described["origin"] = spec.origin
        described["summary"] = spec.summary
        targets.append(described)
    return {"entry_point_group": ENTRY_POINT_GROUP, "targets": targets,
            "broken_providers": registry.broken}


def run(args: argparse.Namespace) -> int:
    data = describe_all()
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    rows = [(t["name"], t.get("kind", "?"), t.get("runtime_version", "?"),
             ",".join(c for c in t["configurations"] if c != "default") or "-",
             "yes" if t["available"] else "no", t.get("reason", "")) for t in data["targets"]]
    header = ("TARGET", "KIND", "RUNTIME", "CONFIGS", "AVAILABLE", "REASON")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths, strict=True)),
              row[5])
    for origin, reason in data["broken_providers"].items():
        print(f"broken provider {origin}: {reason}")
    return 0
