"""The drivers' sink: GPS position attached to readings, GPS time when the unit clock is off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edge_agent.errors import StoreFull
from edge_agent.models import ClockSource, measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.acquisition_buffer import AcquisitionBuffer
from edge_agent.store.database import get_state
from edge_agent.store.disk_full import FullDisk
from edge_agent.store.disk_status import read_status
from edge_agent.store.writer import Store

T0 = 1_795_000_000.0  # the unit's (wrong) wall clock: 2026-11-18T11:06:40Z


class Clock:
    def __init__(self) -> None:
        self.wall, self.mono = T0, 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def rows(store: Store) -> list[tuple[str, str, float | None, float | None, str]]:
    return store.call(
        lambda db: [
            tuple(r)
            for r in db.execute(
                "SELECT device_id, clock_source, latitude, longitude, received_at FROM readings "
                "ORDER BY seq"
            )
        ]
    )


async def test_position_and_gps_time_are_attached(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.clock_source = ClockSource.UNTRUSTED  # booted offline: NTP has not synced
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        # GPS says it is one hour later than the unit's clock believes.
        gps_time = "2026-11-18T12:06:40Z"  # = T0 + 3600 s
        await sink.store(
            "gps",
            [
                measurement("latitude", 31.96, device_time=gps_time),
                measurement("longitude", -6.57, device_time=gps_time),
            ],
            [],
        )
        clock.advance(10)
        await sink.store("ox", [measurement("spo2", 96.0)], [])
        clock.advance(sink.POSITION_MAX_AGE + 400)  # fix too old, GPS time too old
        await sink.store("ox", [measurement("spo2", 95.0)], [])
        got = rows(store)
        context = store.call(
            lambda db: [
                json.loads(r[0]) for r in db.execute("SELECT context FROM readings ORDER BY seq")
            ]
        )
    assert got[0][1:4] == ("untrusted", None, None)
    assert [r[0] for r in got] == ["ox", "gps", "gps", "ox", "ox"]
    assert got[1][2:4] == got[2][2:4] == (None, None)  # the GPS's own readings
    assert got[3][1:4] == ("gps", 31.96, -6.57)
    assert got[3][4] == "2026-11-18T12:06:50.000Z"  # GPS-corrected reception time
    assert ["system-time", "2026-11-18T11:06:50.000Z"] in context[3]  # the raw time kept
    assert got[4][1:4] == ("untrusted", None, None)


async def test_gps_agreeing_with_the_clock_keeps_system_time(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        now = "2026-11-18T11:06:41Z"  # T0 + 1 s: within tolerance
        await sink.store(
            "gps",
            [
                measurement("latitude", 1.0, device_time=now),
                measurement("longitude", 2.0, device_time=now),
            ],
            [],
        )
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        assert rows(store)[2][:4] == ("ox", "system", 1.0, 2.0)


async def test_a_full_disk_holds_stream_readings_and_writes_them_back_in_order(
    tmp_path: Path,
) -> None:
    clock = Clock()
    free = {"bytes": 0}
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        full = FullDisk(
            store,
            poll=0.02,
            reserve_bytes=4096,
            resume_free_bytes=1,
            free_bytes=lambda: free["bytes"],
        )
        sink = StoreSink(
            store, wall=lambda: clock.wall, monotonic=lambda: clock.mono, full_disk=full
        )
        stop = asyncio.Event()
        keeper = asyncio.create_task(full.run(stop))
        await sink.store("ox", [measurement("spo2", 97.0)], [], may_buffer=True)
        fill_disk(store)
        for i in range(20):  # one burst per second of the device's clock, disk full
            clock.advance(1)
            async with asyncio.timeout(2):  # returns at once: the port keeps being read
                await sink.store(
                    "ox", [measurement("spo2", 80.0 + i, raw=bytes(4096))], [], may_buffer=True
                )
        assert sink.devices["ox"].state == "store-full"
        assert full.full and full.buffer.readings == 20
        status = read_status(store.path)
        assert status is not None and status["disk"] == "full" and status["agent_running"]
        # A message device is not acknowledged while the disk is full: it will resend.
        with pytest.raises(StoreFull):
            await sink.store("monitor", [measurement("spo2", 99.0, raw=bytes(8192))], [])
        assert store.stats()["readings_total"] == 1
        free_disk(store)
        free["bytes"] = 1 << 30
        async with asyncio.timeout(10):
            while full.full:
                await asyncio.sleep(0.02)
        got = rows(store)
        stop.set()
        await keeper
        events = store.call(
            lambda db: [
                r[0]
                for r in db.execute("SELECT kind FROM events WHERE kind LIKE 'store.%' ORDER BY id")
            ]
        )
        disk = store.call(lambda db: get_state(db, "disk"))
    assert [r[0] for r in got] == ["ox"] * 21
    stamps = [r[4] for r in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 21  # when the bytes arrived
    assert stamps[-1] == "2026-11-18T11:07:00.000Z"  # T0 + 20 s, not the write-back time
    assert sink.devices["ox"].state == "starting" and sink.devices["ox"].readings == 21
    assert events == ["store.full", "store.space-returned"]
    assert disk["state"] == "ok" and disk["last_full"]["written_back"] == 20
    final = read_status(tmp_path / "unit.db")
    assert final is not None and final["disk"] == "ok"


async def test_a_full_memory_buffer_says_so_and_counts_what_it_could_not_keep(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        full = FullDisk(
            store, buffer=AcquisitionBuffer(max_readings=5), poll=0.02, free_bytes=lambda: 0
        )
        sink = StoreSink(store, full_disk=full)
        fill_disk(store)
        for _ in range(8):
            await sink.store(
                "ox", [measurement("spo2", 97.0, raw=bytes(8192))], [], may_buffer=True
            )
        assert sink.devices["ox"].state == "buffer-full"
        assert full.buffer.readings == 5 and full.status()["dropped"] == 3


async def test_the_disk_filling_again_during_the_write_back_loses_nothing(
    tmp_path: Path,
) -> None:
    """Space returns for a few held readings only: those are written, the rest go back to the
    memory buffer (none lost, none written twice), the episode goes on, and once space is
    really back every reading is in the store once, stamped when its bytes arrived."""
    clock = Clock()
    grants: list[bool] = []  # each grant lets the keeper try one write-back
    calls = [0]

    def free_bytes() -> int:
        calls[0] += 1
        return 1 << 30 if grants and grants.pop() else 0

    async def one_attempt(full: FullDisk) -> None:
        seen = calls[0]
        grants.append(True)
        # consumed at the next call, done before the one after (or the episode is over)
        async with asyncio.timeout(20):
            while calls[0] < seen + 2 and full.full:
                await asyncio.sleep(0.02)

    with Store(tmp_path / "unit.db", "mmu-01") as store:
        full = FullDisk(
            store,
            poll=0.02,
            reserve_bytes=4096,
            resume_free_bytes=1,
            probe_every=3600,
            flush_chunk=4,
            free_bytes=free_bytes,
        )
        sink = StoreSink(
            store, wall=lambda: clock.wall, monotonic=lambda: clock.mono, full_disk=full
        )
        stop = asyncio.Event()
        keeper = asyncio.create_task(full.run(stop))
        await sink.store("ox", [measurement("spo2", 97.0)], [], may_buffer=True)
        fill_disk(store)
        for i in range(20):
            clock.advance(1)
            await sink.store(
                "ox", [measurement("spo2", 80.0 + i, raw=bytes(4096))], [], may_buffer=True
            )
        assert full.buffer.readings == 20
        pages = store.call(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
        store.call(lambda db: db.execute(f"PRAGMA max_page_count = {pages + 8}"))  # a few
        await one_attempt(full)
        written = store.stats()["readings_total"] - 1
        assert 0 < written < 20, written
        assert full.full  # still the same episode: the rest waits for space
        assert (full.written_back, full.buffer.readings) == (written, 20 - written)
        status = read_status(store.path)
        assert status is not None and status["disk"] == "full"
        free_disk(store)
        await one_attempt(full)
        assert not full.full and full.buffer.readings == 0
        got = rows(store)
        values = store.call(
            lambda db: [r[0] for r in db.execute("SELECT value FROM readings ORDER BY seq")]
        )
        stop.set()
        await keeper
    assert sorted(values) == sorted([97.0] + [80.0 + i for i in range(20)])
    stamps = [r[4] for r in got]
    assert len(set(stamps)) == 21  # each when its bytes arrived, none written twice
    assert max(stamps) == "2026-11-18T11:07:00.000Z"


def fill_disk(store: Store) -> None:
    """FAULT-TESTING.md: max_page_count makes SQLite report a full disk."""
    pages = store.call(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    store.call(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
    with pytest.raises(StoreFull):  # a row that needs a new page no longer fits
        store.call(
            lambda db: db.execute(
                "INSERT INTO events (at, kind, detail) VALUES ('t', 'filler', ?)", [bytes(8192)]
            )
        )


def free_disk(store: Store) -> None:
    store.call(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))
