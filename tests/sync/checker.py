"""The end-of-test check every sync fault test runs: central holds every reading exactly once,
sequence numbers contiguous within the store's epoch, nothing refused or dead-lettered, and the
unit marked sent exactly what central holds."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sync.link import LinkEvent, LinkOptions, MqttLink


def assert_exactly_once(unit_db: Path, central_db: Path, unit: str = "mmu-t") -> int:
    with sqlite3.connect(unit_db) as u, sqlite3.connect(central_db) as c:
        unit_rows = dict(u.execute("SELECT id, seq FROM readings"))
        unsent = u.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0]
        central = c.execute("SELECT id, seq FROM observations WHERE unit = ?", [unit]).fetchall()
        # One unit store is one epoch: its sequence numbers count within it.
        epochs = c.execute(
            "SELECT epoch, last_contiguous_seq FROM epochs WHERE unit = ?", [unit]
        ).fetchall()
        sequences = c.execute("SELECT seq FROM sequences WHERE unit = ?", [unit]).fetchall()
        conflicts = c.execute("SELECT count(*) FROM conflicts WHERE unit = ?", [unit]).fetchone()[0]
        # A batch parked for a human (a payload that is not a batch is the test's own forgery).
        dead = c.execute(
            "SELECT count(*) FROM dead_letters WHERE unit = ? AND batch_id IS NOT NULL", [unit]
        ).fetchone()[0]
    ids = [i for i, _ in central]
    assert len(ids) == len(set(ids)), "a reading is stored twice at central"
    assert dict(central) == unit_rows, "central and unit disagree (lost or unexpected readings)"
    seqs = sorted(s for _, s in central)
    assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers are not contiguous"
    assert sorted(s for (s,) in sequences) == seqs, "the sequence record disagrees"
    assert unsent == 0, "readings central holds are not marked sent"
    assert (conflicts, dead) == (0, 0), "central refused or dead-lettered readings"
    assert len(epochs) == 1 and epochs[0][1] == len(seqs)
    return len(seqs)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition on real components (a store, a file) with a bounded deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def watching(
    port: int, *topics: str, name: str = "watcher"
) -> AsyncIterator[tuple[MqttLink, asyncio.Queue[LinkEvent]]]:
    """A central-side MQTT client subscribed to ``topics`` (to watch, or to send downlinks)."""
    link = MqttLink(LinkOptions(name, "127.0.0.1", port, clean_start=True))
    queue = link.start()
    try:
        async with asyncio.timeout(10):
            while (await queue.get()).kind != "connected":
                pass
        link.subscribe([(topic, 1) for topic in topics])
        yield link, queue
    finally:
        link.stop()
