"""``ingest``: readings/s accepted through the real store path (the drivers' StoreSink ->
Store.append, each reading's future resolved = committed with synchronous=FULL) by 1 and by 5
concurrent producers, beside raw sqlite3 on the same kind of file (a fresh store's own
``readings`` table, WAL + synchronous=FULL): ``executemany`` in one transaction, and one
transaction per reading from 5 threads. And the cost of encryption at rest: the same store
path, 5 producers, on a SQLCipher store (a raw 256-bit key: no KDF) beside the plain one,
measured in the same run."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.models import Measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store import connect as store_connect
from edge_agent.store.key import StoreKey
from edge_agent.store.writer import Store
from scripts.benchmarks.env import Bench, BenchError, Size, bounded, make_readings

PRODUCERS = 5


async def store_path_rate(
    folder: Path, producers: int, n: int, seconds: float, *, encrypted: bool = False
) -> float:
    """``producers`` tasks each storing one reading at a time through the sink (as a driver
    does: it waits for the commit), until ``n`` readings or ``seconds``; readings/s.
    ``encrypted``: the store is a SQLCipher one."""
    readings = make_readings(n, 0.0)
    path = folder / "unit.db"
    if encrypted:
        store_connect.use_key(path, StoreKey(os.urandom(32), "bench"))
    try:
        return await _rate(path, readings, producers, seconds)
    finally:
        store_connect.forget(path)


async def _rate(path: Path, readings: list[Measurement], producers: int, seconds: float) -> float:
    with Store(path, "bench-ingest") as store:
        sink = StoreSink(store)
        accepted = 0
        start = time.monotonic()

        async def produce(k: int) -> None:
            nonlocal accepted
            for m in readings[k::producers]:
                if time.monotonic() - start > seconds:
                    return
                await sink.store(f"dev-{k}", [m], [])
                accepted += 1

        await bounded(
            asyncio.gather(*(produce(k) for k in range(producers))),
            seconds + 60,
            "ingest producers",
        )
        elapsed = time.monotonic() - start
        if store.stats()["readings_total"] != accepted:
            raise BenchError("ingest: the store holds another count than was accepted")
    return accepted / elapsed


def _rows(n: int) -> list[dict[str, Any]]:
    at = utc_now()
    return [
        {
            "id": str(uuid.uuid4()),
            "unit_id": "bench-raw",
            "device_id": "dev-0",
            "quantity": m.quantity,
            "value": m.value,
            "unit": m.unit,
            "loinc": m.loinc,
            "mdc": m.mdc,
            "received_at": at,
            "clock_source": "system",
            "flags": "[]",
            "context": "[]",
            "raw": m.raw,
        }
        for m in make_readings(n, 0.0)
    ]


def _raw_db(folder: Path) -> Path:
    """A fresh store file (the real schema and indexes), closed: raw sqlite3 writes into it."""
    path = folder / "raw.db"
    Store(path, "bench-raw").close()
    return path


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _insert_sql(row: dict[str, Any]) -> str:
    return f"INSERT INTO readings ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"


def raw_executemany_rate(folder: Path, n: int) -> float:
    path = _raw_db(folder)
    rows = _rows(n)
    conn = _connect(path)
    try:
        start = time.monotonic()
        conn.execute("BEGIN")
        conn.executemany(_insert_sql(rows[0]), rows)
        conn.execute("COMMIT")
        return n / (time.monotonic() - start)
    finally:
        conn.close()


def raw_per_reading_rate(folder: Path, threads: int, n: int, seconds: float) -> float:
    """``threads`` threads, each its own connection, one committed transaction per reading."""
    path = _raw_db(folder)
    rows = _rows(n)
    sql = _insert_sql(rows[0])
    done = [0] * threads
    start = time.monotonic()

    def work(k: int) -> None:
        conn = _connect(path)
        try:
            for row in rows[k::threads]:
                if time.monotonic() - start > seconds:
                    return
                conn.execute(sql, row)  # autocommit: one transaction, one fsync
                done[k] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 60)
    return sum(done) / (time.monotonic() - start)


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    n = size.n(20_000, 100)
    seconds = size.s(10.0, 0.5)
    one = await store_path_rate(bench.fresh("ingest-1"), 1, n, seconds)
    five = await store_path_rate(bench.fresh("ingest-5"), PRODUCERS, n, seconds)
    crypt = await store_path_rate(
        bench.fresh("ingest-5-sqlcipher"), PRODUCERS, n, seconds, encrypted=True
    )
    raw = await asyncio.to_thread(raw_executemany_rate, bench.fresh("raw"), n)
    per_txn = await asyncio.to_thread(
        raw_per_reading_rate, bench.fresh("raw-txn"), PRODUCERS, n, seconds
    )
    return {
        "producers": PRODUCERS,
        "one_producer_per_s": round(one),
        "readings_per_s": round(five),
        "raw_executemany_per_s": round(raw),
        "raw_txn_per_reading_per_s": round(per_txn),
        "ratio_raw": round(five / raw, 4),
        "ratio_txn_per_reading": round(five / per_txn, 2),
        "encrypted_readings_per_s": round(crypt),
        "ratio_encrypted": round(crypt / five, 3),
    }
