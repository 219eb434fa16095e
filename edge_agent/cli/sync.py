"""``edge-agent sync``: the link to central, for technicians."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_agent.cli.common import ConfigOption, DbOption, load_settings, store_path

app = typer.Typer(no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object.")]
STATUS_NEEDS = "m004_identity_membership"  # the schema step sync status reads


@app.command()
def status(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Connected?, backlog, batches in flight, last ack, last error, clock offset."""
    from edge_agent.service.heartbeat import ask_any
    from edge_agent.store.read import reading
    from sync.diagnostics import status as read_status
    from sync.diagnostics import with_liveness

    path = store_path(config, db)
    with reading(path, needs=STATUS_NEEDS) as store:
        result = with_liveness(read_status(store, path), ask_any(path))
    if as_json:
        typer.echo(json.dumps(result))
        return
    state = (
        "connected"
        if result["connected"]
        else {
            "answering": "agent running, not connected",
            "not_answering": "agent not answering (frozen or stuck: restart it)",
            "forbidden": "cannot ask the agent (run this as the agent's user)",
        }.get(result["agent"], "agent not running")
    )
    typer.echo(f"link:              {state}")
    loop = result.get("loop")
    if loop:
        typer.echo(
            f"event loop:        lag p99 {loop['p99_ms']} ms, max {loop['max_ms']} ms, "
            f"{loop['stalls']} stalls" + (" (stalled now)" if loop["stalled"] else "")
        )
    typer.echo(
        f"backlog:           {result['backlog']['readings']} readings"
        + (
            f" (oldest {result['oldest_unsent_received_at']})"
            if result["oldest_unsent_received_at"]
            else ""
        )
    )
    typer.echo(f"batches in flight: {result['in_flight_batches']}")
    typer.echo(f"last ack:          {result['last_ack_at'] or 'never'}")
    typer.echo(f"last error:        {result['last_error'] or '-'}")
    if result.get("files_state"):
        typer.echo(f"files:             {result['files_state']}")
    offset = result["clock_offset_s"]
    typer.echo(f"clock offset:      {'unknown' if offset is None else f'{offset:+.1f} s'}")
    typer.echo(
        f"refused downlinks: {result['refused_downlinks']} "
        f"({result['refused_acks']} forged or unsigned acks)"
    )
    version = result["config_version"]
    typer.echo(
        "remote config:     "
        + (f"version {version} in effect" if version is not None else "none (the file's settings)")
    )
    if result.get("dead_letters"):
        last = result.get("last_dead_letter") or {}
        typer.echo(
            f"dead letters:      {result['dead_letters']} parked by central (last: batch "
            f"{last.get('batch_id') or '?'}, {last.get('reason') or '?'})"
        )


@app.command()
def now(config: ConfigOption = None, db: DbOption = None) -> None:
    """Ask the running agent to reconnect and send at once (forgets the backoff)."""
    import os
    import signal

    from edge_agent.store.read import reading
    from sync.diagnostics import status as read_status

    path = store_path(config, db)
    with reading(path, needs=STATUS_NEEDS) as store:
        pid = read_status(store, path)["pid"]
    if pid is None:
        typer.echo("the agent is not running: start it (edge-agent run)", err=True)
        raise typer.Exit(1)
    try:
        os.kill(pid, signal.SIGUSR1)  # the agent wakes, forgets its backoff and sends
    except PermissionError:
        typer.echo(
            f"the agent (pid {pid}) runs as another user: run this as that user or root", err=True
        )
        raise typer.Exit(1) from None
    except ProcessLookupError:
        typer.echo("the agent is not running: start it (edge-agent run)", err=True)
        raise typer.Exit(1) from None
    typer.echo("requested: the agent reconnects and sends within a second")


@app.command()
def test(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Connect to the broker with the unit's identity, round trip, latency (exit 5 on failure)."""
    import asyncio

    from sync.diagnostics import round_trip

    result = asyncio.run(round_trip(load_settings(config)))
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"broker {result['broker']} ({'TLS' if result['tls'] else 'no TLS'}): "
        f"connected in {result['connect_ms']} ms, round trip {result['round_trip_ms']} ms"
    )
