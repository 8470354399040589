"""The shape of the core: no import circle in ``harness/``, and the core never imports a
driver (``targets``) or a suite (``suites``) — it reaches them through entry points."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in HARNESS.rglob("*.py") if "migrations" not in p.parts}
    return {name: {m for m in _imports(path) if m in files and m != name}
            for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_in_harness() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import circles in harness/: {cycles}"


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_core_never_imports_a_driver_or_a_suite() -> None:
    offenders = {}
    for path in HARNESS.rglob("*.py"):
        bad = sorted(m for m in _imports(path)
                     if m.split(".")[0] in ("targets", "suites"))
        if bad:
            offenders[str(path.relative_to(HARNESS.parent))] = bad
    assert not offenders, offenders


# -- stages import one way ----------------------------------------------------------------------
#: the stages a run passes before certificates: they never import a later stage
BEFORE_CERTIFICATES = ("cases", "driver", "environments", "run", "isolation", "verdicts",
                       "results", "reports", "perf", "modelzoo")
#: folder (or top-level module) under harness/ -> the folders it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(BEFORE_CERTIFICATES, ("cert", "center", "cli")),
    "cert": ("center", "cli"),
    "center": ("cli",),
}
#: what the gate may take from the certificates: one declared way into the profiles
GATE_USES_OF_CERT = {"harness.cert.profile", "harness.cert.profile.measured_suites",
                     "harness.cert.profile.ProfileError"}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the stage order: a stage importing a later one, anything but the
    command line importing the command line, the gate reaching into cert/ past its
    interface."""
    found = []
    for module, imported in sorted(graph.items()):
        stage = _stage(module)
        for other in sorted(imported):
            target = _stage(other)
            if target in FORBIDDEN.get(stage, ()) or (target == "cli" and stage != "cli"
                                                       and module != "harness.__main__"):
                found.append(f"{module} -> {other}")
            elif module == "harness.gate" and target == "cert" \
                    and other not in GATE_USES_OF_CERT:
                found.append(f"{module} -> {other} (the gate reads profiles through "
                             "harness.cert.profile.measured_suites)")
    return found


def _graph_with_names() -> dict[str, set[str]]:
    """Like :func:`_graph`, but keeping ``module.name`` imports (the gate's check needs the
    names it takes)."""
    files = {_module_name(p): p for p in HARNESS.rglob("*.py") if "migrations" not in p.parts}
    return {name: {m for m in _imports(path)
                   if (m in files or m.rpartition(".")[0] in files) and m != name}
            for name, path in files.items()}


def test_stages_import_one_way() -> None:
    violations = layer_violations(_graph_with_names())
    assert not violations, f"imports against the stage order: {violations}"


def test_the_layer_check_finds_each_kind_of_violation() -> None:
    graph = {"harness.center.vendor_keys": {"harness.cli.common"},
             "harness.reports.matrix": {"harness.cert.page"},
             "harness.cert.certify": {"harness.center.store"},
             "harness.gate": {"harness.cert.profile", "harness.cert.profile.load_profile",
                              "harness.cert.profile.measured_suites"},
             "harness.hooks": {"harness.cli.main"},
             "harness.cli.cmd_cert": {"harness.cert.certify", "harness.center.store"},
             "harness.center.intake": {"harness.cert.verify"}}
    assert layer_violations(graph) == [
        "harness.center.vendor_keys -> harness.cli.common",
        "harness.cert.certify -> harness.center.store",
        "harness.gate -> harness.cert.profile.load_profile (the gate reads profiles through "
        "harness.cert.profile.measured_suites)",
        "harness.hooks -> harness.cli.main",
        "harness.reports.matrix -> harness.cert.page"]


def test_the_gate_imports_what_it_uses_by_name() -> None:
    """No import hidden from these checks behind importlib in the gate."""
    source = (HARNESS / "gate.py").read_text(encoding="utf-8")
    assert "import_module(" not in source
