"""``edge-agent db``: the store, for technicians."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_agent.cli.common import ConfigOption, DbOption, store_path

app = typer.Typer(no_args_is_help=True)


@app.command()
def stats(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Readings total, pending sync and sent; rejected frames."""
    from edge_agent.store import read_stats

    path = store_path(config, db)
    result = read_stats(path)
    if as_json:
        typer.echo(json.dumps({"store": str(path), **result}))
        return
    typer.echo(f"store: {path}")
    typer.echo(f"readings total:        {result['readings_total']}")
    typer.echo(f"readings pending sync: {result['readings_pending_sync']}")
    typer.echo(f"readings sent:         {result['readings_sent']}")
    typer.echo(f"rejected frames:       {result['rejects']}")


@app.command()
def check(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Check the store (bounded quick_check), show recoveries, quarantined files and disk state.

    Exit 0 when healthy; 1 when damaged, recovered (a quarantined file is waiting for a
    technician) or the disk is full."""
    from edge_agent.store_health import health_report, render

    report = health_report(store_path(config, db))
    typer.echo(json.dumps(report) if as_json else render(report))
    if not report["healthy"]:
        raise typer.Exit(1)
