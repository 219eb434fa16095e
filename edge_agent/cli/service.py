"""Service commands: ``run`` (drivers + sync) and ``receive`` (reference central receiver)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edge_agent.cli.common import ConfigOption, load_settings, parse_host_port
from edge_agent.errors import StoreError

if TYPE_CHECKING:
    import asyncio


def install_stop_handlers(stop: asyncio.Event) -> None:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


T = TypeVar("T")
_OPEN_FIXES = {
    "store.unreadable": "check that the agent's user can write the store's folder (SQLite "
    "creates -wal and -shm files beside it); if the file is damaged, keep a copy, then restore "
    "a backup or move it aside (the agent starts a new store)",
    "store.not_durable": "put the store on a local disk (ext4): WAL needs shared memory, which "
    "network filesystems lack",
}


def open_store(make: Callable[[], T], path: Path) -> T:
    """``make()``, with the errors of opening the store (an unwritable or missing folder, a
    file that is not a store) as one line with the fix, exit 4."""
    from edge_agent.store import connect as store_connect

    try:
        return make()
    except StoreError as exc:
        fix = _OPEN_FIXES.get(exc.key)
        if fix is None or "Fix:" in str(exc):
            raise
        raise StoreError(exc.key, f"{exc}. Fix: {fix}", **exc.params) from None
    except PermissionError as exc:
        raise StoreError(
            "store.unwritable",
            f"{path}: cannot write the store ({exc.strerror}: {exc.filename or path}). Fix: "
            "run as the agent's user, or give it the folder (chown edge-agent "
            f"{path.parent}), or set [store] path to a writable place",
        ) from None
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(
            "store.unwritable",
            f"{path}: cannot create the store ({exc.filename or path} is not a folder). Fix: "
            "set [store] path to a file in a writable folder",
        ) from None
    except OSError as exc:
        raise StoreError(
            "store.unwritable",
            f"{path}: cannot create the store ({exc.strerror or exc}: {exc.filename or path}). "
            "Fix: set [store] path to a file in a writable folder",
        ) from None
    except store_connect.errors() as exc:
        raise StoreError(
            "store.unreadable",
            f"{path}: cannot open the store ({exc}). Fix: check that the folder is writable "
            "by the agent's user; if the file is damaged, keep a copy and move it aside",
        ) from None


def run(
    config: ConfigOption = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="Run only 'acquire' (the devices) or only 'sync'; the two "
                     "share nothing but the store, so they can be separate services."),
    ] = None,
) -> None:
    """Run the unit: every configured device and the sync daemon, in one supervised process."""
    if only not in (None, "acquire", "sync"):
        raise typer.BadParameter("use 'acquire' or 'sync'", param_hint="--only")
    import asyncio

    from edge_agent.clock import system_clock_synchronized
    from edge_agent.models import ClockSource
    from edge_agent.service.supervisor import Supervisor
    from edge_agent.store.writer import Store

    settings = load_settings(config)
    from edge_agent.store.agent_lock import ROLES, AgentLock

    # Held until this process ends (the kernel lets it go however it ends): a second agent on
    # this store is refused at once, before it opens the store.
    path = Path(settings.store.path)
    lock = open_store(lambda: AgentLock(path, ROLES if only is None else (only,)), path)

    async def main() -> None:
        from edge_agent.service.systemd_notify import Notifier

        stop = asyncio.Event()
        install_stop_handlers(stop)
        notifier = Notifier()
        with open_store(
            lambda: Store(
                settings.store.path,
                settings.unit.id,
                group_max=settings.store.group_max,
                group_wait=settings.store.group_wait_ms / 1000,
            ),
            settings.store.path,
        ) as store:
            if system_clock_synchronized() is False:
                store.clock_source = ClockSource.UNTRUSTED  # until central or GPS confirms
            supervisor = Supervisor(
                settings, store, acquire=only != "sync", sync=only != "acquire"
            )
            watchdog = asyncio.create_task(notifier.watchdog(store, stop, supervisor.loop_lag),
                                           name="watchdog")
            try:
                await supervisor.run(stop, started=lambda: notifier.ready(
                    f"{len(settings.devices)} devices, store {store.epoch}"))
            finally:
                notifier.stopping()
                stop.set()
                await watchdog

    try:
        asyncio.run(main())
    finally:
        lock.release()


def receive(
    db: Annotated[
        str, typer.Option("--db", help="Central store: a SQLite file, or a PostgreSQL URL "
                          "(postgresql://user@host/dbname) for a central deployment.")
    ],
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker HOST:PORT (not with --stats).")
    ] = None,
    group: Annotated[str, typer.Option("--group", help="Shared-subscription group.")] = "receivers",
    client_id: Annotated[
        str | None,
        typer.Option("--client-id", help="MQTT client id; keep it stable so a restarted "
                     "receiver resumes its session and gets the batches queued for it. "
                     "Default: receiver-<hostname>."),
    ] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="TLS: CA certificate (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="TLS: client certificate (CN receiver).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS: client key (0600).")] = None,
    gap_timeout: Annotated[
        float, typer.Option("--gap-timeout", min=1, help="Ask a unit to resend a sequence gap "
                            "that lasts this many seconds.")
    ] = 120.0,
    signing_key: Annotated[
        Path | None, typer.Option("--signing-key", help="Central's private key (edge-agent "
                                  "central keygen): the commands and acks sent to units are "
                                  "signed.")
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print what the central store holds per unit and "
                           "epoch (readings, gaps, conflicts, dead letters) as JSON, and exit.")
    ] = False,
    files_dir: Annotated[
        Path | None, typer.Option("--files-dir", help="Serve the units' files here (partial "
                                  "uploads, objects, files.db). Default: beside a SQLite "
                                  "--db (central.files/); required with PostgreSQL.")
    ] = None,
    no_files: Annotated[
        bool, typer.Option("--no-files", help="Do not serve files: one receiver of a group "
                           "serves them, the others run with --no-files.")
    ] = False,
    emulate_emqx_files: Annotated[
        bool, typer.Option("--emulate-emqx-files", help="Test aid: also play EMQX's part for "
                           "units in [files] mode = \"emqx\" ($file/..., behind Mosquitto). "
                           "Not EMQX; see sync/central/files_emqx.py.")
    ] = False,
) -> None:
    """Reference central receiver: store uplink batches idempotently, then acknowledge."""
    import asyncio
    import socket

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
        from edge_agent.cli.central import load_signer

        signer = load_signer(signing_key)
        sign, sign_ack = signer.sign, signer.ack_properties

    host, port = parse_host_port(broker)
    serve_files = check_files_options(db, files_dir, no_files, emulate_emqx_files)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        cid = client_id or f"receiver-{socket.gethostname()}"
        await Receiver(host, port, db, group=group, client_id=cid, tls=tls,
                       gap_timeout=gap_timeout, sign=sign, sign_ack=sign_ack,
                       files_dir=files_dir,
                       serve_files=serve_files, emulate_emqx_files=emulate_emqx_files,
                       announce=lambda line: typer.echo(line, err=True)).run(stop)

    asyncio.run(main())


def check_files_options(db: str, files_dir: Path | None, no_files: bool,
                        emulate_emqx: bool) -> bool:
    """Whether this receiver serves files; a usage error (exit 2) names the fix."""
    if no_files and (files_dir is not None or emulate_emqx):
        raise typer.BadParameter("--no-files serves no files: drop --files-dir and "
                                 "--emulate-emqx-files, or drop --no-files",
                                 param_hint="--no-files")
    if not no_files and files_dir is None and "://" in db:
        raise typer.BadParameter("with a PostgreSQL --db, give --files-dir DIR (this receiver "
                                 "serves the units' files) or --no-files (another one does)",
                                 param_hint="--files-dir")
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
        raise StoreError("central.unreadable", f"{db}: cannot read the central store "
                         f"({type(exc).__name__}: {exc})", path=db) from exc
