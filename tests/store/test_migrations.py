"""Migrations: a store created by an older version is upgraded in place, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from edge_agent.models import measurement
from edge_agent.store.migrations import migrations
from edge_agent.store.writer import Store


def test_upgrade_from_every_older_version_keeps_readings(tmp_path: Path) -> None:
    names = [m.name for m in migrations._migrations]
    for stop in names[1:]:
        path = tmp_path / f"{stop}.db"
        # Build an old store: apply the steps before `stop` only.
        old = Database(sqlite3.connect(path))
        migrations.apply(old, stop_before=stop)
        old.execute(
            "INSERT INTO readings (id, unit_id, device_id, quantity, value, unit, received_at,"
            " clock_source) VALUES ('r1', 'mmu-01', 'ox', 'spo2', 97, '%', 't', 'system')"
        )
        old.conn.commit()
        old.close()
        with Store(path, "mmu-01") as store:
            applied = store.call(lambda db: [m.name for m in migrations.applied(db)])
            assert applied == names
            assert store.stats()["readings_total"] == 1
            assert store.append("ox", [measurement("spo2", 96.0)]).result(10) == [2]
