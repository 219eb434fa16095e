"""``central``: the same drain into a SQLite central and a PostgreSQL central, in the same run.

A backlog of readings (the drain's template store, encoded once by the project's codec into
batches of the default size) is published by a plain MQTT client that keeps a window of
batches awaiting central's application ack, like a unit; one real receiver (``edge-agent
receive`` subprocess) stores and acknowledges them. The time runs from the first publish to
the last ack. The two centrals are measured in turn (SQLite, PostgreSQL, twice each): the best
round of each is kept, so a neighbour's load burst on a shared machine hurts neither.

- ``sqlite_readings_per_s``, ``postgres_readings_per_s`` and ``ratio`` (PostgreSQL / SQLite);
- ``postgres_server_cpu_s_per_100k``: the PostgreSQL server's CPU seconds (every process of the
  throwaway cluster) per 100,000 readings; ``*_receiver_cpu_s_per_100k``: the receiver's own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.settings import SyncSettings
from scripts.benchmarks.drain import ALERT_SHARE, read_chunks, template
from scripts.benchmarks.env import Bench, BenchError, Size, cpu_seconds
from sync import codec, topics
from sync.link import LinkOptions, MqttLink

ROUNDS = 2


def encode(src: Path, n: int, unit: str, batch_size: int) -> list[bytes]:
    """The store's ``n`` readings as the payloads of a new unit: its own epoch and reading
    ids (central holds readings by id: the template's ids would be held from the last round),
    batches by seq."""
    epoch = str(uuid.uuid4())
    return [
        codec.encode_batch(
            unit,
            str(uuid.uuid4()),
            [{**row, "id": str(uuid.uuid4())} for row in rows],
            utc_now(),
            epoch=epoch,
        )
        for rows in read_chunks(src, n, batch_size)
    ]


async def publish_all(
    port: int, unit: str, payloads: list[bytes], window: int, deadline_s: float
) -> float:
    """Publish ``payloads`` with at most ``window`` awaiting central's ack; seconds from the
    first publish to the last ack."""
    link = MqttLink(
        LinkOptions(f"bench-unit-{uuid.uuid4().hex[:8]}", "127.0.0.1", port, clean_start=True)
    )
    queue = link.start()
    try:
        async with asyncio.timeout(deadline_s):
            while (await queue.get()).kind != "connected":
                pass
            link.subscribe([(topics.ACK.of(unit), 1)])
            while (await queue.get()).kind != "subscribed":
                pass
            start = time.monotonic()
            sent = acked = 0
            while acked < len(payloads):
                while sent < len(payloads) and sent - acked < window:
                    link.publish(topics.READINGS.of(unit), payloads[sent])
                    sent += 1
                event = await queue.get()
                if event.kind == "message" and event.topic == topics.ACK.of(unit):
                    body = json.loads(event.payload)
                    if body.get("refused"):
                        raise BenchError(f"central refused readings: {body['refused'][:3]}")
                    acked += 1
            return time.monotonic() - start
    except TimeoutError:
        raise BenchError(
            f"central: not every batch acknowledged after {deadline_s:.0f} s"
        ) from None
    finally:
        link.stop()


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL cluster's live processes (the postmaster and children)."""
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            try:
                total += cpu_seconds(int(stat.parent.name))
            except (OSError, IndexError):
                continue
    return total


async def one_round(
    bench: Bench,
    db: Path | str,
    payloads: list[bytes],
    n: int,
    unit: str,
    window: int,
    server_cpu: Callable[[], float] | None,
) -> dict[str, float]:
    (receiver,) = await bench.receivers(db, group=f"central-{uuid.uuid4().hex[:6]}")
    try:
        receiver_before = cpu_seconds(receiver.pid)
        server_before = server_cpu() if server_cpu else 0.0
        seconds = await publish_all(bench.broker.port, unit, payloads, window, max(180.0, n / 100))
        out = {"per_s": n / seconds, "receiver_cpu": cpu_seconds(receiver.pid) - receiver_before}
        if server_cpu:  # before the receiver leaves: its backend's time goes with it
            out["server_cpu"] = server_cpu() - server_before
        return out
    finally:
        bench.stop_process(receiver)


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    from tests.postgres import PostgresMissing, cluster

    n = size.n(100_000, 500)
    defaults = SyncSettings()
    src = template(bench, n, ALERT_SHARE)
    try:
        server = cluster()
        dsn = server.__enter__()
    except PostgresMissing as exc:
        raise BenchError(str(exc)) from None
    try:
        postmaster = int(
            (Path(dsn.split("host=", 1)[1]) / "data" / "postmaster.pid").read_text().split()[0]
        )
        runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
        for i in range(ROUNDS):
            unit = bench.unit("central")  # a new unit each round: every reading is new
            payloads = await asyncio.to_thread(encode, src, n, unit, defaults.batch_size)
            runs["sqlite"].append(
                await one_round(
                    bench,
                    bench.fresh(f"central-sqlite-{i}") / "central.db",
                    payloads,
                    n,
                    unit,
                    defaults.max_in_flight,
                    None,
                )
            )
            runs["postgres"].append(
                await one_round(
                    bench,
                    dsn,
                    payloads,
                    n,
                    unit,
                    defaults.max_in_flight,
                    lambda: cluster_cpu(postmaster),
                )
            )
    finally:
        server.__exit__(None, None, None)
    best = {name: max(r, key=lambda x: x["per_s"]) for name, r in runs.items()}
    per_100k = 100_000 / n
    return {
        "readings": n,
        "batch_size": defaults.batch_size,
        "window": defaults.max_in_flight,
        "rounds": ROUNDS,
        "sqlite_readings_per_s": round(best["sqlite"]["per_s"]),
        "postgres_readings_per_s": round(best["postgres"]["per_s"]),
        "ratio": round(best["postgres"]["per_s"] / best["sqlite"]["per_s"], 2),
        "postgres_server_cpu_s_per_100k": round(best["postgres"]["server_cpu"] * per_100k, 1),
        "sqlite_receiver_cpu_s_per_100k": round(best["sqlite"]["receiver_cpu"] * per_100k, 1),
        "postgres_receiver_cpu_s_per_100k": round(best["postgres"]["receiver_cpu"] * per_100k, 1),
        "all_rounds_readings_per_s": {
            name: [round(r["per_s"]) for r in rs] for name, rs in runs.items()
        },
        "all_rounds_postgres_server_cpu_s_per_100k": [
            round(r["server_cpu"] * per_100k, 1) for r in runs["postgres"]
        ],
    }
