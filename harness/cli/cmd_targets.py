"""``shipei targets``: every registered target, whether it is available here and why not;
``--probe TARGET``: which element types the capability probe finds its runtime takes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from typing import Any

from harness.cli.common import CliError
from harness.driver.registry import ENTRY_POINT_GROUP, RegistryError, TargetSpec, discover


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "targets", help="list registered targets and their availability",
        description=f"List every target registered through the {ENTRY_POINT_GROUP!r} "
                    "entry-point group, with availability and the reason when unavailable.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--probe", metavar="TARGET",
                        help="run the capability probe on TARGET[:CONFIGURATION] and list, per "
                             "element type, whether its runtime takes it (what a driver with "
                             "dtypes=() declares)")
    parser.add_argument("--probe-timeout", type=float, default=60.0, metavar="S",
                        help="seconds each element type's probe may take (default 60)")
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
    if args.probe is not None:
        return show_probe(args.probe, args.probe_timeout, args.json)
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


def probe_target(label: str, timeout: float) -> dict[str, Any]:
    """The capability probe's verdict on every element type for target ``label``, run on
    the target's own worker (and cached as a run caches it); :class:`CliError` when the
    target cannot be built or is unavailable here."""
    from harness.driver.probe import ASSUMED, probe_for
    from harness.isolation.tensors import ELEMENT_TYPES
    from harness.run.target_pool import TargetPool

    if not timeout > 0:
        raise CliError(f"--probe-timeout must be a positive number of seconds, not {timeout:g}")
    try:
        pool = TargetPool([label])
        request = pool.requests[0]
        availability = pool.availability(request)
        caps = pool.capabilities(request)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    if not availability.available:
        raise CliError(f"target {label!r} is not available here: {availability.reason}")
    try:
        probe = probe_for(pool.host(request), caps)
        verdicts = {name: probe.verdict(name, timeout) for name in sorted(ELEMENT_TYPES)}
    except Exception as exc:  # the worker would not start: one line, not a traceback
        raise CliError(f"cannot probe {label!r}: {type(exc).__name__}: {exc}") from None
    finally:
        pool.close()
    rows = [{"dtype": name, "verdict": v.verdict if v else "unknown",
             "via": v.via if v else "", "message": v.message if v else
             "the probe could not tell (timeout or infrastructure failure)",
             "declared": name in caps.dtypes} for name, v in verdicts.items()]
    accepted = [r["dtype"] for r in rows if r["verdict"] == "accepted"]
    return {"target": label, "declared_by": "capabilities" if caps.dtypes else "probe",
            "declared": list(caps.dtypes), "assumed": sorted(ASSUMED), "accepted": accepted,
            "types": rows}


def show_probe(label: str, timeout: float, as_json: bool) -> int:
    found = probe_target(label, timeout)
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    if found["declared_by"] == "probe":
        print(f"{label}: declares no element types (dtypes=()); the probe's findings are its "
              "declaration / 未声明元素类型，以探测结果为准")
    else:
        print(f"{label}: declares {', '.join(found['declared'])} / 已声明元素类型")
    header = ("DTYPE", "VERDICT", "DECLARED", "VIA", "MESSAGE")
    rows = [(r["dtype"], r["verdict"], "yes" if r["declared"] else "-", r["via"] or "-",
             r["message"].splitlines()[0][:160] if r["message"] else "")
            for r in found["types"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)), row[4])
    print(f"accepted / 接受: {len(found['accepted'])} of {len(rows)}: "
          f"{', '.join(found['accepted'])}")
    return 0
