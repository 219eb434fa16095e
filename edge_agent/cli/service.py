"""Service commands: ``run`` (drivers + sync). Central's ``receive`` is in
:mod:`edge_agent.cli.central`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edge_agent.cli.common import ConfigOption, load_settings
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
        typer.Option(
            "--only",
            help="Run only 'acquire' (the devices) or only 'sync'; the two "
            "share nothing but the store, so they can be separate services.",
        ),
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
            supervisor = Supervisor(settings, store, acquire=only != "sync", sync=only != "acquire")
            watchdog = asyncio.create_task(
                notifier.watchdog(store, stop, supervisor.loop_lag), name="watchdog"
            )
            try:
                await supervisor.run(
                    stop,
                    started=lambda: notifier.ready(
                        f"{len(settings.devices)} devices, store {store.epoch}"
                    ),
                )
            finally:
                notifier.stopping()
                stop.set()
                await watchdog

    try:
        asyncio.run(main())
    finally:
        lock.release()
