"""``edge-agent db``: the store, for technicians."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli.common import DEFAULT_CONFIG, ConfigOption, DbOption, store_path

app = typer.Typer(no_args_is_help=True)


@app.command()
def stats(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Readings total, pending sync and sent; rejected frames."""
    from edge_agent.store.writer import read_stats

    path = store_path(config, db)
    result = read_stats(path)
    if as_json:
        typer.echo(json.dumps({"store": str(path), **result}))
        return
    typer.echo(f"store: {path}")
    typer.echo(f"readings total:        {result['readings_total']}")
    typer.echo(f"readings pending sync: {result['readings_pending_sync']}")
    typer.echo(f"readings sent:         {result['readings_sent']}")
    typer.echo(f"refused by central:    {result['readings_refused_by_central']}")
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
    from edge_agent.store.health import health_report, render

    report = health_report(store_path(config, db))
    typer.echo(json.dumps(report) if as_json else render(report))
    if not report["healthy"]:
        raise typer.Exit(1)


EXPORT_COLUMNS = (
    "seq",
    "id",
    "device_id",
    "quantity",
    "value",
    "unit",
    "loinc",
    "mdc",
    "device_time",
    "received_at",
    "clock_source",
    "flags",
    "absent_reason",
    "encounter_id",
    "latitude",
    "longitude",
    "sent_at",
    "refused",
)


@app.command()
def export(
    out: Annotated[str, typer.Option("--out", "-o", help="File to write (- for stdout).")] = "-",
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only readings received at or after this "
            "ISO 8601 time (e.g. 2026-11-30 or 2026-11-30T08:00Z).",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv (one row per reading) or fhir (NDJSON: one FHIR R4 Observation per line).",
        ),
    ] = "csv",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Export readings (read-only, while the agent runs) with a progress bar on stderr.

    The export holds health data: it is written 0600; keep it on the unit or an encrypted
    medium."""
    import csv
    import os
    import sys

    from edge_agent.store.read import reading

    if fmt not in ("csv", "fhir"):
        raise typer.BadParameter("use csv or fhir", param_hint="--format")
    path = store_path(config, db)
    where, params = "", []
    if since is not None:
        where, params = "WHERE received_at >= ?", [since]
    handle = (
        sys.stdout
        if out == "-"
        else open(  # noqa: SIM115  (closed below)
            os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            "w",
            newline="",
            encoding="utf-8",
        )
    )
    try:
        with reading(path) as store:
            columns = [
                c
                for c in EXPORT_COLUMNS
                if c in {r[1] for r in store.execute("PRAGMA table_info(readings)").fetchall()}
            ]
            total = int(
                store.execute(f"SELECT count(*) FROM readings {where}", params).fetchone()[0]
            )
            unit = (
                str(store.execute("SELECT unit_id FROM readings LIMIT 1").fetchone() or ["-"])[0]
                if total
                else "-"
            )
            cursor = store.execute(
                f"SELECT {', '.join(columns)} FROM readings {where} ORDER BY seq", params
            )
            writer = csv.writer(handle) if fmt == "csv" else None
            if writer is not None:
                writer.writerow(columns)
            done = 0
            with typer.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
                while rows := cursor.fetchmany(1000):
                    for row in rows:
                        if writer is not None:
                            writer.writerow(row)
                        else:
                            handle.write(
                                json.dumps(_observation(unit, columns, row), separators=(",", ":"))
                                + "\n"
                            )
                    done += len(rows)
                    bar.update(len(rows))
    finally:
        if handle is not sys.stdout:
            handle.close()
    if out != "-":
        typer.echo(f"exported {done} readings to {out}", err=True)


def _observation(unit: str, columns: list[str], row: tuple[object, ...]) -> dict[str, object]:
    from sync import codec

    return codec.observation(unit, dict(zip(columns, row, strict=True)))


@app.command()
def keygen(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Key file to create (0600; never overwritten), e.g. /etc/edge-agent/store.key.",
        ),
    ],
) -> None:
    """A new store encryption key (256 random bits, as hex) for [store] key_file.

    Keep a copy off the unit (a password manager, a sealed envelope): a store cannot be read
    without its key."""
    from edge_agent.store.key import write_key_file

    try:
        write_key_file(out)
    except FileExistsError:
        typer.echo(
            f"error: {out} exists; it is kept (it may be the key of a store). Fix: "
            "choose another --out, or remove the file if no store uses it",
            err=True,
        )
        raise typer.Exit(2) from None  # a usage error: the --out given
    except OSError as exc:
        typer.echo(
            f"error: cannot create {out}: {exc.strerror or exc}. Fix: choose a "
            "writable folder (run as root for /etc/edge-agent)",
            err=True,
        )
        raise typer.Exit(2) from None
    typer.echo(
        f"key written to {out} (0600). Fix its owner to the agent's user: chown "
        f'edge-agent {out}; then set [store] encryption = "sqlcipher", key_file = '
        f'"{out}"'
    )


@app.command()
def encrypt(
    config: ConfigOption = None,
    db: DbOption = None,
    keep_plain: Annotated[
        bool,
        typer.Option(
            "--keep-plain",
            help="Keep the plaintext file as <store>.plain-<time> (delete it "
            "yourself once the agent runs on the encrypted store).",
        ),
    ] = False,
) -> None:
    """Encrypt an existing plaintext store with the configured key (the agent must be stopped).

    Every row is copied with sqlcipher_export into a new file, counted, fsynced, and renamed
    over the store (atomic). Needs [store] encryption = "sqlcipher" and its key."""
    from edge_agent.errors import ConfigError
    from edge_agent.store import connect as store_connect
    from edge_agent.store.encrypt import encrypt_store

    path = store_path(config, db)
    key = store_connect.key_for(path)
    if key is None:
        raise ConfigError(
            str(config or DEFAULT_CONFIG),
            "store.encryption",
            'is "off" (or the SQLCipher binding is missing)',
            'set encryption = "sqlcipher" and key_file (edge-agent db keygen --out FILE) first',
        )
    result = encrypt_store(path, key, keep_plain=keep_plain)
    rows = result["rows"]
    assert isinstance(rows, dict)
    typer.echo(
        f"encrypted {path}: {rows.get('readings', 0)} readings, {sum(rows.values())} rows in all"
    )
    if result["plain_kept"]:
        typer.echo(
            f"the plaintext store is kept as {result['plain_kept']}: delete it once the "
            "agent runs (it holds patient data unencrypted)"
        )
