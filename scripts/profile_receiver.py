"""Profile the reference receiver while a unit's backlog drains through a real Mosquitto.

A stub unit publishes ``--readings`` readings in batches of ``--batch`` as fast as the broker
takes them (a harder load than a unit, which keeps a few batches in flight); the receiver
stores them into a fresh SQLite (or ``--db postgresql://...``) central store and acknowledges.
Prints readings per second from the first publish to the last ack, then where the time goes:
cProfile of the event loop thread and of the store worker thread, top functions by own time.

    python scripts/profile_receiver.py --readings 100000 --batch 100 --group 32
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sync import codec, topics
from sync.central.receiver import Receiver
from sync.central.store import CentralStore, DeadLetter, Gap, Outcome, open_central
from sync.link import LinkOptions, MqttLink
from tests.broker import MosquittoBroker
from tests.central.central_kit import rows

UNIT = "mmu-prof"


class Profiled:
    """A central store whose calls run under one cProfile (in the worker thread)."""

    def __init__(self, store: CentralStore, profile: cProfile.Profile | None) -> None:
        self.store, self.profile = store, profile
        self.transactions = 0

    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        self.transactions += 1
        if self.profile is None:
            return self.store.store_batches(batches, stored_at)
        self.profile.enable()
        try:
            return self.store.store_batches(batches, stored_at)
        finally:
            self.profile.disable()

    def dead_letter(self, letter: DeadLetter) -> None:
        self.store.dead_letter(letter)

    def gaps(self) -> list[Gap]:
        return self.store.gaps()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.store.query(sql, params)

    def close(self) -> None:
        self.store.close()


def top(profile: cProfile.Profile, n: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    return "\n".join(
        line
        for line in out.getvalue().splitlines()
        if line.strip() and "function calls" not in line
    )


async def drain(
    port: int,
    db: str,
    readings: int,
    size: int,
    group: int,
    worker: cProfile.Profile | None,
    loop: cProfile.Profile | None,
) -> dict[str, float]:
    epoch = str(uuid.uuid4())
    payloads = [
        codec.encode_batch(
            UNIT, str(uuid.uuid4()), rows(range(s, s + size)), "2026-11-23T08:00:00Z", epoch=epoch
        )
        for s in range(1, readings + 1, size)
    ]
    stores: list[Profiled] = []

    def open_store() -> CentralStore:
        store = Profiled(open_central(db), worker)
        stores.append(store)
        return store

    stop = asyncio.Event()
    receiver = Receiver(
        "127.0.0.1", port, db, client_id="rx-prof", max_group=group, open_store=open_store
    )
    task = asyncio.create_task(receiver.run(stop))
    await asyncio.wait_for(receiver.connected.wait(), 15)
    unit = MqttLink(LinkOptions("prof-unit", "127.0.0.1", port, clean_start=True))
    queue = unit.start()
    while (await queue.get()).kind != "connected":
        pass
    unit.subscribe([(topics.ACK.of(UNIT), 1)])
    while (await queue.get()).kind != "subscribed":
        pass
    if loop is not None:
        loop.enable()  # from the first publish: not the encoding above
    start = time.perf_counter()
    for payload in payloads:
        unit.publish(topics.READINGS.of(UNIT), payload)
    acked = 0
    last = 0
    while acked < len(payloads):
        event = await queue.get()
        if event.kind == "message":
            acked += 1
            last = max(last, json.loads(event.payload)["last_contiguous_seq"])
    elapsed = time.perf_counter() - start
    if loop is not None:
        loop.disable()
    stop.set()
    await task
    unit.stop()
    assert last == readings and receiver.counts.stored == readings
    return {
        "readings": readings,
        "batch": size,
        "max_group": group,
        "seconds": round(elapsed, 2),
        "readings_per_s": round(readings / elapsed),
        "transactions": sum(s.transactions for s in stores),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--group", type=int, default=32, help="Receiver max_group.")
    parser.add_argument("--db", help="Central store (default: a fresh SQLite file).")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-profile", action="store_true", help="Throughput only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp)).start()
        try:
            db = args.db or str(Path(tmp) / "central.db")
            loop_profile, worker = cProfile.Profile(), cProfile.Profile()
            profiles = (None, None) if args.no_profile else (worker, loop_profile)
            result = asyncio.run(
                drain(broker.port, db, args.readings, args.batch, args.group, *profiles)
            )
        finally:
            broker.stop()
    print(json.dumps(result))
    if not args.no_profile:
        print("\n== store worker thread (own time) ==")
        print(top(worker, args.top))
        print("\n== event loop thread (own time) ==")
        print(top(loop_profile, args.top))


if __name__ == "__main__":
    main()
