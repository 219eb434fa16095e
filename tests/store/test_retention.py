"""Retention on a full disk: by class, counted, never an unsent reading."""

from __future__ import annotations

import functools
from pathlib import Path

from drivers.base import Rejected
from edge_agent.models import measurement
from edge_agent.store.database import get_state
from edge_agent.store.retention import STAGES, free_stage
from edge_agent.store.writer import Store


def test_stages_free_acked_raw_then_old_rejects_and_events_never_unsent(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.append(
            "ox",
            [measurement("spo2", 97.0, raw=b"\x01" * 100) for _ in range(10)],
            [Rejected(b"\xff" * 50, "crc") for _ in range(30)],
        ).result(10)
        for i in range(30):
            store.log_event("test", str(i))
        store.call(lambda db: db.execute("UPDATE readings SET sent_at = 't' WHERE seq <= 4"))
        changed = [store.call(functools.partial(free_stage, stage=s, keep=10)) for s in STAGES]
        raw = store.call(
            lambda db: [
                r[0] is not None for r in db.execute("SELECT raw FROM readings ORDER BY seq")
            ]
        )
        rejects = store.call(lambda db: [r[0] for r in db.execute("SELECT id FROM rejects")])
        events = store.call(
            lambda db: db.execute("SELECT count(*), min(id) FROM events").fetchone()
        )
        counts = store.call(lambda db: get_state(db, "retention"))
        assert store.stats()["readings_total"] == 10
    assert raw == [False] * 4 + [True] * 6  # only what central acknowledged
    assert changed[0] == 4 and changed[1] == 20
    assert rejects == list(range(21, 31))  # the newest kept
    assert events[0] == 10 and changed[2] >= 20
    assert counts == {"acked-raw": 4, "old-rejects": 20, "old-events": changed[2]}
