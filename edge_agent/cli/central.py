"""``edge-agent central``: central's side: the reference receiver (``receive``, also
``edge-agent receive``), downlink trust (keys, signed messages) and the export of what it holds
as FHIR Bulk Data NDJSON."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edge_agent.cli.common import parse_host_port
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from sync.signing import Signer

app = typer.Typer(no_args_is_help=True)


@app.command()
def keygen(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Where to write central's private key (PEM, created 0600; refuses to overwrite).",
        ),
    ],
) -> None:
    """Make central's signing key; prints the public key line for the units' config."""
    from sync.signing import new_private_key_pem

    pem, public = new_private_key_pem()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            str(out),
            "(file)",
            "already exists",
            "choose another --out (a new key for rotation), or move it away",
        ) from None
    except OSError as exc:
        raise ConfigError(
            str(out), "(file)", f"cannot be written: {exc.strerror}", "choose a writable --out"
        ) from None
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
        raise ConfigError(
            str(key),
            "(file)",
            f"cannot be read: {exc.strerror}",
            "pass the key made by `edge-agent central keygen`",
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            str(key),
            "(key)",
            str(exc).split("\n")[0],
            "pass the key made by `edge-agent central keygen`",
        ) from None


@app.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Central's private key (central keygen).")],
    unit: Annotated[str, typer.Option("--unit", help="The unit the message is for.")],
    topic: Annotated[str, typer.Option("--topic", help="cmd or config.")],
    body: Annotated[
        str,
        typer.Argument(
            help='The message, JSON: {"id": "1", "cmd": '
            '"sync-now"} or {"version": 2, "sync": {...}}.'
        ),
    ],
    ttl: Annotated[
        float,
        typer.Option(
            "--ttl",
            min=1,
            max=8 * 24 * 3600,
            help="Seconds it stays valid (units refuse more than 8 days).",
        ),
    ] = 3600,
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
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="Central store: a SQLite file, or a "
            "PostgreSQL URL (postgresql://user@host/dbname).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the NDJSON files and manifest.json (created 0700; files 0600).",
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only what central stored or updated at or "
            "after this ISO 8601 time with its zone (2026-11-30T08:00Z) or "
            "date (from 00:00 UTC); the last manifest's transactionTime.",
        ),
    ] = None,
    unit: Annotated[
        str | None, typer.Option("--unit", help="Only this unit's readings, files and encounters.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson (FHIR Bulk Data).")] = "ndjson",
    files: Annotated[
        Path | None,
        typer.Option(
            "--files",
            help="Central's file folder (files.db); default: "
            "beside a SQLite store (central.files/); none with PostgreSQL.",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="The URL the --out folder is served at "
            "(https://central.example/fhir/export); the manifest's request "
            "and file URLs are under it. Default: the folder's file:// URL.",
        ),
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
    if base_url is not None and not base_url.startswith(("https://", "http://", "file://")):
        raise typer.BadParameter(
            "an absolute http(s) URL (https://central.example/fhir/export)", param_hint="--base-url"
        )
    base = base_url or out.resolve().as_uri()
    request = ndjson.request_url(base, since, unit)
    try:
        with _central_query(db) as query:
            total = count_readings(query, cutoff, unit)
            with typer.progressbar(
                length=total, label="exporting readings", file=sys.stderr
            ) as bar:
                summary = run_export(
                    query,
                    files_db,
                    out,
                    since=cutoff,
                    unit=unit,
                    request=request,
                    progress=bar.update,
                    now=datetime.now(UTC),
                    base_url=base,
                )
    except OSError as exc:
        if exc.filename is None or str(db) == str(exc.filename):
            raise _unreadable(db, exc) from exc
        raise typer.BadParameter(
            f"cannot write {exc.filename} ({exc.strerror}): choose a writable folder",
            param_hint="--out",
        ) from None
    except Exception as exc:  # sqlite3/psycopg errors: one line, exit code 4
        if isinstance(exc, StoreError | typer.BadParameter):
            raise
        raise _unreadable(db, exc) from exc
    for kind in ndjson.ordered(summary.counts):
        typer.echo(f"{kind}: {summary.counts[kind]}", err=True)
    if summary.unresolved:
        typer.echo(
            f"references to resources central does not hold (dropped): {summary.unresolved}",
            err=True,
        )
    typer.echo(
        f"exported {sum(summary.counts.values())} resources to {out} (manifest.json; "
        f"next --since {summary.transaction_time})",
        err=True,
    )


def _unreadable(db: str, exc: BaseException) -> Exception:
    from edge_agent.errors import StoreError

    detail = str(exc).split("\n")[0]
    return StoreError(
        "central.unreadable",
        f"{db}: cannot read the central store "
        f"({type(exc).__name__}: {detail}). Fix: check --db (the receiver's "
        "store; run the receiver once to create its tables)",
        path=db,
    )


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


@app.command()
def receive(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="Central store: a SQLite file, or a PostgreSQL URL "
            "(postgresql://user@host/dbname) for a central deployment.",
        ),
    ],
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker HOST:PORT (not with --stats).")
    ] = None,
    group: Annotated[str, typer.Option("--group", help="Shared-subscription group.")] = "receivers",
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="MQTT client id; keep it stable so a restarted "
            "receiver resumes its session and gets the batches queued for it. "
            "Default: receiver-<hostname>.",
        ),
    ] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="TLS: CA certificate (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="TLS: client certificate (CN receiver).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS: client key (0600).")] = None,
    gap_timeout: Annotated[
        float,
        typer.Option(
            "--gap-timeout",
            min=1,
            help="Ask a unit to resend a sequence gap that lasts this many seconds.",
        ),
    ] = 120.0,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key",
            help="Central's private key (edge-agent "
            "central keygen): the commands and acks sent to units are "
            "signed.",
        ),
    ] = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Print what the central store holds per unit and "
            "epoch (readings, gaps, conflicts, dead letters) as JSON, and exit.",
        ),
    ] = False,
    files_dir: Annotated[
        Path | None,
        typer.Option(
            "--files-dir",
            help="Serve the units' files here (partial "
            "uploads, objects, files.db). Default: beside a SQLite "
            "--db (central.files/); required with PostgreSQL.",
        ),
    ] = None,
    no_files: Annotated[
        bool,
        typer.Option(
            "--no-files",
            help="Do not serve files: one receiver of a group "
            "serves them, the others run with --no-files.",
        ),
    ] = False,
) -> None:
    """Reference central receiver: store uplink batches idempotently, then acknowledge."""
    import asyncio
    import socket

    from edge_agent.cli.service import install_stop_handlers
    from sync.central.receiver import Receiver
    from sync.link import TlsFiles

    if stats:
        print_central_stats(db)
        return
    if broker is None:
        raise typer.BadParameter("give the broker as HOST:PORT", param_hint="--broker")
    tls = TlsFiles(ca, cert, key) if ca is not None else None
    sign = sign_ack = None
    if signing_key is not None:
        signer = load_signer(signing_key)
        sign, sign_ack = signer.sign, signer.ack_properties

    host, port = parse_host_port(broker)
    serve_files = check_files_options(db, files_dir, no_files)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        cid = client_id or f"receiver-{socket.gethostname()}"
        await Receiver(
            host,
            port,
            db,
            group=group,
            client_id=cid,
            tls=tls,
            gap_timeout=gap_timeout,
            sign=sign,
            sign_ack=sign_ack,
            files_dir=files_dir,
            serve_files=serve_files,
            announce=lambda line: typer.echo(line, err=True),
        ).run(stop)

    asyncio.run(main())


def check_files_options(db: str, files_dir: Path | None, no_files: bool) -> bool:
    """Whether this receiver serves files; a usage error (exit 2) names the fix."""
    if no_files and files_dir is not None:
        raise typer.BadParameter(
            "--no-files serves no files: drop --files-dir, or drop --no-files",
            param_hint="--no-files",
        )
    if not no_files and files_dir is None and "://" in db:
        raise typer.BadParameter(
            "with a PostgreSQL --db, give --files-dir DIR (this receiver "
            "serves the units' files) or --no-files (another one does)",
            param_hint="--files-dir",
        )
    if not no_files:
        check_files_dir(files_dir, db)
    return not no_files


def check_files_dir(files_dir: Path | None, db: str) -> None:
    """The folder the units' files go to can be made and written: else a usage error (exit 2)
    at start, not a receiver that never acknowledges a file (each unit showing "central does
    not take files yet")."""
    import tempfile

    from sync.central.files import default_files_dir

    folder = files_dir or default_files_dir(db)
    if folder is None:
        return
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {exc.filename or folder} ({exc.strerror or exc}): choose a writable "
            "folder, or --no-files if another receiver serves the files",
            param_hint="--files-dir" if files_dir is not None else "--db",
        ) from None


def print_central_stats(db: str) -> None:
    import json

    from edge_agent.errors import StoreError
    from sync.central.stats import central_stats
    from sync.central.store import opened

    if "://" not in db and not Path(db).is_file():
        raise StoreError("central.missing", f"{db}: no central store here (check --db)", path=db)
    try:
        with opened(db) as store:
            typer.echo(json.dumps(central_stats(store), indent=2))
    except Exception as exc:  # sqlite3/psycopg errors: one line, exit code 4
        if isinstance(exc, StoreError):
            raise
        raise StoreError(
            "central.unreadable",
            f"{db}: cannot read the central store ({type(exc).__name__}: {exc})",
            path=db,
        ) from exc
