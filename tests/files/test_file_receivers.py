"""Which receiver serves the units' files (only one: --files-dir, the others --no-files), and
what the unit does while none does (inits back off; "central does not take files yet")."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.files.attachments import AttachmentStore
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.files.uploader import NO_ROUTE
from tests.broker import MosquittoBroker
from tests.files.kit import UNIT, central_files, complete, settings
from tests.sync.checker import wait_until

runner = CliRunner()


async def test_two_receivers_of_a_group_only_the_one_serving_files_takes_them(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    serving, other = tmp_path / "a" / "central.db", tmp_path / "b" / "central.db"
    serving.parent.mkdir()
    other.parent.mkdir()
    data = os.urandom(120_000)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        item = AttachmentStore(store).add_bytes(data, name="x.pdf")
        receivers = [
            Receiver("127.0.0.1", mosquitto.port, serving, group="g"),
            Receiver("127.0.0.1", mosquitto.port, other, group="g", serve_files=False),
        ]
        tasks = [asyncio.create_task(r.run(stop)) for r in receivers]
        for r in receivers:
            await asyncio.wait_for(r.connected.wait(), 10)
        tasks.append(asyncio.create_task(SyncDaemon(store, cfg).run(stop)))
        await wait_until(lambda: complete(serving, item.file_id), 15, "file complete")
        stop.set()
        await asyncio.gather(*tasks)
    assert receivers[1].files is None
    assert not central_files(other).exists()  # the other receiver never saw a file message


async def test_no_receiver_serves_files_the_unit_backs_off_and_says_so(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port, timeout=0.3)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        AttachmentStore(store).add_bytes(os.urandom(10_000), name="x.pdf")
        receiver = Receiver("127.0.0.1", mosquitto.port, central, serve_files=False)
        daemon = SyncDaemon(store, cfg)
        tasks = [asyncio.create_task(receiver.run(stop))]
        await asyncio.wait_for(receiver.connected.wait(), 10)
        tasks.append(asyncio.create_task(daemon.run(stop)))
        await wait_until(lambda: daemon.files.uploader.inits >= 1, 10, "first init")
        start = time.monotonic()
        await wait_until(lambda: time.monotonic() - start > 4.0, 6, "a 4 s window")
        inits = daemon.files.uploader.inits
        status = daemon.status()
        stop.set()
        await asyncio.gather(*tasks)
    # Without backoff: one init per 0.3 s timeout, ~14 in the window. With it: the waits
    # double from 0.3 s (at least half of each is waited): 0, ~0.5, ~1.1, ~2, ~3.5 s.
    assert 2 <= inits <= 6, inits
    assert status["files_state"] == NO_ROUTE
    print(f"no file route: {inits} inits in 4 s (ack timeout 0.3 s)")


def test_receive_with_postgresql_needs_files_dir_or_no_files(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["receive", "--db", "postgresql://c@localhost/central", "--broker", "127.0.0.1:1"]
    )
    assert result.exit_code == 2
    assert "--files-dir" in result.output and "--no-files" in result.output
    result = runner.invoke(
        app,
        [
            "receive",
            "--db",
            str(tmp_path / "c.db"),
            "--broker",
            "127.0.0.1:1",
            "--no-files",
            "--files-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
