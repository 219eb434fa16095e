"""What the store gives up, by class, when the disk is full. Never an unsent reading.

Stages, tried one at a time until the held readings fit again:

1. ``acked-raw``: the raw device bytes (``readings.raw``) of readings central has
   acknowledged (``sent_at`` set); the decoded reading stays.
2. ``old-rejects``: rejected frames except the newest ``keep``;
3. ``old-events``: events except the newest ``keep``.

What was removed is counted in ``agent_state`` key ``retention`` (cumulative), so the unit can
say how many frames and events it gave up. Freed pages are reused by SQLite for new rows
(the store is not ``auto_vacuum``; an ``incremental_vacuum`` would only give the space back to
the filesystem, which new readings do not need).
"""

from __future__ import annotations

import json
from typing import Any

STAGES = ("acked-raw", "old-rejects", "old-events")
KEEP = 1000


def free_stage(db: Any, stage: str, keep: int = KEEP) -> int:
    """Run one stage inside the caller's transaction; return the rows it changed."""
    if stage == "acked-raw":
        sql = "UPDATE readings SET raw = NULL WHERE sent_at IS NOT NULL AND raw IS NOT NULL"
        args: list[Any] = []
    elif stage in ("old-rejects", "old-events"):
        table = stage.removeprefix("old-")
        sql = (
            f"DELETE FROM {table} WHERE id <= "
            f"(SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)"
        )
        args = [keep]
    else:
        raise ValueError(f"unknown retention stage {stage!r}")
    changed = int(db.execute(sql, args).rowcount)
    if changed:
        row = db.execute("SELECT value FROM agent_state WHERE key = 'retention'").fetchone()
        counts: dict[str, int] = json.loads(row[0]) if row else {}
        counts[stage] = counts.get(stage, 0) + changed
        db.execute(
            "INSERT INTO agent_state (key, value, updated_at) VALUES ('retention', ?, "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT(key) DO UPDATE SET "
            "value = excluded.value, updated_at = excluded.updated_at",
            [json.dumps(counts)],
        )
    return changed
