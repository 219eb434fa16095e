"""Watched folders: a file is taken only once complete, and moved out only once durable."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.files.attachments import AttachmentStore
from edge_agent.files.drop_folder import StableTracker, taken_dir, watch
from edge_agent.settings import WatchFolderSettings
from edge_agent.store.writer import Store
from tests.sync.checker import wait_until

UNIT = "mmu-t"


def held(store: Store) -> dict[str, tuple[str, int]]:
    return {
        str(r[0]): (str(r[1]), int(r[2]))
        for r in store.read(
            lambda db: db.execute("SELECT name, file_id, size FROM attachments").fetchall()
        )
    }


async def test_a_file_still_being_written_is_taken_only_when_complete(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg = WatchFolderSettings(device="ecg-1", path=drop, settle_s=0.4, poll_s=0.05)
    slow_part = os.urandom(64 * 1024)
    stop = asyncio.Event()
    with Store(tmp_path / "unit" / "unit.db", UNIT) as store:
        files = AttachmentStore(store)
        task = asyncio.create_task(watch(files, cfg, stop))
        with (drop / "ecg-slow.pdf").open("wb") as slow:
            slow.write(b"%PDF-1.4\n")
            slow.flush()
            # Meanwhile another device drops a complete file: it is taken...
            quick = b"%PDF-1.4\n" + os.urandom(10_000)
            (drop / "spiro.pdf").write_bytes(quick)
            for i in range(8):  # ...while this one is still written (pauses < settle_s)
                await asyncio.sleep(0.15)
                slow.write(slow_part[i * 8192 : (i + 1) * 8192])
                slow.flush()
                if i == 5:
                    assert "spiro.pdf" in held(store)
                    assert "ecg-slow.pdf" not in held(store)  # ...but not this one
                    assert (drop / "ecg-slow.pdf").exists()
        await wait_until(lambda: "ecg-slow.pdf" in held(store), 10, "the slow file taken")
        stop.set()
        await task
        names = held(store)
    whole = b"%PDF-1.4\n" + slow_part
    assert names["ecg-slow.pdf"] == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert sorted(os.listdir(drop)) == []  # moved out once durable
    assert sorted(os.listdir(taken_dir(drop))) == ["ecg-slow.pdf", "spiro.pdf"]
    stored = tmp_path / "unit" / "attachments"
    file_id = names["ecg-slow.pdf"][0]
    assert (stored / file_id[:2] / file_id).read_bytes() == whole
    assert (stored / file_id[:2] / file_id).stat().st_mode & 0o777 == 0o600


def test_partial_names_and_hidden_files_are_never_candidates() -> None:
    from edge_agent.files.drop_folder import candidate

    assert [
        n for n in ["a.pdf", ".a.pdf", "b.jpg.part", "c.crdownload", "d~", "e.TMP"] if candidate(n)
    ] == ["a.pdf"]


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1)), min_size=1, max_size=30))
def test_tracker_takes_a_file_only_after_it_stayed_the_same_for_settle_s(
    steps: list[tuple[int, float]],
) -> None:
    tracker = StableTracker(settle_s=1.0)
    now, size, state_since = 0.0, 0, 0.0
    for index, (grow, dt) in enumerate(steps):
        now += dt
        if grow or index == 0:  # first seen, or still being written
            size += grow
            state_since = now
        ready = tracker.observe({"f": (size, size)}, now)
        assert ready == (["f"] if now - state_since >= 1.0 else [])
