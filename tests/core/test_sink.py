"""The drivers' sink: GPS position attached to readings, GPS time when the unit clock is off."""

from __future__ import annotations

from pathlib import Path

from edge_agent.models import measurement
from edge_agent.store import Store
from edge_agent.supervisor import StoreSink

T0 = 1_795_000_000.0  # the unit's (wrong) wall clock: 2026-11-18T11:06:40Z


class Clock:
    def __init__(self) -> None:
        self.wall, self.mono = T0, 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def rows(store: Store) -> list[tuple[str, str, float | None, float | None, str]]:
    return store.call(lambda db: [tuple(r) for r in db.execute(
        "SELECT device_id, clock_source, latitude, longitude, received_at FROM readings "
        "ORDER BY seq")])


async def test_position_and_gps_time_are_attached(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        # GPS says it is one hour later than the unit's clock believes.
        gps_time = "2026-11-18T12:06:40Z"  # = T0 + 3600 s
        await sink.store("gps", [measurement("latitude", 31.96, device_time=gps_time),
                                 measurement("longitude", -6.57, device_time=gps_time)], [])
        clock.advance(10)
        await sink.store("ox", [measurement("spo2", 96.0)], [])
        clock.advance(sink.POSITION_MAX_AGE + 400)  # fix too old, GPS time too old
        await sink.store("ox", [measurement("spo2", 95.0)], [])
        got = rows(store)
    assert got[0][1:4] == ("system", None, None)
    assert [r[0] for r in got] == ["ox", "gps", "gps", "ox", "ox"]
    assert got[1][2:4] == got[2][2:4] == (None, None)  # the GPS's own readings
    assert got[3][1:4] == ("gps", 31.96, -6.57)
    assert got[3][4] == "2026-11-18T12:06:50.000Z"  # GPS-corrected reception time
    assert got[4][1:4] == ("system", None, None)


async def test_gps_agreeing_with_the_clock_keeps_system_time(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        now = "2026-11-18T11:06:41Z"  # T0 + 1 s: within tolerance
        await sink.store("gps", [measurement("latitude", 1.0, device_time=now),
                                 measurement("longitude", 2.0, device_time=now)], [])
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        assert rows(store)[2][:4] == ("ox", "system", 1.0, 2.0)


async def test_a_full_disk_keeps_the_readings_and_stores_them_when_space_returns(
    tmp_path: Path,
) -> None:
    import asyncio

    from edge_agent.backoff import Backoff

    with Store(tmp_path / "unit.db", "mmu-01") as store:
        sink = StoreSink(store)
        sink.full_retry = Backoff(base=0.01, cap=0.02)
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        pages = store.call(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
        # FAULT-TESTING.md: max_page_count makes SQLite report a full disk.
        store.call(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
        burst = [measurement("spo2", 96.0, raw=bytes(4096)) for _ in range(20)]
        task = asyncio.create_task(sink.store("ox", burst, []))
        async with asyncio.timeout(10):
            while sink.devices.get("ox") is None or sink.devices["ox"].state != "store-full":
                await asyncio.sleep(0.01)
        assert not task.done()  # held, not dropped
        store.call(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))
        await asyncio.wait_for(task, 10)
        assert store.stats()["readings_total"] == 21
