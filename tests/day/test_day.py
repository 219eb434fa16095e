"""A van's day (scripts/day): the short day in the suite asserts correctness only (0 lost, 0
duplicated against the devices' own bytes, the HL7 monitor's witness and central's store) and
that the negative control (the offline freeze put back) is caught by the liveness figures.
Speed figures are printed, never asserted; the long day is behind the soak marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.day import figures
from tests.day.figures import Sample, Split, Window
from tests.day.van import FAULTS, DayConfig, run_day, schedule

# --- the pure parts ------------------------------------------------------------------------


def test_the_short_day_has_every_fault() -> None:
    phases = schedule(0.65 * 60)
    names = {p.name for p in phases}
    assert {"link-down", "flap-down", "broker-restart", "blackhole"} <= names
    assert phases[0].link == phases[-1].link == "online"
    assert next(p for p in phases if p.name == "blackhole").seconds >= 10  # > 1.5 x keepalive
    assert {p.name for p in schedule(60, ("link-down",))} == {"online", "link-down"}
    assert set(FAULTS) == {"link-down", "flap", "broker-restart", "blackhole"}


def test_a_reading_missing_or_held_twice_at_central_is_counted() -> None:
    unit = {"a": 1, "b": 2, "c": 3}
    assert figures.exactly_once(unit, [("a", 1), ("b", 2), ("c", 3)]).exactly_once
    lost = figures.exactly_once(unit, [("a", 1), ("c", 3)])
    assert (lost.lost, lost.seq_gaps) == (1, 1)
    twice = figures.exactly_once(unit, [("a", 1), ("b", 2), ("b", 2), ("c", 3)])
    assert twice.duplicated == 1 and not twice.exactly_once
    stranger = figures.exactly_once(unit, [("a", 1), ("b", 2), ("c", 3), ("z", 4)])
    assert stranger.unexpected == 1
    assert figures.multiset_diff([("spo2", 97.0)] * 2, [("spo2", 97.0)]) == (1, 0)
    assert figures.multiset_diff([("spo2", 97.0)], [("spo2", 97.0)] * 2) == (0, 1)


def _day(lag_ms: float, offline_rate: float = 8.0, detect: float = 2.0) -> figures.DayFigures:
    return figures.DayFigures(
        minutes=1,
        negative=None,
        keepalive_s=5,
        readings_per_s=figures.rates(
            [Window("online", 10, 80, 0.1), Window("offline", 10, int(offline_rate * 10), 0.1)]
        ),
        loop_lag_p99_ms=figures.split_p99([Sample("online", 2.0), Sample("offline", lag_ms)]),
        live_p99_ms=Split(40.0, 30.0),
        cpu_percent=Split(1.0, 1.0),
        console_offline_s=[detect],
        status_offline_s=[detect],
        drain_s=[1.0],
        reconnect_s=[1.0],
        agent_loop=None,
        witnessed=figures.Witnessed(sent=10),
    )


def test_a_frozen_loop_fails_the_day() -> None:
    assert _day(lag_ms=3.0).passed
    frozen = _day(lag_ms=figures.NOT_ANSWERING_MS)  # a heartbeat that did not answer
    assert not frozen.passed and not frozen.goals()["loop_lag"]
    assert not _day(3.0, offline_rate=0.0).goals()["offline_rate"]
    assert not _day(3.0, detect=30.0).goals()["offline_detected"]
    assert "verdict: FAIL" in frozen.text()
    assert frozen.as_dict()["verdict"] == "FAIL"


# --- the day, with real processes -----------------------------------------------------------


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_a_short_day_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    day = run_day(DayConfig(minutes=0.65, seed=1), tmp_path)
    print(day.text())  # the figures: printed, never asserted (speed is the script's output)
    w = day.witnessed
    assert w.exactly_once, w.notes
    assert (w.lost, w.duplicated, w.unexpected, w.seq_gaps, w.unsent) == (0, 0, 0, 0, 0)
    assert w.sent > 100 and w.files_dropped >= 4 and w.files_lost == 0
    assert set(day.by_device) >= {
        "oximeter-nonin",
        "oximeter-cms50",
        "monitor-hl7",
        "analyser-astm",
        "scale",
        "gps",
    }
    assert day.link_losses == 3 and day.live_polls > 10
    assert any(k.startswith("open ok") for k in day.nurse_actions), day.nurse_actions


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_the_offline_freeze_is_caught_by_the_liveness_figures(tmp_path: Path) -> None:
    day = run_day(
        DayConfig(minutes=0.4, negative="freeze", faults=("link-down",), seed=2), tmp_path
    )
    print(day.text())
    goals = day.goals()
    assert not day.passed
    # caught by liveness, not only by the backlog: the loop, the console, the offline rate
    assert not goals["loop_lag"] and not goals["console_live"] and not goals["offline_rate"]


@pytest.mark.soak
@pytest.mark.broker
@pytest.mark.timeout(3600)
def test_a_long_day(tmp_path: Path) -> None:
    day = run_day(DayConfig(minutes=20), tmp_path)
    print(day.text())
    assert day.witnessed.exactly_once, day.witnessed.notes
