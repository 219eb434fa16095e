"""The console's assign and close, run through the agent's own writer, queue readings again
for central without a new reading: the sync loop hears of them at once (a commit note), as it
hears of a new reading, instead of waiting for the next one to arrive."""

from __future__ import annotations

from pathlib import Path

from edge_agent.console import actions
from edge_agent.models import measurement
from edge_agent.store.writer import CommitNote, Store


def test_assign_and_close_through_the_writer_wake_the_sync_loop(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        seq = store.append("ox", [measurement("spo2", 97.0)]).result(10)[0]
        reading_id = store.read(
            lambda db: db.execute("SELECT id FROM readings WHERE seq = ?", [seq]).fetchone()[0]
        )
        heard: list[CommitNote] = []
        store.add_commit_listener(heard.append)
        opened = actions.open_encounter(path, "PATIENT-1", None, writer=store)
        assert opened.ok
        before = len(heard)
        assigned = actions.assign(path, [reading_id], writer=store)
        assert assigned.ok and assigned.count == 1
        assert len(heard) > before and heard[-1].readings >= 1, "assign woke nobody"
        before = len(heard)
        assert actions.close_encounter(path, writer=store).ok
        assert len(heard) > before, "close woke nobody"
        refused = actions.close_encounter(path, writer=store)  # nobody open: nothing queued
        assert not refused.ok and len(heard) == before + 1
