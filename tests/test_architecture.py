"""The layout is the architecture: decoders stay pure; only transports touch the outside."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE_ALLOWED = {
    "__future__", "struct", "enum", "dataclasses", "re", "typing", "collections", "collections.abc",
    "decimal", "itertools", "functools", "math", "string", "binascii", "codecs", "uuid",
    "datetime", "json", "edge_agent.models", "edge_agent.catalogue", "drivers.base",
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
        "serial": {"drivers/transports/serial_port.py", "edge_agent/serial_ports.py"},
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
