"""The layout is the architecture: decoders stay pure; only transports touch the outside."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE_ALLOWED = {
    "__future__",
    "struct",
    "enum",
    "dataclasses",
    "re",
    "typing",
    "collections",
    "collections.abc",
    "decimal",
    "itertools",
    "functools",
    "math",
    "string",
    "binascii",
    "codecs",
    "uuid",
    "datetime",
    "json",
    "edge_agent.models",
    "edge_agent.catalogue",
    "drivers.base",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("drivers.protocols." + (node.module or ""))
    return names


def test_decoders_import_only_pure_modules() -> None:
    for path in sorted((ROOT / "drivers" / "protocols").glob("*.py")):
        for name in _imports(path):
            ok = name in PURE_ALLOWED or name.startswith("drivers.protocols")
            assert ok, f"{path.name} imports {name}: decoders must stay sans-I/O"


def test_only_transports_and_link_import_device_and_network_libraries() -> None:
    allowed = {
        "serial": {"drivers/transports/serial_port.py", "edge_agent/checks/serial_ports.py"},
        "bleak": {"drivers/transports/ble_gatt.py", "drivers/transports/ble_scan.py"},
        "paho": {"sync/link.py"},
    }
    for package in ("edge_agent", "drivers", "sync"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            for name in _imports(path):
                top = name.split(".")[0]
                if top in allowed:
                    assert rel in allowed[top], f"{rel} imports {name}"


# --- rooms and floors -----------------------------------------------------------------------
# Each module sits on a floor; an import may go to its own floor or below, never up. The
# shared vocabulary is the ground floor; the application (service, checks, console, cli) the top.
FLOORS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (7, ("edge_agent.cli", "edge_agent.__main__")),
    (6, ("edge_agent.service", "edge_agent.checks", "edge_agent.console")),
    (5, ("sync",)),
    (4, ("edge_agent.files",)),
    (3, ("edge_agent.store",)),
    # the unit's settings are checked against the driver registry (device rules)
    (2, ("edge_agent.settings", "edge_agent.checks.device_rules")),
    (1, ("drivers",)),
    (0, ("edge_agent",)),  # vocabulary: errors, models, catalogue, clock, backoff, i18n, ...
)
CENTRAL = "sync.central"
UNIT_ONLY = (
    "edge_agent.store",
    "edge_agent.files",
    "edge_agent.service",
    "edge_agent.checks",
    "edge_agent.console",
    "edge_agent.cli",
    "edge_agent.settings",
    "sync.daemon",
    "sync.outbox",
)


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {
        _module_of(p): p
        for package in ("edge_agent", "drivers", "sync")
        for p in (ROOT / package).rglob("*.py")
    }


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _floor(module: str) -> int:
    # the most specific prefix decides (edge_agent.checks.device_rules before edge_agent.checks)
    best = max((p for _, prefixes in FLOORS for p in prefixes if _within(module, p)), key=len)
    return next(floor for floor, prefixes in FLOORS if best in prefixes)


def _project_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    return _imports_in(path.read_text(), _module_of(path), path.name == "__init__.py", modules)


def _imports_in(source: str, here: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Every project module this source imports, at module level or inside a function (a
    function-local import is still an arrow), resolved to the module (``from pkg import mod``
    names the module ``pkg.mod``)."""
    found: set[str] = set()
    package = here if is_package else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != here and target not in {"edge_agent", "drivers", "sync"}:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _all_modules()
    return {name: _project_imports(path, modules) for name, path in modules.items()}


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if _floor(b) > _floor(a)
    ]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return circles


def _central_to_unit(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} imports {b}"
        for a, targets in sorted(graph.items())
        if _within(a, CENTRAL)
        for b in sorted(targets)
        if any(_within(b, u) for u in UNIT_ONLY)
    ]


def test_no_import_runs_back_up() -> None:
    upward = _upward(_graph())
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_central_never_imports_the_unit() -> None:
    wrong = _central_to_unit(_graph())
    assert not wrong, "central imports the unit's side:\n" + "\n".join(wrong)


def test_the_rules_catch_planted_imports() -> None:
    """The checks can fail: imports planted in a copy of today's graph, one of them the
    function-local kind that hid the old circles."""
    modules = _all_modules()
    local = _imports_in(
        "def f() -> None:\n    from sync import daemon\n", "edge_agent.models", False, modules
    )
    assert local == {"sync.daemon"}
    graph = _graph()
    graph["edge_agent.models"] = graph["edge_agent.models"] | local
    assert any(u.startswith("edge_agent.models ") for u in _upward(graph))
    assert any("edge_agent.models" in c for c in _circles(graph))  # daemon imports models
    graph["sync.central.store"] = graph["sync.central.store"] | {"edge_agent.store.database"}
    assert _central_to_unit(graph) == ["sync.central.store imports edge_agent.store.database"]
