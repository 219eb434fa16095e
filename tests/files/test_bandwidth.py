"""Files share the uplink cap with readings: through a capped link (the fault proxy's
bandwidth toxic, the same cap as ``[sync] uplink_bps``) a file arrives whole while alert-range
readings keep reaching central meanwhile: an alert does not wait for the file (it reaches
central before the file is complete). The time against the bytes' need and the alert latency
are printed, not asserted (speed lives in ``scripts/bench``: a loaded machine is slower)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.files.attachments import AttachmentStore
from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.faultproxy import FaultProxy
from tests.files.kit import UNIT, central_object, complete, settings
from tests.sync.checker import wait_until

ALERT_WITHIN_S = 6.0  # the soak run's bound: two segments' time (one paced, one on the wire)


def arrived(central: Path, seqs: set[int]) -> set[int]:
    if not central.exists():
        return set()
    with contextlib.closing(sqlite3.connect(central)) as db:
        try:
            rows = db.execute("SELECT seq FROM observations WHERE unit = ?", [UNIT]).fetchall()
        except sqlite3.OperationalError:
            return set()
    return seqs & {int(r[0]) for r in rows}


def landed(central: Path, seq: int) -> bool:
    return bool(arrived(central, {seq}))


async def transfer_under_cap(
    tmp_path: Path, port: int, bps: int, size: int, every_s: float = 3.0
) -> tuple[float, float, list[float], list[bool]]:
    """(seconds to central, seconds the bytes need, each alert's latency, whether each alert
    reached central before the file was complete)."""
    proxy = await FaultProxy(port).start()
    proxy.limit_bps = bps
    cfg = settings(tmp_path, proxy.port, uplink_bps=bps, timeout=10.0)
    central = tmp_path / "central.db"
    data = b"\xff\xd8\xff" + os.urandom(size - 3)  # a JPEG's worth of bytes
    stop = asyncio.Event()
    latencies: list[float] = []
    before_file: list[bool] = []
    seqs: set[int] = set()
    with Store(cfg.store.path, UNIT) as store:
        added = AttachmentStore(store).add_bytes(data, name="dermatoscope.jpg")
        daemon = SyncDaemon(store, cfg)
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", port, central).run(stop)),
            asyncio.create_task(daemon.run(stop)),
        ]
        await wait_until(lambda: daemon.connected, 15, "connected")
        started = time.monotonic()
        while not complete(central, added.file_id):
            # An alert-range SpO2 every few seconds while the file goes.
            sent_at = time.monotonic()
            seq = (await asyncio.wrap_future(store.append("ox", [measurement("spo2", 84.0)])))[0]
            seqs.add(seq)
            await wait_until(functools.partial(landed, central, seq), 120, "the alert")
            latencies.append(time.monotonic() - sent_at)
            before_file.append(not complete(central, added.file_id))
            while time.monotonic() < sent_at + every_s and not complete(central, added.file_id):
                await asyncio.sleep(0.05)  # the next alert is due, or the file arrived
        took = time.monotonic() - started
        stop.set()
        await asyncio.gather(*tasks)
    await proxy.close()
    assert central_object(central, added.file_id) == data
    assert arrived(central, seqs) == seqs
    return took, size * 8 / bps, latencies, before_file


async def test_a_file_through_a_capped_link_keeps_the_pace_and_alerts_keep_arriving(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    took, need, latencies, before_file = await transfer_under_cap(
        tmp_path, mosquitto.port, 128_000, 200_000
    )
    print(
        f"200 kB at 128 kbit/s: {took:.1f} s for {need:.1f} s of bytes "
        f"({took / need:.2f}x); alert latency max {max(latencies):.2f} s over {len(latencies)}"
    )
    assert before_file[0], "the first alert waited for the whole file"


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_a_2_mb_image_at_64_kbit_s(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    took, need, latencies, before_file = await transfer_under_cap(
        tmp_path, mosquitto.port, 64_000, 2 * 1024 * 1024
    )
    print(
        f"2 MB at 64 kbit/s: {took:.1f} s for {need:.1f} s of bytes ({took / need:.2f}x); "
        f"alert latency max {max(latencies):.2f} s over {len(latencies)}"
    )
    assert all(before_file[:-1]), "an alert waited for the whole file"
    assert took <= 1.2 * need
    assert max(latencies) <= ALERT_WITHIN_S
