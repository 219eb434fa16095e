"""``drain``: a backlog of readings leaves the store through the real SyncDaemon to a real
Mosquitto and the real receiver, until central has acknowledged all of it (store backlog 0);
beside two baselines on the same broker and the same rows: a naive paho loop (one JSON
Observation per message, QoS 1, wait for each PUBACK) and a tight batched loop (the project's
codec, the configured batch size, a window of in-flight messages, PUBACKs only)."""

from __future__ import annotations

import asyncio
import cProfile
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_agent.clock import utc_now
from edge_agent.settings import SyncSettings
from edge_agent.store.writer import Store
from scripts.benchmarks.env import (
    Bench,
    BenchError,
    Size,
    bounded,
    fill_store,
    make_readings,
    settings_for,
    thread_cpu,
    until,
)
from sync import codec, outbox
from sync.daemon import SyncDaemon

ALERT_SHARE = 0.03
BASELINE_TOPIC = "bench/baseline/up/readings"  # nobody subscribes: the broker only PUBACKs


@dataclass(frozen=True)
class Drained:
    readings: int
    seconds: float
    cpu_s: float = 0.0  # this process's CPU time meanwhile (the agent: every thread of it)
    threads: dict[str, float] = field(default_factory=dict)  # CPU seconds by thread

    @property
    def per_s(self) -> float:
        return self.readings / self.seconds

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu_s / self.readings * 1e6


EPOCH = str(uuid.uuid4())  # the baseline loop's own store identity


def template(bench: Bench, n: int, alert_share: float) -> Path:
    """A closed store holding ``n`` unsent readings, copied for each run that drains it."""
    path = bench.fresh(f"template-{n}-{alert_share}") / "unit.db"
    fill_store(path, "bench-template", make_readings(n, alert_share))
    return path


def copy_store(src: Path, folder: Path) -> Path:
    dst = folder / "unit.db"
    shutil.copyfile(src, dst)  # closed cleanly: the WAL was checkpointed into the file
    return dst


async def agent_drain(
    bench: Bench,
    src: Path,
    n: int,
    *,
    port: int | None = None,
    deadline_s: float | None = None,
    profilers: tuple[cProfile.Profile, cProfile.Profile] | None = None,
) -> Drained:
    """Copy ``src`` (``n`` unsent readings), run the real SyncDaemon until central has
    acknowledged all ``n``; a receiver must be running on the broker. ``profilers``: (event
    loop thread, store writer thread) are enabled for the drain only."""
    folder = bench.fresh("drain")
    path = copy_store(src, folder)
    unit = bench.unit("drain")
    settings = settings_for(unit, path, port or bench.broker.port)
    stop = asyncio.Event()
    with Store(path, unit) as store:
        daemon = SyncDaemon(store, settings)
        if profilers is not None:  # enabled inside the writer thread: profiles are per thread
            writer_profile = profilers[1]
            store.call(lambda db: writer_profile.enable())
            profilers[0].enable()
        start, cpu, threads = time.monotonic(), time.process_time(), thread_cpu()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await until(
                lambda: task.done() or int(daemon.status()["acked_readings"]) >= n,
                deadline_s or max(180.0, n / 100),
                f"drain of {n} readings",
            )
            seconds, cpu = time.monotonic() - start, time.process_time() - cpu
            threads = {k: v - threads.get(k, 0.0) for k, v in thread_cpu().items()}
        finally:
            if profilers is not None:
                profilers[0].disable()
                store.call(lambda db: profilers[1].disable())
            stop.set()
            await bounded(task, 60, "sync daemon stop")
        if task.done() and task.exception() is not None:
            raise BenchError(f"sync daemon failed: {task.exception()}")
        pending = store.stats()["readings_pending_sync"]
    if pending:
        raise BenchError(f"drain: {pending} readings still unacknowledged")
    return Drained(n, seconds, cpu, threads)


def read_chunks(src: Path, n: int, size: int) -> Iterator[list[dict[str, Any]]]:
    """The store's unsent rows by seq, ``size`` at a time (plain sqlite3, read-only)."""
    conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        last, taken = 0, 0
        while taken < n:
            rows = outbox.readings(
                Database(conn), "seq > ? ORDER BY seq LIMIT ?", [last, min(size, n - taken)]
            )
            if not rows:
                return
            last, taken = rows[-1]["seq"], taken + len(rows)
            yield rows
    finally:
        conn.close()


class _Client:
    """A bare paho MQTT 5 client for the baselines (paho imported here only)."""

    def __init__(self, port: int, window: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.connected = threading.Event()
        self.window = threading.Semaphore(window)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_publish = lambda *a: self.window.release()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(30):
            self.close()
            raise BenchError("baseline client did not connect")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def naive_publish(src: Path, n: int, port: int, unit: str, seconds: float) -> Drained:
    """One JSON Observation per message, QoS 1, each PUBACK awaited before the next; stops
    after ``seconds`` (the rate is what it measures)."""
    client = _Client(port, window=1)
    sent = 0
    start = time.monotonic()
    try:
        for rows in read_chunks(src, n, 200):
            for row in rows:
                payload = json.dumps(codec.observation(unit, row)).encode()
                client.window.acquire()
                client.client.publish(BASELINE_TOPIC, payload, qos=1)
                if not client.window.acquire(timeout=30):
                    raise BenchError("naive baseline: no PUBACK in 30 s")
                client.window.release()
                sent += 1
            if time.monotonic() - start > seconds:
                break
        return Drained(sent, time.monotonic() - start)
    finally:
        client.close()


def batched_publish(
    src: Path, n: int, port: int, unit: str, batch_size: int, window: int, seconds: float
) -> Drained:
    """The project's codec in batches of ``batch_size``, QoS 1, up to ``window`` messages
    awaiting PUBACK (the daemon's max_in_flight), the daemon's MQTT properties."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = _Client(port, window=window)
    sent = 0
    start = time.monotonic()
    try:
        for rows in read_chunks(src, n, batch_size):
            batch_id = str(uuid.uuid4())
            payload = codec.encode_batch(unit, batch_id, rows, utc_now(), epoch=EPOCH)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = codec.CONTENT_TYPE
            props.UserProperty = [
                ("schema", codec.SCHEMA),
                ("encoding", codec.ENCODING),
                ("batch_id", batch_id),
                ("seq_from", str(rows[0]["seq"])),
                ("seq_to", str(rows[-1]["seq"])),
            ]
            if not client.window.acquire(timeout=30):
                raise BenchError("batched baseline: no PUBACK in 30 s")
            client.client.publish(BASELINE_TOPIC, payload, qos=1, properties=props)
            sent += len(rows)
            if time.monotonic() - start > seconds:
                break
        for _ in range(window):  # every PUBACK in
            if not client.window.acquire(timeout=30):
                raise BenchError("batched baseline: no PUBACK in 30 s")
        return Drained(sent, time.monotonic() - start)
    finally:
        client.close()


STOP_AND_WAIT_ALERTS = 0.10  # issue 19 item 2: a drain with ~10 % alerts


def stop_and_wait(
    src: Path, folder: Path, n: int, port: int, unit: str, batch_size: int
) -> Drained:
    """The loop the agent's drain is held against: the project's codec and batch size, one
    batch at a time to the real receiver, wait for central's ack, then mark its readings sent
    in (a copy of) the store, one transaction per batch, before the next; alerts get no
    special treatment. It counts only what central acknowledged."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from sync import topics
    from sync.acks import parse_acks

    path = copy_store(src, folder)
    acked: set[str] = set()
    arrived = threading.Condition()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with arrived:
            acked.update(a.batch_id for a in parse_acks(msg.payload))
            arrived.notify_all()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-saw-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if not connected.wait(30):
            raise BenchError("stop-and-wait baseline did not connect")
        client.subscribe(topics.ACK.of(unit), qos=1)
        time.sleep(0.5)  # the SUBACK (not timed)
        sent = 0
        start = time.monotonic()
        for rows in read_chunks(src, n, batch_size):
            batch_id = str(uuid.uuid4())
            payload = codec.encode_batch(unit, batch_id, rows, utc_now(), epoch=EPOCH)
            client.publish(topics.READINGS.of(unit), payload, qos=1)
            with arrived:
                if not arrived.wait_for(lambda b=batch_id: b in acked, 60):  # type: ignore[misc]
                    raise BenchError("stop-and-wait baseline: no ack in 60 s")
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE readings SET sent_at = ? WHERE seq BETWEEN ? AND ?",
                [utc_now(), rows[0]["seq"], rows[-1]["seq"]],
            )
            db.execute("COMMIT")
            sent += len(rows)
        return Drained(sent, time.monotonic() - start)
    finally:
        db.close()
        client.disconnect()
        client.loop_stop()


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    n = size.n(100_000, 200)
    small = size.n(10_000, 100)
    bound = size.s(60.0, 2.0)  # the baselines stop after this many seconds
    defaults = SyncSettings()
    with_alerts = template(bench, n, ALERT_SHARE)
    no_alerts = template(bench, n, 0.0)
    small_src = template(bench, small, ALERT_SHARE)
    await bench.receivers(bench.fresh("central") / "central.db")
    port = bench.broker.port
    agent = await agent_drain(bench, with_alerts, n)
    quiet = await agent_drain(bench, no_alerts, n)
    little = await agent_drain(bench, small_src, small)
    naive = await asyncio.to_thread(naive_publish, with_alerts, n, port, "bench-naive", bound)
    batched = await asyncio.to_thread(
        batched_publish,
        with_alerts,
        n,
        port,
        "bench-batched",
        defaults.batch_size,
        defaults.max_in_flight,
        bound,
    )
    tenth = template(bench, n, STOP_AND_WAIT_ALERTS)
    agent_tenth = await agent_drain(bench, tenth, n)
    saw = await asyncio.to_thread(
        stop_and_wait, tenth, bench.fresh("saw"), n, port, bench.unit("saw"), defaults.batch_size
    )
    return {
        "readings": n,
        "alert_share": ALERT_SHARE,
        "batch_size": defaults.batch_size,
        "max_in_flight": defaults.max_in_flight,
        "seconds": round(agent.seconds, 2),
        "readings_per_s": round(agent.per_s),
        "naive_readings_per_s": round(naive.per_s),
        "naive_readings": naive.readings,
        "batched_readings_per_s": round(batched.per_s),
        "batched_readings": batched.readings,
        "ratio_naive": round(agent.per_s / naive.per_s, 2),
        "ratio_batched": round(agent.per_s / batched.per_s, 3),
        "no_alerts_readings_per_s": round(quiet.per_s),
        "alerts_cost": round(quiet.per_s / agent.per_s - 1, 3),
        "small_readings": small,
        "drain_10k_readings_per_s": round(little.per_s),
        "drain_10k_ratio": round(little.per_s / agent.per_s, 2),
        "alerts_10pct_readings_per_s": round(agent_tenth.per_s),
        "stop_and_wait_readings_per_s": round(saw.per_s),
        "ratio_stop_and_wait": round(agent_tenth.per_s / saw.per_s, 3),
    }
