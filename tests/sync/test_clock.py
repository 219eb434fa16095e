"""Time: readings stamped while the unit clock is not trusted are flagged; central's time in
an ack confirms a good clock, and exposes a wrong one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.models import ClockSource, measurement
from edge_agent.store.writer import Store
from sync.acks import Ack
from sync.central.receiver import Receiver
from sync.clock_trust import ClockTrust, Verdict, sample
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until
from tests.sync.test_faults import settings


def flags(store: Store) -> list[tuple[str, list[str]]]:
    return store.call(
        lambda db: [
            (r[0], json.loads(r[1]))
            for r in db.execute("SELECT clock_source, flags FROM readings ORDER BY seq")
        ]
    )


async def test_central_confirms_an_unsynchronised_clock(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    stop = asyncio.Event()
    with Store(cfg.store.path, "mmu-t") as store:
        store.clock_source = ClockSource.UNTRUSTED  # booted offline, kernel says unsynced
        store.append("ox", [measurement("spo2", 97.0)]).result()
        receiver = Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx")
        daemon = SyncDaemon(store, cfg)
        tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
        await wait_until(lambda: store.clock_source is ClockSource.SYSTEM, 30, "confirmation")
        store.append("ox", [measurement("spo2", 96.0)]).result()
        stop.set()
        await asyncio.gather(*tasks)
        got = flags(store)
    assert got[0] == ("untrusted", ["clock-untrusted"])  # flagged, not dropped, not re-dated
    assert got[1] == ("system", [])
    assert daemon.clock_offset_s is not None and abs(daemon.clock_offset_s) < 2


@pytest.mark.parametrize("offset", [-3600.0, 86400.0])
def test_a_wrong_clock_is_flagged_and_a_fixed_one_confirmed(tmp_path: Path, offset: float) -> None:
    cfg = settings(tmp_path, 1)
    with Store(cfg.store.path, "mmu-t") as store:
        daemon = SyncDaemon(store, cfg)
        seen = []
        t1 = 1_000_000.0
        # central's clock is `offset` ahead of ours; 0.3 s each way
        daemon._check_clock(
            Ack("b1", t_origin=t1, t_recv=t1 + 0.3 + offset, t_send=t1 + 0.31 + offset), t1 + 0.61
        )
        seen.append(store.clock_source)
        # the sign says which way: central ahead of the unit is a positive offset
        assert daemon.clock_offset_s == pytest.approx(offset, abs=0.01)
        # certain: the drivers' sink corrects reception times with it (item 8)
        assert store.central_offset_s == pytest.approx(offset, abs=0.01)
        daemon.trust.samples.clear()  # the unit's clock was fixed (NTP)
        daemon._check_clock(Ack("b2", t_origin=t1, t_recv=t1 + 0.3, t_send=t1 + 0.31), t1 + 0.61)
        seen.append(store.clock_source)
    assert seen == [ClockSource.UNTRUSTED, ClockSource.SYSTEM]


def test_an_ack_without_the_exchange_times_says_nothing_about_the_clock(tmp_path: Path) -> None:
    cfg = settings(tmp_path, 1)
    with Store(cfg.store.path, "mmu-t") as store:
        daemon = SyncDaemon(store, cfg)
        daemon._check_clock(Ack("b", t_send=0.0), 1_000_000.0)  # an older receiver's ack
        assert store.clock_source is ClockSource.SYSTEM
        assert daemon.clock_offset_s is None


def test_queueing_delay_never_flags_a_right_clock(tmp_path: Path) -> None:
    """The -389 s of a 100k drain: the ack waited behind a backlog, the clocks agree."""
    cfg = settings(tmp_path, 1)
    with Store(cfg.store.path, "mmu-t") as store:
        daemon = SyncDaemon(store, cfg)
        t1 = 2_000_000.0
        daemon._check_clock(Ack("b", t_origin=t1, t_recv=t1 + 389.0, t_send=t1 + 389.1), t1 + 389.2)
        assert store.clock_source is ClockSource.SYSTEM


@given(
    offset=st.floats(-5, 5), up=st.floats(0, 600), down=st.floats(0, 600), service=st.floats(0, 5)
)
def test_clock_trust_is_never_fooled_by_delays(
    offset: float, up: float, down: float, service: float
) -> None:
    """Whatever the queueing on either path, the verdict is never wrong: a clock within the
    tolerance is never called wrong, one beyond it never confirmed."""
    t1 = 1_000.0
    t2 = t1 + up + offset
    t3 = t2 + service
    t4 = t3 - offset + down
    verdict = ClockTrust(tolerance_s=2.0).add(sample(t1, t2, t3, t4))
    if abs(offset) <= 2.0:
        assert verdict is not Verdict.WRONG
    else:
        assert verdict is not Verdict.CONFIRMED
    if up + down < 0.1:
        assert verdict is (Verdict.CONFIRMED if abs(offset) <= 1.9 else verdict)


@given(
    offset=st.floats(-1e7, 1e7),
    up=st.floats(0, 600),
    down=st.floats(0, 600),
    service=st.floats(0, 5),
)
def test_the_offset_has_the_sign_of_central_minus_unit(
    offset: float, up: float, down: float, service: float
) -> None:
    """``offset`` is what to add to the unit's clock to get central's: positive when the unit
    is behind. The true offset lies within the sample's offset ± delay/2, sign included."""
    t1 = 1_700_000_000.0  # the unit's clock at publish
    t2 = t1 + up + offset  # central's clock, `offset` ahead of the unit's
    t3 = t2 + service
    t4 = t3 - offset + down  # the unit's clock again
    s = sample(t1, t2, t3, t4)
    assert abs(s.offset - offset) <= s.delay / 2 + 1e-3
    if abs(offset) > up + down + 1:
        assert (s.offset > 0) == (offset > 0)


def test_the_best_of_several_samples_decides() -> None:
    trust = ClockTrust(tolerance_s=2.0)
    assert trust.add(sample(0.0, 50.0, 50.0, 100.0)) is Verdict.UNSURE  # ±50 s: says nothing
    assert trust.add(sample(0.0, 10.2, 10.21, 0.5)) is Verdict.WRONG  # 10 s ahead, ±0.25
    assert trust.best() == sample(0.0, 10.2, 10.21, 0.5)
