"""Which clock stamps the readings (issue 25, item 8): GPS time is never trusted blindly. A
table over the cases met in the field, a property over all inputs, and the real sink over a
real store: a simulator's fixed date and a GPS week roll-over are reported and not used,
central's measured offset corrects a wrong boot clock (the raw time kept), and the nurse's
clock tile and ``doctor`` show a disagreement."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.simulators.nmea import GpsModel
from edge_agent.checks.doctor import check_clock
from edge_agent.clock import (
    EARLIEST_PLAUSIBLE,
    GPS_WEEK_ROLLOVER_S,
    ClockChoice,
    choose_clock,
)
from edge_agent.console.checklist import Facts, clock_tile
from edge_agent.console.queries import UnitView, unit_view
from edge_agent.i18n import translator
from edge_agent.models import ClockSource, measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.database import get_state
from edge_agent.store.writer import Store

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC).timestamp()  # the true time
DAY = 86400.0
SIM = -14 * DAY  # the GPS simulator's fixed 2026-11-23 against the true 2026-12-07
ROLLOVER = -float(GPS_WEEK_ROLLOVER_S)  # 1024 weeks = 7168 days early

SYSTEM, GPS, CENTRAL, UNTRUSTED = (
    ClockSource.SYSTEM,
    ClockSource.GPS,
    ClockSource.CENTRAL,
    ClockSource.UNTRUSTED,
)


@pytest.mark.parametrize(
    ("case", "system", "synced", "gps", "central", "expected"),
    [
        (
            "NTP synced, simulator 14 days early",
            NOW,
            True,
            SIM,
            None,
            ClockChoice(SYSTEM, 0.0, "gps"),
        ),
        (
            "central confirmed the clock, simulator 14 days early",
            NOW,
            False,
            SIM,
            0.4,
            ClockChoice(SYSTEM, 0.0, "gps"),
        ),
        (
            "NTP synced, GPS week roll-over",
            NOW,
            True,
            ROLLOVER,
            None,
            ClockChoice(SYSTEM, 0.0, "gps"),
        ),
        (
            "booted offline, GPS week roll-over",
            NOW,
            False,
            ROLLOVER,
            None,
            ClockChoice(UNTRUSTED, 0.0, "gps-implausible"),
        ),
        (
            "booted offline, RTC an hour slow, GPS right",
            NOW - 3600,
            False,
            3600.0,
            None,
            ClockChoice(GPS, 3600.0),
        ),
        (
            "booted offline, RTC reset to 2000, GPS right",
            NOW - 26 * 365 * DAY,
            False,
            26 * 365 * DAY,
            None,
            ClockChoice(GPS, 26 * 365 * DAY),
        ),
        ("booted offline, GPS agrees", NOW, False, 0.5, None, ClockChoice(SYSTEM)),
        ("booted offline, nothing else", NOW, False, None, None, ClockChoice(UNTRUSTED)),
        (
            "RTC reset to 2000, nothing else",
            NOW - 26 * 365 * DAY,
            False,
            None,
            None,
            ClockChoice(UNTRUSTED),
        ),
        (
            "wrong boot clock, central measured a day",
            NOW - DAY,
            False,
            None,
            DAY,
            ClockChoice(CENTRAL, DAY),
        ),
        (
            "wrong boot clock, central and GPS agree",
            NOW - DAY,
            False,
            DAY + 1,
            DAY,
            ClockChoice(CENTRAL, DAY),
        ),
        (
            "wrong boot clock, central measured, simulator",
            NOW - DAY,
            False,
            DAY + SIM,
            DAY,
            ClockChoice(CENTRAL, DAY, "gps"),
        ),
        (
            "NTP synced but central measured otherwise: central wins",
            NOW - 60,
            True,
            None,
            60.0,
            ClockChoice(CENTRAL, 60.0),
        ),
        (
            "central a day behind the unit (negative offset)",
            NOW + DAY,
            False,
            None,
            -DAY,
            ClockChoice(CENTRAL, -DAY),
        ),
    ],
)
def test_which_clock_is_trusted(
    case: str,
    system: float,
    synced: bool,
    gps: float | None,
    central: float | None,
    expected: ClockChoice,
) -> None:
    assert (
        choose_clock(system, system_synced=synced, gps_offset_s=gps, central_offset_s=central)
        == expected
    ), case


offsets = st.one_of(st.none(), st.floats(-30 * 365 * DAY, 30 * 365 * DAY))


@given(
    system=st.floats(NOW - 30 * 365 * DAY, NOW + 365 * DAY),
    synced=st.booleans(),
    gps=offsets,
    central=offsets,
)
def test_gps_is_never_trusted_blindly(
    system: float, synced: bool, gps: float | None, central: float | None
) -> None:
    choice = choose_clock(system, system_synced=synced, gps_offset_s=gps, central_offset_s=central)
    stamped = system + choice.correction_s
    if central is not None:  # measured against a reference: it decides
        assert abs(stamped - (system + central)) <= 2.0
        assert choice.source in (SYSTEM, CENTRAL)
    if choice.source is GPS:  # only when nothing else vouches, and never an impossible date
        assert central is None and not (synced and system >= EARLIEST_PLAUSIBLE)
        assert stamped >= EARLIEST_PLAUSIBLE
    if gps is not None and choice.source is not GPS and abs(system + gps - stamped) > 2.0:
        assert choice.disagreement in ("gps", "gps-implausible")  # reported, not used
    if choice.disagreement is None and gps is not None and choice.source is not UNTRUSTED:
        assert abs(system + gps - stamped) <= 2.0


def test_the_gps_simulator_uses_the_current_date() -> None:
    before = datetime.now(UTC)
    model = GpsModel(seed=1)
    model.output()
    sent = datetime.fromisoformat(model.sent[0].time.replace("Z", "+00:00"))
    assert before - timedelta(seconds=5) <= sent <= datetime.now(UTC) + timedelta(seconds=5)


class Clock:
    def __init__(self, wall: float) -> None:
        self.wall, self.mono = wall, 1000.0


async def gps_fix(sink: StoreSink, when: float) -> None:
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await sink.store(
        "gps",
        [
            measurement("latitude", 31.96, device_time=stamp),
            measurement("longitude", -6.57, device_time=stamp),
        ],
        [],
    )


def stored(store: Store) -> list[tuple[str, str, dict[str, str]]]:
    return store.call(
        lambda db: [
            (r[0], r[1], dict(json.loads(r[2])))
            for r in db.execute(
                "SELECT received_at, clock_source, context FROM readings WHERE device_id = 'ox' "
                "ORDER BY seq"
            )
        ]
    )


def iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@pytest.mark.parametrize("gps_error", [SIM, ROLLOVER], ids=["simulator", "week-rollover"])
async def test_a_wrong_gps_date_is_reported_not_used(tmp_path: Path, gps_error: float) -> None:
    clock = Clock(NOW)
    with Store(tmp_path / "unit.db", "mmu-01") as store:  # NTP synced: clock_source SYSTEM
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        await gps_fix(sink, NOW + gps_error)
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        got = stored(store)
        state = store.call(lambda db: get_state(db, "clock"))
    assert got == [(iso(NOW), "system", {})]  # the true time, not 14 (or 7168) days early
    assert state["disagreement"] == "gps" and state["source"] == "system"
    assert state["gps_offset_s"] == pytest.approx(gps_error)
    view = unit_view(tmp_path / "unit.db", ["ox"])
    tile = clock_tile(translator("fr"), Facts(now=datetime.now(UTC), view=view, clock_synced=True))
    assert tile.status == "warn" and tile.detail != translator("fr")("clock.ok")
    assert "L'heure du GPS ne correspond pas" in tile.detail
    [check] = check_clock(None, view.clock)
    assert check.status == "warn" and "GPS time disagrees" in check.detail


async def test_central_corrects_a_wrong_boot_clock_and_the_raw_time_is_kept(tmp_path: Path) -> None:
    clock = Clock(NOW - DAY)  # booted offline a day slow
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.clock_source = ClockSource.UNTRUSTED
        sink = StoreSink(store, wall=lambda: clock.wall, monotonic=lambda: clock.mono)
        await sink.store("ox", [measurement("spo2", 97.0)], [])
        store.central_offset_s = DAY  # the sync daemon measured it (sync/clock_trust.py)
        await sink.store("ox", [measurement("spo2", 96.0)], [])
        got = stored(store)
    assert got[0] == (iso(NOW - DAY), "untrusted", {})  # flagged until measured
    assert got[1] == (iso(NOW), "central", {"system-time": iso(NOW - DAY)})


def test_the_clock_tile_is_ok_without_a_disagreement() -> None:
    view = UnitView(clock={"source": "system", "disagreement": None})
    tile = clock_tile(translator("fr"), Facts(now=datetime.now(UTC), view=view, clock_synced=True))
    assert (tile.status, tile.detail) == ("ok", "L'heure est juste.")
