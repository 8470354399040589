"""``shipei targets``: every registered target, whether it is available here and why not."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from typing import Any

from harness.registry import ENTRY_POINT_GROUP, TargetSpec, discover


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "targets", help="list registered targets and their availability",
        description=f"List every target registered through the {ENTRY_POINT_GROUP!r} "
                    "entry-point group, with availability and the reason when unavailable.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def broken_providers(broken: Mapping[str, str] | Iterable[tuple[str, str]]
                     ) -> dict[str, str]:
    """The registry's broken providers as provider -> reason (several reasons joined)."""
    pairs = broken.items() if isinstance(broken, Mapping) else broken
    joined: dict[str, str] = {}
    for provider, reason in pairs:
        joined[provider] = f"{joined[provider]}; {reason}" if provider in joined else reason
    return joined


def describe_target(spec: TargetSpec) -> dict[str, Any]:
    """One registered target as ``shipei targets`` lists it: under its registered name,
    with the identity name beside it, every configuration (``default`` included), and a
    driver that fails to build or describe itself listed with the reason."""
    try:
        described = spec.build().describe()
    except Exception as exc:  # a broken driver is listed, not fatal
        described = {"available": False,
                     "reason": f"driver failed to load: {type(exc).__name__}: {exc}"}
    described["identity_name"] = described.get("name")
    described["name"] = spec.name
    described["configurations"] = list(spec.configurations)
    described["origin"] = spec.origin
    described["summary"] = spec.summary
    return described


def describe_all() -> dict[str, Any]:
    registry = discover()
    return {"entry_point_group": ENTRY_POINT_GROUP,
            "targets": [describe_target(registry.spec(name)) for name in registry.names()],
            "broken_providers": broken_providers(registry.broken)}


def _reason(target: dict[str, Any]) -> str:
    reason = str(target.get("reason") or "")
    identity = target.get("identity_name")
    if identity and identity != target["name"]:
        reason = f"{reason}; " if reason else ""
        reason += f"identity name {identity!r} is not the registered name"
    return reason


def run(args: argparse.Namespace) -> int:
    data = describe_all()
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    rows = [(t["name"], t.get("kind", "?"), t.get("runtime_version", "?"),
             ",".join(t["configurations"]) or "-", (t.get("environment") or {}).get("name", "-"),
             "yes" if t["available"] else "no", _reason(t)) for t in data["targets"]]
    header = ("TARGET", "KIND", "RUNTIME", "CONFIGS", "ENV", "AVAILABLE", "REASON")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row[:6], widths, strict=True)),
              row[6])
    for origin, reason in data["broken_providers"].items():
        print(f"broken provider {origin}: {reason}")
    return 0
