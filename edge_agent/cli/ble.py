"""``edge-agent ble``: Bluetooth LE health devices, for technicians."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def scan(
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="How long to listen.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False,
) -> None:
    """Health devices around: name, address, RSSI, services and the driver that reads them."""
    import asyncio

    from drivers.transports.ble_scan import scan as run_scan

    results = asyncio.run(run_scan(seconds))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results]))
        return
    if not results:
        typer.echo(
            "no Bluetooth LE device heard (is it awake? most cuffs and meters only "
            "advertise for a minute after a measurement)"
        )
    for r in results:
        services = ",".join(
            s[4:8] if s.endswith("-0000-1000-8000-00805f9b34fb") else s for s in r.services
        )
        typer.echo(
            f"{r.address}  {r.rssi:4d} dBm  {r.driver or '-':22s} {r.name or '?'}  [{services}]"
        )
