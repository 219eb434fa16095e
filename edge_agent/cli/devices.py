"""Technician commands for devices: ``decode`` captured bytes, ``simulate`` a device."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.errors import ConfigError


def decode(
    protocol: Annotated[
        str, typer.Argument(help="nonin:2|7|8|13, cms50, hl7-mllp, astm, nmea, scale, ble:2a35…")
    ],
    hex_: Annotated[str | None, typer.Option("--hex", help="Bytes as hex.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read the bytes from a file.")] = None,
    test_map: Annotated[
        Path | None, typer.Option("--test-map", help="ASTM: JSON map test code -> quantity/loinc.")
    ] = None,
) -> None:
    """Decode captured bytes (stdin when neither --hex nor --file) and print one JSON object.

    Exit status 0 when nothing was rejected, 1 when something was."""
    from drivers.decode import UnknownProtocol
    from drivers.decode import decode as run_decode

    if hex_ is not None:
        try:
            data = bytes.fromhex(hex_.replace(":", " "))
        except ValueError as exc:
            raise typer.BadParameter(f"not hex: {exc}", param_hint="--hex") from None
    elif file is not None:
        if not file.exists():
            raise typer.BadParameter(f"no such file: {file}", param_hint="--file")
        data = file.read_bytes()
    else:
        data = sys.stdin.buffer.read()
    options = {"test_map": str(test_map)} if test_map else {}
    if test_map is not None and not test_map.is_file():
        raise ConfigError(str(test_map), "--test-map", "no such file", "give the JSON map's path")
    if test_map is not None:
        _check_test_map(test_map)
    try:
        result = run_decode(protocol, data, options)
    except UnknownProtocol as exc:
        raise typer.BadParameter(str(exc), param_hint="PROTOCOL") from None
    typer.echo(json.dumps(result, ensure_ascii=False))
    raise typer.Exit(1 if result["rejected"] else 0)


def _check_test_map(path: Path) -> None:
    """A map the decoders would refuse: one line naming the file and the entry, exit 2."""
    from drivers.decode import code_map_option
    from drivers.protocols.sitecodes import CodeMapError

    form = '{"CODE": {"quantity": KEY, "loinc": "NNNN-C"}, ...} (docs/devices.md: site code maps)'
    try:
        code_map_option({"test_map": str(path)}, "test_map")
    except CodeMapError as exc:
        problem, fix = str(exc), f"Fix: correct that entry; the form is {form}"
    except json.JSONDecodeError as exc:
        problem = f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        fix = f"Fix: write the map as JSON: {form}"
    except (OSError, UnicodeDecodeError) as exc:
        problem, fix = f"cannot be read: {exc}", "Fix: give a readable UTF-8 JSON file"
    else:
        return
    typer.echo(f"error: {path}: --test-map: {problem}. {fix}", err=True)
    raise typer.Exit(2)


def simulate(
    kind: Annotated[str, typer.Argument(help="Device kind, e.g. nonin, nmea, scale, cms50.")],
    port: Annotated[
        Path | None, typer.Option("--port", help="Also make this path a link to the pty.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Simulator seed (same seed, same data).")] = 0,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE.")
    ] = None,
) -> None:
    """Play a simulated device on a new pseudo-terminal and print its path (Ctrl-C stops)."""
    from drivers.registry import DRIVERS
    from drivers.simulators.base import PtyDevice

    spec = DRIVERS.get(kind)
    if spec is None or spec.simulator is None:
        known = ", ".join(k for k, s in DRIVERS.items() if s.simulator is not None)
        raise typer.BadParameter(f"no simulator for {kind!r}; known: {known}", param_hint="KIND")
    options: dict[str, object] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        options[key] = int(value) if value.isdigit() else value
    sim = PtyDevice(spec.simulator(options, seed), link=port).start()
    typer.echo(sim.pty)
    if port is not None:
        typer.echo(f"linked at {port}", err=True)
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
