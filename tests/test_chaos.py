"""Chaos (scripts/chaos): the agent, a real Mosquitto and the reference receiver under random
SIGKILLs, power cuts on the agent's store (lazy VFS: unsynced writes dropped; only the store's
SQLite files, see tests/faults/lazyvfs.py), HL7 monitors over MLLP as the external witness of
what was acknowledged, then heal, drain and a Jepsen-shaped check (tests/faults/checker.py).

The short run is in the suite; the negative controls prove the harness sees lost acknowledged
readings; the long run (>= 200 kills, >= 100 power cuts) is behind the soak marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.chaos import ChaosConfig, Summary, run_chaos

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    # ends after 20 kills with at least 4 power cuts (about 40 s here), or at 90 s
    cfg = ChaosConfig(seconds=90, kills=20, power_cuts=4, power_cut_ratio=0.5, seed=1)
    return run_chaos(cfg, tmp_path_factory.mktemp("chaos"))


@pytest.mark.timeout(400)
def test_acknowledged_readings_survive_kills_and_power_cuts(short_run: Summary) -> None:
    s = short_run
    print(s.text())
    assert all(n >= 2 for n in s.kills.values()), s.kills
    assert s.power_cuts >= 4
    assert s.messages_acked > 100
    assert s.drained
    assert s.integrity_checks > sum(s.kills.values()) - s.kills["broker"]
    assert s.integrity_failures == 0
    assert s.starts_on_a_left_wal > 0  # the check after a kill leaves the WAL (a van's state)
    assert s.classes["lost"] == 0, s.lost_examples
    assert s.classes["unexpected"] == 0
    assert s.classes["duplicated_by_id"] == 0
    assert s.classes["seq_gaps"] == 0
    assert s.classes["ok"] == s.messages_acked * 3  # three readings per message


@pytest.mark.timeout(400)
def test_a_resent_message_is_stored_once(short_run: Summary) -> None:
    assert short_run.resends > 0
    assert short_run.classes["duplicated_by_content"] == 0


@pytest.mark.timeout(200)
@pytest.mark.parametrize("negative", ["ack-before-commit", "sync-normal"])
def test_negative_control_is_caught(negative: str, tmp_path: Path) -> None:
    cfg = ChaosConfig(
        seconds=10,
        negative=negative,
        targets=("agent",),
        weights=(1.0,),
        power_cut_ratio=1.0 if negative == "sync-normal" else 0.0,
        seed=2,
    )
    s = run_chaos(cfg, tmp_path)
    print(s.text())
    assert s.kills["agent"] >= 3
    assert s.negative_caught, "the harness did not see the acknowledged readings it lost"
    assert s.integrity_failures == 0


@pytest.mark.soak
@pytest.mark.timeout(7200)
def test_long_chaos_run(tmp_path: Path) -> None:
    cfg = ChaosConfig(seconds=5400, kills=200, power_cuts=100, power_cut_ratio=0.6, seed=7)
    s = run_chaos(cfg, tmp_path)
    print(s.text())
    assert sum(s.kills.values()) >= 200 and s.power_cuts >= 100
    assert s.drained and s.integrity_failures == 0
    assert s.classes["lost"] == 0 and s.classes["unexpected"] == 0
    assert s.classes["duplicated_by_id"] == 0 and s.classes["seq_gaps"] == 0
