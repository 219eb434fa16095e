"""``edge-agent central``: central's side of downlink trust (keys, signed messages) and the
export of what it holds as FHIR Bulk Data NDJSON."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from sync.signing import Signer

app = typer.Typer(no_args_is_help=True)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write central's private key "
                                      "(PEM, created 0600; refuses to overwrite).")],
) -> None:
    """Make central's signing key; prints the public key line for the units' config."""
    from sync.signing import new_private_key_pem

    pem, public = new_private_key_pem()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(str(out), "(file)", "already exists",
                          "choose another --out (a new key for rotation), or move it away"
                          ) from None
    except OSError as exc:
        raise ConfigError(str(out), "(file)", f"cannot be written: {exc.strerror}",
                          "choose a writable --out") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    typer.echo(f"private key: {out} (keep it on central only)")
    typer.echo("add to each unit's config (several keys may be listed while rotating):")
    typer.echo(f'[trust]\ncentral_keys = ["{public}"]')


def load_signer(key: Path, ttl_s: float = 3600.0) -> Signer:
    from sync.signing import Signer

    try:
        return Signer.from_pem(key.read_bytes(), ttl_s)
    except OSError as exc:
        raise ConfigError(str(key), "(file)", f"cannot be read: {exc.strerror}",
                          "pass the key made by `edge-agent central keygen`") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(key), "(key)", str(exc).split("\n")[0],
                          "pass the key made by `edge-agent central keygen`") from None


@app.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Central's private key (central keygen).")],
    unit: Annotated[str, typer.Option("--unit", help="The unit the message is for.")],
    topic: Annotated[str, typer.Option("--topic", help="cmd or config.")],
    body: Annotated[str, typer.Argument(help='The message, JSON: {"id": "1", "cmd": '
                                        '"sync-now"} or {"version": 2, "sync": {...}}.')],
    ttl: Annotated[float, typer.Option("--ttl", min=1, max=8 * 24 * 3600, help="Seconds it "
                                       "stays valid (units refuse more than 8 days).")] = 3600,
) -> None:
    """Print a signed downlink message (publish it on mmu/v1/UNIT/down/TOPIC)."""
    if topic not in ("cmd", "config"):
        raise typer.BadParameter("use cmd or config", param_hint="--topic")
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="BODY") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("a JSON object", param_hint="BODY")
    signer = load_signer(key, ttl)
    typer.echo(signer.sign(unit, topic, parsed).decode())


@app.command()
def export(
    db: Annotated[str, typer.Option("--db", help="Central store: a SQLite file, or a "
                                    "PostgreSQL URL (postgresql://user@host/dbname).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the NDJSON files and "
                                      "manifest.json (created 0700; files 0600).")],
    since: Annotated[
        str | None, typer.Option("--since", help="Only what central stored or updated at or "
                                 "after this ISO 8601 time with its zone (2026-11-30T08:00Z) or "
                                 "date (from 00:00 UTC); the last manifest's transactionTime.")
    ] = None,
    unit: Annotated[str | None, typer.Option("--unit", help="Only this unit's readings, "
                                             "files and encounters.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson (FHIR Bulk Data).")] = "ndjson",
    files: Annotated[
        Path | None, typer.Option("--files", help="Central's file folder (files.db); default: "
                                  "beside a SQLite store (central.files/); none with PostgreSQL.")
    ] = None,
) -> None:
    """Export what central holds as FHIR Bulk Data NDJSON, one file per resource type.

    Observations, GPS fixes (Location) and the teleconsultation files (DocumentReference,
    Media, ImagingStudy) stored since --since, with every Patient, Encounter, Device and
    Location they refer to (however old): each reference resolves inside the export. The
    files hold health data: keep them on an encrypted medium."""
    import sys
    from datetime import UTC, datetime

    from edge_agent.errors import StoreError
    from sync.central import ndjson
    from sync.central.export import count_readings
    from sync.central.export import export as run_export
    from sync.central.files import default_files_dir

    if fmt != "ndjson":
        raise typer.BadParameter("use ndjson", param_hint="--format")
    try:
        cutoff = None if since is None else ndjson.parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    postgres = "://" in db
    if not postgres and not Path(db).is_file():
        raise StoreError("central.missing", f"{db}: no central store here (check --db)", path=db)
    files = files or default_files_dir(db)
    files_db = files / "files.db" if files is not None else None
    if files_db is not None and not files_db.is_file():
        files_db = None
    request = " ".join(["edge-agent central export", *(["--since", since] if since else []),
                        *(["--unit", unit] if unit else [])])
    try:
        with _central_query(db) as query:
            total = count_readings(query, cutoff, unit)
            with typer.progressbar(length=total, label="exporting readings",
                                   file=sys.stderr) as bar:
                summary = run_export(query, files_db, out, since=cutoff, unit=unit,
                                     request=request, progress=bar.update,
                                     now=datetime.now(UTC))
    except OSError as exc:
        if exc.filename is None or str(db) == str(exc.filename):
            raise _unreadable(db, exc) from exc
        raise typer.BadParameter(f"cannot write {exc.filename} ({exc.strerror}): choose a "
                                 "writable folder", param_hint="--out") from None
    except Exception as exc:  # sqlite3/psycopg errors: one line, exit code 4
        if isinstance(exc, StoreError | typer.BadParameter):
            raise
        raise _unreadable(db, exc) from exc
    for kind in ndjson.ordered(summary.counts):
        typer.echo(f"{kind}: {summary.counts[kind]}", err=True)
    if summary.unresolved:
        typer.echo(f"references to resources central does not hold (dropped): "
                   f"{summary.unresolved}", err=True)
    typer.echo(f"exported {sum(summary.counts.values())} resources to {out} (manifest.json; "
               f"next --since {summary.transaction_time})", err=True)


def _unreadable(db: str, exc: BaseException) -> Exception:
    from edge_agent.errors import StoreError

    detail = str(exc).split("\n")[0]
    return StoreError("central.unreadable", f"{db}: cannot read the central store "
                      f"({type(exc).__name__}: {detail}). Fix: check --db (the receiver's "
                      "store; run the receiver once to create its tables)", path=db)


@contextlib.contextmanager
def _central_query(db: str) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
    """A query function on the central store: SQLite read-only, or PostgreSQL."""
    from sync.central.export import read_only
    from sync.central.store import PostgresCentral

    if "://" in db:
        store = PostgresCentral(db)
        try:
            yield store.query
        finally:
            store.close()
        return
    conn = read_only(Path(db))
    try:
        yield lambda sql, params: [tuple(r) for r in conn.execute(sql, list(params))]
    finally:
        conn.close()
