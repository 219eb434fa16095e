"""The upload under faults: link resets mid-segment, a segment corrupted in transit, kill -9
of the agent and of the receiver, a file whose final checksum never matches. Each ends with
the file at central byte-identical (or, for the bad file, never marked received) and the
bytes sent twice counted: at most one segment per interruption."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from edge_agent.files.attachments import AttachmentStore
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.files.uploader import SegmentSizer
from tests.broker import MosquittoBroker
from tests.faultproxy import FaultProxy
from tests.files.kit import (
    UNIT,
    central_files,
    central_object,
    central_upload,
    complete,
    resources,
    settings,
    sha256,
    unit_holds,
)
from tests.sync.checker import wait_until


def offset(central: Path, file_id: str) -> int:
    row = central_upload(central, file_id)
    return 0 if row is None else int(row["offset"])


async def test_link_resets_mid_segment_and_a_corrupted_segment_cost_one_segment_each(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    bps = 256_000
    proxy = await FaultProxy(mosquitto.port).start()
    proxy.limit_bps = bps
    cfg = settings(tmp_path, proxy.port, uplink_bps=bps, timeout=5.0)
    central = tmp_path / "central.db"
    marker = b"\x00CORRUPT-ME-HERE\x00"
    data = bytearray(os.urandom(320_000))
    data[250_000 : 250_000 + len(marker)] = marker
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        added = AttachmentStore(store).add_bytes(bytes(data), name="otoscope.jpg", kind="image")
        daemon = SyncDaemon(store, cfg)
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
            asyncio.create_task(daemon.run(stop)),
        ]
        segment = SegmentSizer(bps).target()

        def mid_segment(after: int) -> bool:
            cur = daemon.files.uploader.current
            return (
                offset(central, added.file_id) >= after
                and cur is not None
                and cur.waiting.startswith("seg/")
            )

        for after in (1, 2 * segment):  # two resets, each while a segment is on the wire
            await wait_until(
                lambda a=after: mid_segment(a),  # type: ignore[misc]
                30,
                "a segment in flight",
            )
            proxy.set_mode("reset")
            await wait_until(lambda: not daemon.connected, 10, "the link drops")
            proxy.set_mode("pass")
        proxy.corrupt_once(marker)
        await wait_until(lambda: complete(central, added.file_id), 60, "file complete")
        await wait_until(lambda: unit_holds(cfg.store.path, added.file_id), 10, "unit knows")
        status = daemon.files.status()
        stop.set()
        await asyncio.gather(*tasks)
    await proxy.close()
    assert proxy.corrupted == 1
    assert central_object(central, added.file_id) == bytes(data)
    row = central_upload(central, added.file_id)
    assert row is not None and row["bad_segments"] == 1  # detected...
    assert status["file_bad_segments"] == 1  # ...and sent again
    interruptions = 3  # two resets, one corrupted segment
    print(
        f"2 resets + 1 corrupted segment: {status['file_bytes_resent']} bytes re-sent by the "
        f"unit, {row['segment_bytes_in'] - len(data)} received twice by central "
        f"(segment {segment} bytes)"
    )
    assert status["file_bytes_resent"] <= interruptions * segment, status
    assert row["segment_bytes_in"] - len(data) <= interruptions * segment
    assert len(resources(central, "Media")) == 1


async def test_a_file_whose_checksum_never_matches_is_never_marked_received(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    data = b"%PDF-1.4\n" + os.urandom(200_000)
    with Store(cfg.store.path, UNIT) as store:
        files = AttachmentStore(store)
        added = files.add_bytes(data, name="report.pdf")
        path = files.path_of(added.file_id)  # bit rot on the unit's disk after it was stored
        rotten = bytearray(path.read_bytes())
        rotten[1000] ^= 0x01
        path.write_bytes(bytes(rotten))
        daemon = SyncDaemon(store, cfg)
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
            asyncio.create_task(daemon.run(stop)),
        ]
        await wait_until(lambda: daemon.files.failed == 1, 60, "the file left to an operator")
        failed = store.read(
            lambda db: db.execute("SELECT failed, central_holds_at FROM attachments").fetchone()
        )
        stop.set()
        await asyncio.gather(*tasks)
    row = central_upload(central, added.file_id)
    assert row is not None and row["state"] == "receiving" and row["mismatches"] == 3
    assert not (central_files(central) / "objects").exists()
    assert resources(central, "DocumentReference") == []
    assert failed[0] and failed[1] is None


def write_config(tmp: Path, port: int, bps: int) -> Path:
    config = tmp / "unit.toml"
    config.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{tmp / "unit" / "unit.db"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nkeepalive_s = 5\n'
        f"[sync]\nack_timeout_s = 5.0\nuplink_bps = {bps}\n"
    )
    return config


def agent_connected(unit_db: Path) -> bool:
    if not unit_db.exists():
        return False
    with contextlib.closing(sqlite3.connect(unit_db)) as db:
        try:
            row = db.execute("SELECT value FROM agent_state WHERE key = 'sync'").fetchone()
        except sqlite3.OperationalError:
            return False
    return row is not None and bool(json.loads(row[0]).get("connected"))


async def edge_agent(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", *args, stdout=asyncio.subprocess.DEVNULL
    )


async def test_kill_9_of_the_agent_and_of_the_receiver_mid_upload_resume_from_central(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    bps = 400_000
    config = write_config(tmp_path, mosquitto.port, bps)
    central = tmp_path / "central.db"
    source = tmp_path / "ultrasound.mp4"
    data = os.urandom(700_000)
    source.write_bytes(data)
    file_id = sha256(data)
    segment = SegmentSizer(bps).target()
    receive = (
        "receive",
        "--db",
        str(central),
        "--broker",
        f"127.0.0.1:{mosquitto.port}",
        "--client-id",
        "rx-files",
    )
    procs = [
        await edge_agent(*receive),
        await edge_agent("run", "--config", str(config), "--only", "sync"),
    ]
    try:
        await wait_until(
            lambda: agent_connected(tmp_path / "unit" / "unit.db"), 30, "the agent connected"
        )
        # Attached while the agent runs: the command tells it (SIGUSR2), it sends at once.
        attach = await edge_agent("attach", str(source), "--kind", "video", "--config", str(config))
        assert await attach.wait() == 0
        await wait_until(lambda: offset(central, file_id) >= segment, 60, "first segment")
        procs[1].send_signal(signal.SIGKILL)  # the agent, mid-upload
        await procs[1].wait()
        held = offset(central, file_id)
        procs[1] = await edge_agent("run", "--config", str(config), "--only", "sync")
        await wait_until(
            lambda: offset(central, file_id) >= held + 2 * segment,
            60,
            "progress after the agent's restart",
        )
        procs[0].send_signal(signal.SIGKILL)  # the receiver, mid-upload
        await procs[0].wait()
        assert offset(central, file_id) < len(data)
        procs[0] = await edge_agent(*receive)
        await wait_until(lambda: complete(central, file_id), 60, "file complete")
        await wait_until(
            lambda: unit_holds(tmp_path / "unit" / "unit.db", file_id), 15, "the unit marks it held"
        )
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
    assert central_object(central, file_id) == data
    row = central_upload(central, file_id)
    assert row is not None
    # Bytes that reached central twice: at most one segment per interruption (two).
    print(
        f"kill -9 agent + kill -9 receiver: {row['segment_bytes_in'] - len(data)} bytes "
        f"received twice by central (segment {segment} bytes)"
    )
    assert row["segment_bytes_in"] - len(data) <= 2 * segment, row
    assert [m["content"]["contentType"] for m in resources(central, "Media")] == ["video/mp4"]
