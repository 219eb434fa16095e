"""``edge-agent demo``: the whole pipeline on simulated devices, with a throwaway store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli.common import parse_host_port


def demo(
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="How long devices run.")] = 10,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Sync to this MQTT broker HOST:PORT (no TLS).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON summary object.")] = False,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep the stores in this folder.")
    ] = None,
) -> None:
    """Run simulated devices and the agent; sync to a broker when one is given."""
    from edge_agent.service.demo import run_demo

    target = parse_host_port(broker) if broker else None

    def say(line: str) -> None:
        if not as_json:
            typer.echo(line)

    if target is None:
        say("no broker given: running OFFLINE (readings are stored, nothing is synced)")
    else:
        say(f"syncing to {broker}; a local reference receiver acknowledges")
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as tmp:
        workdir = keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        import asyncio

        result = asyncio.run(run_demo(seconds, target, workdir, progress=say))
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    typer.echo("")
    typer.echo(f"readings stored:               {result.readings_stored}")
    if target is not None:
        typer.echo(f"readings acknowledged by central: {result.readings_acknowledged}")
        typer.echo(f"readings held by central:      {result.readings_central}")
    typer.echo(f"readings of the simulated patient: {result.readings_attributed}")
    typer.echo(f"rejected frames:               {result.rejects}")
    for dev_id, dev in result.devices.items():
        typer.echo(
            f"  {dev_id}: {dev['state']}, {dev['readings']} readings, {dev['rejects']} rejects"
        )
