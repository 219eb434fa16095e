"""``python -m tests.faults.hooked_agent run --config ...``: the real ``edge-agent`` CLI with
test-only hooks, chosen by environment variables that only this module reads. The production
code is not changed; the chaos harness (:mod:`tests.faults.chaos`) starts the agent this way.

- ``EDGE_AGENT_CHAOS_LAZY_DB=<path>``: register the lazy VFS (:mod:`tests.faults.lazyvfs`) and
  make ``sqlite3.connect`` of exactly that path open ``file:<path>?vfs=lazy``, so a SIGKILL
  of this process is a power cut for the store.
- ``EDGE_AGENT_CHAOS_NEGATIVE=sync-normal``: after the store's own open (which insists on
  ``synchronous=FULL``), set ``PRAGMA synchronous=NORMAL`` on its connection: a negative
  control that must lose acknowledged readings under power cuts.
- ``EDGE_AGENT_CHAOS_NEGATIVE=ack-before-commit``: the MLLP listener answers ``MSA|AA`` as soon
  as a message is complete and commits its readings ``ACK_FIRST_DELAY`` seconds later: a
  negative control that must lose acknowledged readings under kills.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

LAZY_ENV: Final = "EDGE_AGENT_CHAOS_LAZY_DB"
NEGATIVE_ENV: Final = "EDGE_AGENT_CHAOS_NEGATIVE"
NEGATIVES: Final = ("ack-before-commit", "sync-normal")
ACK_FIRST_DELAY: Final = 0.5


def install_lazy_store(path: Path) -> None:
    from tests.faults import lazyvfs

    lazyvfs.register()
    target = path.resolve()
    native_connect = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if isinstance(database, str | Path) and Path(database).resolve() == target:
            kwargs["uri"] = True
            conn = native_connect(f"file:{target}?vfs={lazyvfs.NAME}", *args, **kwargs)
        else:
            conn = native_connect(database, *args, **kwargs)
        assert isinstance(conn, sqlite3.Connection)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]


def install_sync_normal() -> None:
    from sqlite_utils import Database, Migrations

    from edge_agent.store import database, writer
    from edge_agent.store.migrations import migrations

    durable_open = database.open_database

    def open_normal(path: Path, migration_set: Migrations = migrations) -> Database:
        db = durable_open(path, migration_set)
        db.execute("PRAGMA synchronous=NORMAL")  # after the store's FULL check: the bug
        return db

    # the writer's own name for the opener (it imported it from edge_agent.store.database)
    writer.open_database = open_normal  # type: ignore[attr-defined]


def install_ack_before_commit() -> None:
    from drivers.base import (
        DeviceInfo,
        Event,
        GattDecoder,
        MessageComplete,
        Rejected,
        Sink,
        StreamDecoder,
    )
    from drivers.transports import mllp_tcp
    from edge_agent.models import Measurement

    later: set[asyncio.Task[None]] = set()

    async def commit_later(
        device_id: str, sink: Sink, pending: list[Measurement], rejects: list[Rejected]
    ) -> None:
        await asyncio.sleep(ACK_FIRST_DELAY)
        await sink.store(device_id, pending, rejects)

    async def dispatch_ack_first(
        device_id: str,
        events: Sequence[Event],
        sink: Sink,
        decoder: StreamDecoder | GattDecoder,
    ) -> list[DeviceInfo]:
        pending: list[Measurement] = []
        rejects: list[Rejected] = []
        for event in events:
            if isinstance(event, Measurement):
                pending.append(event)
            elif isinstance(event, Rejected):
                rejects.append(event)
            elif isinstance(event, MessageComplete):
                decoder.acknowledge(event.message_id, stored=True)  # the bug: before commit
                task = asyncio.create_task(commit_later(device_id, sink, pending, rejects))
                later.add(task)
                task.add_done_callback(later.discard)
                pending, rejects = [], []
        if pending or rejects:
            await sink.store(device_id, pending, rejects)
        return []

    mllp_tcp.dispatch = dispatch_ack_first  # type: ignore[attr-defined]


def install_from_environment() -> None:
    lazy = os.environ.get(LAZY_ENV)
    if lazy:
        install_lazy_store(Path(lazy))
    negative = os.environ.get(NEGATIVE_ENV, "")
    if negative == "sync-normal":
        install_sync_normal()
    elif negative == "ack-before-commit":
        install_ack_before_commit()
    elif negative:
        raise SystemExit(f"{NEGATIVE_ENV}={negative!r}: use one of {', '.join(NEGATIVES)}")


def main() -> None:
    install_from_environment()
    from edge_agent.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
