"""The receiver on a real Mosquitto (and PostgreSQL where it matters): a unit starting over
with a new store keeps all its readings (issue 13); a poison message is parked and the next
served; a transient database error is retried, never parked; commit, then ack, then PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from sync import codec, topics
from sync.central.receiver import Receiver
from sync.central.store import CentralStore, Outcome, SqliteCentral
from sync.link import LinkOptions, MqttLink
from tests.broker import MosquittoBroker
from tests.central.central_kit import rows, store_rows, stub_unit

UNIT = "mmu-r"


@contextlib.asynccontextmanager
async def running(receiver: Receiver) -> AsyncIterator[Receiver]:
    stop = asyncio.Event()
    task = asyncio.create_task(receiver.run(stop))
    try:
        async with asyncio.timeout(15):
            await asyncio.wait(
                {task, asyncio.ensure_future(receiver.connected.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
        if task.done():
            task.result()  # raise what stopped it
        yield receiver
    finally:
        stop.set()
        await task


async def test_two_stores_of_one_unit_are_both_held(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Issue 13, end to end: seq 1..N of a second store (same unit id) were dropped and acked."""
    n = 40
    stores = [store_rows(tmp_path / f"store-{i}.db", UNIT, n) for i in (1, 2)]
    epochs = [str(uuid.uuid4()), str(uuid.uuid4())]
    central = tmp_path / "central.db"
    rx = Receiver("127.0.0.1", mosquitto.port, central, client_id="rx")
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        for epoch, readings in zip(epochs, stores, strict=True):
            for start in range(0, n, 10):
                before = time.time()
                batch_id = unit.send(epoch, readings[start : start + 10], sent_at=before)
                ack = await unit.ack_for(batch_id)
                assert ack == {
                    "batch_id": batch_id,
                    "epoch": epoch,
                    "stored": 10,
                    "refused": [],
                    "last_contiguous_seq": start + 10,
                    "t_origin": before,
                    "t_recv": ack["t_recv"],
                    "t_send": ack["t_send"],
                    "central_time": ack["t_send"],
                }
                assert before <= ack["t_recv"] <= ack["t_send"] <= time.time()
    with contextlib.closing(sqlite3.connect(central)) as c:
        held = dict(c.execute("SELECT id, epoch FROM observations WHERE unit = ?", [UNIT]))
        last = dict(c.execute("SELECT epoch, last_contiguous_seq FROM epochs"))
    assert held == {r["id"]: e for e, rs in zip(epochs, stores, strict=True) for r in rs}
    assert len(held) == 2 * n and last == {epochs[0]: n, epochs[1]: n}
    assert rx.counts.stored == 2 * n and rx.counts.refused == 0


async def test_a_conflict_is_refused_in_the_ack(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    epoch = str(uuid.uuid4())
    rx = Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx")
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        await unit.ack_for(unit.send(epoch, rows(range(1, 3), "a")))
        ack = await unit.ack_for(unit.send(epoch, rows(range(2, 4), "b")))
    assert (ack["stored"], ack["refused"], ack["last_contiguous_seq"]) == (
        1,
        [{"id": "b2", "seq": 2, "reason": "seq-conflict"}],
        3,
    )
    assert rx.counts.refused == 1


def nul_batch(epoch: str) -> bytes:
    """Decodes fine; PostgreSQL refuses it (text cannot hold NUL) every time."""
    poison = rows(range(1, 3))
    poison[1]["id"] = "r\x00"
    return codec.encode_batch(UNIT, "poison", poison, "2026-11-23T08:00:00Z", epoch=epoch)


async def test_a_poison_message_is_parked_refused_and_pubacked(
    mosquitto: MosquittoBroker, postgres: str
) -> None:
    epoch = str(uuid.uuid4())
    async with stub_unit(mosquitto.port, UNIT) as unit:
        rx = Receiver("127.0.0.1", mosquitto.port, postgres, client_id="rx-pg")
        async with running(rx):
            payload = nul_batch(epoch)
            unit.send(epoch, [], batch_id="poison", payload=payload)
            good = unit.send(epoch, rows(range(1, 4)))
            refused = await unit.ack_for("poison")
            assert (await unit.ack_for(good))["stored"] == 3  # the next message is served
        # The server's own DataError (SQLSTATE 22021): ids travel as one binary array.
        assert (
            refused["stored"] == 0
            and [r["reason"] for r in refused["refused"]]
            == ["central-store-error: CharacterNotInRepertoire"] * 2
        )
        assert (rx.counts.store_errors, rx.counts.dead_letters, rx.counts.batches) == (1, 1, 1)
        with psycopg.connect(postgres) as conn:
            parked = conn.execute(
                "SELECT topic, unit, epoch, batch_id, payload, reason FROM dead_letters"
            ).fetchall()
        assert [p[:5] for p in parked] == [
            (topics.READINGS.of(UNIT), UNIT, epoch, "poison", payload)
        ]
        assert parked[0][5].startswith("central-store-error: CharacterNotInRepertoire: ")
        # the unit is told, with the class only (the message may quote the data)
        assert [(d["batch_id"], d["epoch"], d["reason"]) for d in unit.dead_letters] == [
            ("poison", epoch, "central-store-error: CharacterNotInRepertoire")
        ]
        # PUBACKed: the same session, restarted, gets the next message and not the poison again.
        async with running(Receiver("127.0.0.1", mosquitto.port, postgres, client_id="rx-pg")):
            after = unit.send(epoch, rows(range(4, 5)))
            await unit.ack_for(after)
        assert len(unit.acks["poison"]) == 1


async def test_a_lost_database_connection_is_retried_not_parked(
    mosquitto: MosquittoBroker, postgres: str
) -> None:
    epoch = str(uuid.uuid4())
    rx = Receiver("127.0.0.1", mosquitto.port, postgres, client_id="rx-pg", retry_cap=0.5)
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        with psycopg.connect(postgres, autocommit=True) as admin:  # central's DBA restarts it
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> pg_backend_pid()"
            )
        ack = await unit.ack_for(unit.send(epoch, rows(range(1, 6))))
    assert (ack["stored"], ack["refused"]) == (5, [])
    assert rx.counts.transient_errors >= 1 and rx.counts.dead_letters == 0
    with psycopg.connect(postgres) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM observations").fetchone() == (5,)


async def test_a_full_disk_at_central_is_retried_not_parked(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    central = tmp_path / "central.db"
    opened: list[SqliteCentral] = []

    def open_store() -> CentralStore:
        store = SqliteCentral(central)
        if not opened:  # the first connection finds the disk full; space is freed later
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages}")
        opened.append(store)
        return store

    epoch = str(uuid.uuid4())
    rx = Receiver(
        "127.0.0.1", mosquitto.port, central, client_id="rx", retry_cap=0.5, open_store=open_store
    )
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        ack = await unit.ack_for(unit.send(epoch, rows(range(1, 201))))
    assert (ack["stored"], ack["refused"]) == (200, [])
    assert rx.counts.transient_errors >= 1 and len(opened) >= 2
    with contextlib.closing(sqlite3.connect(central)) as c:
        assert c.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM observations").fetchone() == (200,)


async def test_an_outage_that_outlasts_many_retries_is_still_not_a_poison_message(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """However many attempts a transient error lasts, the batch waits for the store: never
    parked, never refused to the unit (the outage is central's, not the data's)."""
    central = tmp_path / "central.db"
    outage = 12  # connections that find the disk full: more than any "few retries"
    opened: list[SqliteCentral] = []

    def open_store() -> CentralStore:
        store = SqliteCentral(central)
        if len(opened) < outage:
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages}")
        opened.append(store)
        return store

    epoch = str(uuid.uuid4())
    rx = Receiver(
        "127.0.0.1", mosquitto.port, central, client_id="rx", retry_cap=0.05, open_store=open_store
    )
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        ack = await unit.ack_for(unit.send(epoch, rows(range(1, 51))), timeout=60)
    assert (ack["stored"], ack["refused"]) == (50, [])
    assert rx.counts.transient_errors >= outage - 1 and len(opened) > outage
    assert (rx.counts.store_errors, rx.counts.dead_letters) == (0, 0)
    with contextlib.closing(sqlite3.connect(central)) as c:
        assert c.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM observations").fetchone() == (50,)


class Trace:
    """commit / ack / puback, in the order they happen, across the worker and the loop."""

    def __init__(self, central: Path) -> None:
        self.central = central
        self.events: list[tuple[str, str]] = []

    def held(self, ids: Sequence[str]) -> int:
        """Readings visible to another connection: committed, not merely written."""
        with contextlib.closing(sqlite3.connect(self.central)) as c:
            return sum(
                1
                for i in ids
                if c.execute("SELECT 1 FROM observations WHERE id = ?", [i]).fetchone()
            )


class TracedStore(SqliteCentral):
    def __init__(self, path: Path, trace: Trace) -> None:
        super().__init__(path)
        self.trace = trace

    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        outcomes = super().store_batches(batches, stored_at)
        self.trace.events += [("commit", b.batch_id) for b in batches]
        return outcomes


class TracedLink(MqttLink):
    def __init__(self, options: LinkOptions, trace: Trace, ids: dict[str, list[str]]) -> None:
        super().__init__(options)
        self.trace, self.ids = trace, ids

    def publish(self, topic: str, payload: bytes, **kwargs: Any) -> int:
        if topic.endswith("/down/ack"):
            for body in json.loads(payload).get("acks", [json.loads(payload)]):  # cumulative
                ids = self.ids[body["batch_id"]]
                assert self.trace.held(ids) == body["stored"] == len(ids), "ack before commit"
                self.trace.events.append(("ack", body["batch_id"]))
        return super().publish(topic, payload, **kwargs)

    def ack(self, mid: int, qos: int) -> None:
        self.trace.events.append(("puback", str(mid)))
        super().ack(mid, qos)


async def test_commit_then_ack_then_puback(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    central = tmp_path / "central.db"
    trace = Trace(central)
    ids: dict[str, list[str]] = {}
    epoch = str(uuid.uuid4())
    rx = Receiver(
        "127.0.0.1",
        mosquitto.port,
        central,
        client_id="rx",
        max_group=4,
        open_store=lambda: TracedStore(central, trace),
        link_factory=lambda o: TracedLink(o, trace, ids),
    )
    async with running(rx), stub_unit(mosquitto.port, UNIT) as unit:
        sent = []
        for start in range(1, 200, 10):  # queued faster than stored: groups of several
            readings = rows(range(start, start + 10))
            batch_id = str(uuid.uuid4())
            ids[batch_id] = [r["id"] for r in readings]
            unit.send(epoch, readings, batch_id=batch_id)
            sent.append(batch_id)
        for batch_id in sent:
            await unit.ack_for(batch_id)
    assert_commit_ack_puback(trace.events, sent)


def assert_commit_ack_puback(events: list[tuple[str, str]], sent: list[str]) -> None:
    for i, (kind, what) in enumerate(events):
        if kind == "ack":
            assert ("commit", what) in events[:i], f"batch {what} acked before its commit"
        if kind == "puback":
            # after its ack: one ack may cover several batches, their PUBACKs follow it
            assert i > 0 and events[i - 1][0] in ("ack", "puback"), (
                "PUBACK without the ack just before it"
            )
    acked = [what for kind, what in events if kind == "ack"]
    assert acked == sent  # in order, each once
    assert sum(kind == "puback" for kind, _ in events) == len(sent)


def test_the_order_check_catches_acks_and_pubacks_before_the_commit() -> None:
    good = [
        ("commit", "b1"),
        ("commit", "b2"),
        ("ack", "b1"),
        ("puback", "7"),
        ("ack", "b2"),
        ("puback", "8"),
    ]
    assert_commit_ack_puback(good, ["b1", "b2"])
    for bad in (
        [("ack", "b1"), ("commit", "b1"), ("puback", "7")],
        [("puback", "7"), ("commit", "b1"), ("ack", "b1")],
    ):
        try:
            assert_commit_ack_puback(bad, ["b1"])
        except AssertionError:
            continue
        raise AssertionError(f"not caught: {bad}")


async def wait_for_line(stream: asyncio.StreamReader, text: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while text not in (await stream.readline()).decode():
            pass


KILLER = """
import asyncio, os, signal, sys
from pathlib import Path
from sync.central.store import SqliteCentral
from sync.central.receiver import Receiver

class KilledAfterCommit(SqliteCentral):
    commits = 0
    def store_batches(self, batches, stored_at):
        outcomes = super().store_batches(batches, stored_at)
        KilledAfterCommit.commits += 1
        if KilledAfterCommit.commits == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # committed; no ack, no PUBACK
        return outcomes

async def main():
    db = Path(sys.argv[2])
    await Receiver("127.0.0.1", int(sys.argv[1]), db, client_id="rx-k", max_group=1,
                   open_store=lambda: KilledAfterCommit(db),
                   announce=lambda s: print(s, file=sys.stderr, flush=True)).run(asyncio.Event())

asyncio.run(main())
"""


async def test_killed_between_commit_and_ack_everything_is_acked_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    import sys

    central = tmp_path / "central.db"
    epoch = str(uuid.uuid4())
    killer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLER,
        str(mosquitto.port),
        str(central),
        "3",
        stderr=asyncio.subprocess.PIPE,
    )
    assert killer.stderr is not None
    await wait_for_line(killer.stderr, "receiver: connected", 20)
    async with stub_unit(mosquitto.port, UNIT) as unit:
        sent = [unit.send(epoch, rows(range(s, s + 10))) for s in range(1, 60, 10)]
        assert await killer.wait() == -9  # killed itself right after its third commit
        assert set(unit.acks) <= set(sent[:2])
        cmd = [
            sys.executable,
            "-m",
            "edge_agent",
            "receive",
            "--broker",
            f"127.0.0.1:{mosquitto.port}",
            "--db",
            str(central),
            "--client-id",
            "rx-k",
        ]
        again = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
        try:
            for batch_id in sent:
                await unit.ack_for(batch_id, 30)
        finally:
            again.terminate()
            await again.wait()
    assert {b: [a["stored"] for a in unit.acks[b]] for b in sent} == {b: [10] for b in sent}
    with contextlib.closing(sqlite3.connect(central)) as c:
        held = c.execute("SELECT count(*), count(DISTINCT id) FROM observations").fetchone()
        last = c.execute("SELECT last_contiguous_seq FROM epochs").fetchone()
    assert held == (60, 60) and last == (60,)


async def test_receive_says_when_it_cannot_reach_the_broker_and_when_it_connects(
    tmp_path: Path,
) -> None:
    import sys

    from tests.broker import free_port

    port = free_port()  # nobody listens yet
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent",
        "receive",
        "--broker",
        f"127.0.0.1:{port}",
        "--db",
        str(tmp_path / "central.db"),
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    broker = MosquittoBroker(tmp_path, port=port)
    try:
        await wait_for_line(proc.stderr, f"cannot reach broker 127.0.0.1:{port}", 20)
        broker.start()
        await wait_for_line(proc.stderr, f"receiver: connected to broker 127.0.0.1:{port}", 30)
    finally:
        proc.terminate()
        await proc.wait()
        broker.stop()
