"""``history``: the unit's hot paths on a store that already holds many sent readings (a van
after months of service: 1,000,000 in the full run, 100,000 with ``--quick``; a backlog of
50,000, 15,811 with ``--quick``), each beside
the same measure on a store without history, same run, same backlog:

- ``ack_ms_history`` / ``ack_ms_empty``: one central ack (``outbox.mark_acked`` of a batch
  as the outbox forms them, up to 500 readings, timed inside the store's writer, commit apart),
  median of :data:`ACKS` acks;
- ``history_readings_per_s`` / ``empty_readings_per_s``: the real SyncDaemon draining the same
  backlog to a real Mosquitto and the real receiver (target: within 10 %), alternated
  :data:`ROUNDS` times, the faster of each kept;
- ``cpu_us_per_reading``: this process's CPU time (the agent: event loop, store writer and
  readers, paho) per drained reading, on the store with history (target: <= 60 us);
- ``ceiling_readings_per_s``: the same drain (store with history) against a central that acks
  at once without storing (``scripts/benchmarks/ack_only.py``): what the agent alone can do.

Each measured drain has a broker and a central of its own (a central store slows as it grows).
"""

from __future__ import annotations

import functools
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.store.writer import Store
from scripts.benchmarks.drain import ALERT_SHARE, Drained, agent_drain, copy_store, template
from scripts.benchmarks.env import (
    Bench,
    BenchError,
    Size,
    fill_store,
    make_readings,
    until,
)
from sync import outbox
from tests.broker import MosquittoBroker

ACKS = 15  # acks timed per store (fewer when the backlog is smaller than ACKS batches)
HISTORY_BATCH = 500  # readings per acknowledged batch of the history
ROUNDS = 2  # drains of each store, alternated
SEED = 4  # readings stored through the real store; the history repeats them


def history_template(bench: Bench, history: int, n: int) -> Path:
    """A closed store holding ``history`` readings central acknowledged long ago (in acked
    batches of :data:`HISTORY_BATCH`), then ``n`` unsent ones (as :func:`drain.template`)."""
    path = bench.fresh(f"history-{history}-{n}") / "unit.db"
    fill_store(path, "bench-template", make_readings(SEED, 0.0))
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("CREATE TEMP TABLE seed AS SELECT * FROM readings")
            conn.execute(
                "WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                "INSERT INTO readings (id, unit_id, device_id, quantity, value, unit, loinc, "
                "mdc, device_time, received_at, clock_source, flags, absent_reason, context, "
                "raw, priority, batch_id, sent_at) "
                "SELECT 'history-' || i, s.unit_id, s.device_id, s.quantity, s.value, s.unit, "
                "s.loinc, s.mdc, s.device_time, s.received_at, s.clock_source, s.flags, "
                "s.absent_reason, s.context, s.raw, 0, 'history-' || (i / ?), s.received_at "
                "FROM c JOIN seed s ON s.seq = 1 + i % ?",
                [SEED + 1, history, HISTORY_BATCH, SEED],
            )
            conn.execute(
                "UPDATE readings SET sent_at = received_at, batch_id = 'history-0' WHERE seq <= ?",
                [SEED],
            )
            conn.execute(
                "INSERT INTO batches (batch_id, seq_from, seq_to, count, created_at, attempts, "
                "acked_at) SELECT batch_id, min(seq), max(seq), count(*), min(received_at), 1, "
                "min(sent_at) FROM readings GROUP BY batch_id"
            )
    finally:
        conn.close()
    fill_store(path, "bench-template", make_readings(n, ALERT_SHARE))
    return path


def ack_ms(bench: Bench, src: Path, acks: int = ACKS) -> float:
    """Median milliseconds of one ``mark_acked`` of a full batch, inside the writer."""
    path = copy_store(src, bench.fresh("acks"))
    times: list[float] = []

    def timed(db: Any, batch_id: str) -> None:
        start = time.perf_counter()
        outbox.mark_acked(db, batch_id)
        times.append(time.perf_counter() - start)

    with Store(path, "bench-acks") as store:
        for i in range(acks):
            rows = store.read(functools.partial(outbox.next_batch, limit=500))
            if not rows:
                break
            batch_id = f"bench-ack-{i}"
            store.call(
                functools.partial(
                    outbox.record_batch, batch_id=batch_id, seqs=[int(r["seq"]) for r in rows]
                )
            )
            store.call(functools.partial(timed, batch_id=batch_id))
    if not times:
        raise BenchError("ack cost: no backlog to acknowledge")
    return statistics.median(times) * 1000


async def ack_only_central(bench: Bench, broker: MosquittoBroker) -> Any:
    """Start :mod:`scripts.benchmarks.ack_only` on ``broker``; return once subscribed."""
    cid = bench.unit("ack-only")
    proc = bench.spawn(
        [
            sys.executable,
            "-m",
            "scripts.benchmarks.ack_only",
            "--port",
            str(broker.port),
            "--client-id",
            cid,
        ],
        bench.fresh("ack-only") / "ack-only.log",
    )
    marker = f" {cid} 1 mmu/v1/+/up/readings"

    def subscribed() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"ack-only central exited with {proc.returncode}")
        return marker in broker.log.read_text(errors="replace")

    await until(subscribed, 60, "ack-only central subscription", every=0.1)
    return proc


async def own_central_drain(bench: Bench, src: Path, n: int, central: str) -> Drained:
    """:func:`agent_drain` of ``src`` on a new broker, to a new ``central``: the real
    receiver into a new central store, or the ack-only central."""
    broker = MosquittoBroker(
        bench.fresh(f"mosquitto-{central}"), extra_config="log_type subscribe\n"
    ).start()
    try:
        if central == "receiver":
            procs = await bench.receivers(bench.fresh("central") / "central.db", broker=broker)
        else:
            procs = [await ack_only_central(bench, broker)]
        try:
            return await agent_drain(bench, src, n, port=broker.port)
        finally:
            for proc in procs:
                bench.stop_process(proc)
    finally:
        broker.stop()


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    history = size.n(1_000_000, 1_000)
    n = max(500, round(50_000 * size.scale**0.5))  # --quick: 15,811 (a drain of seconds)
    warm_up = size.n(1_000, 200)  # readings drained before measuring (imports, caches)
    empty_src = template(bench, n, ALERT_SHARE)
    history_src = history_template(bench, history, n)
    ack_empty, ack_history = ack_ms(bench, empty_src), ack_ms(bench, history_src)
    await bench.receivers(bench.fresh("central") / "central.db")
    await agent_drain(bench, template(bench, warm_up, 0.0), warm_up)
    # Each drain on a broker of its own, behind a central of its own: a fresh receiver and
    # central store for each (a central store slows as it grows), the ack-only central alone.
    # Alternated, twice each; the faster of each pair counts (other work on the machine).
    empties, fulls = [], []
    for _ in range(ROUNDS):
        empties.append(await own_central_drain(bench, empty_src, n, "receiver"))
        fulls.append(await own_central_drain(bench, history_src, n, "receiver"))
    empty = max(empties, key=lambda d: d.per_s)
    full = max(fulls, key=lambda d: d.per_s)
    ceiling = await own_central_drain(bench, history_src, n, "ack-only")
    return {
        "history_readings": history,
        "readings": n,
        "ack_ms_empty": round(ack_empty, 3),
        "ack_ms_history": round(ack_history, 3),
        "ratio_ack": round(ack_history / ack_empty, 2),
        "empty_readings_per_s": round(empty.per_s),
        "history_readings_per_s": round(full.per_s),
        "ratio_history": round(full.per_s / empty.per_s, 3),
        "cpu_us_per_reading": round(full.cpu_us_per_reading, 1),
        "empty_cpu_us_per_reading": round(empty.cpu_us_per_reading, 1),
        "cpu_us_per_reading_by_thread": {  # /proc tick resolution: 10 ms per thread
            k: round(v / n * 1e6, 1) for k, v in sorted(full.threads.items()) if v > 0
        },
        "ceiling_readings_per_s": round(ceiling.per_s),
        "ratio_ceiling": round(ceiling.per_s / full.per_s, 2),
        "ceiling_cpu_us_per_reading": round(ceiling.cpu_us_per_reading, 1),
    }
