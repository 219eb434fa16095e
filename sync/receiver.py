"""The reference central receiver: store uplink batches idempotently, then acknowledge.

Subscribes with an MQTT 5 shared subscription (``$share/<group>/mmu/v1/+/up/readings``) so
several receivers can run side by side behind one broker. Each batch is decoded strictly,
stored in one transaction keyed by reading id (``INSERT ... ON CONFLICT DO NOTHING``: a batch
sent twice stores nothing new), and only after that COMMIT is the ack published to
``mmu/v1/{unit}/down/ack`` and the broker's message PUBACKed (``manual_ack``): a receiver
killed mid-commit leaves the message with the broker and the unit re-sends. A payload that is
not a valid batch is refused, counted and logged (size and reason, never its content).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database, Migrations

from edge_agent.errors import LinkError
from edge_agent.store import utc_now
from sync import codec, topics
from sync.central_store import CentralStore, insert_batch, open_central
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles, next_event

log = logging.getLogger(__name__)
central_migrations = Migrations("central")


@central_migrations()
def c001_observations(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE observations (
            id TEXT PRIMARY KEY,
            unit TEXT NOT NULL,
            seq INTEGER NOT NULL,
            batch_id TEXT NOT NULL,
            code TEXT,
            value REAL,
            ucum TEXT,
            effective TEXT,
            stored_at TEXT NOT NULL,
            resource TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX observations_unit_seq ON observations(unit, seq)")
    db.execute(
        "CREATE TABLE units (unit TEXT PRIMARY KEY, last_contiguous_seq INTEGER NOT NULL)"
    )


@dataclass
class ReceiverCounts:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks: int = 0
    by_unit: dict[str, int] = field(default_factory=dict)


def store_batch(db: Database, batch: codec.Batch) -> tuple[int, int]:
    """Insert the batch's observations into a SQLite central store (one transaction)."""
    with db.atomic():
        return insert_batch(lambda sql, p: db.execute(sql, p), batch, utc_now())


class Receiver:
    """``await Receiver(host, port, db_path).run(stop)``: runs until ``stop`` is set."""

    def __init__(
        self,
        host: str,
        port: int,
        db_path: Path | str,  # a SQLite file, or a postgresql:// URL
        *,
        group: str = "receivers",
        tls: TlsFiles | None = None,
        client_id: str | None = None,
        gap_timeout: float = 120.0,
    ) -> None:
        self.db_path = db_path
        # A gap (a seq missing below what arrived) that outlives gap_timeout is asked for
        # again with down/cmd resend-from; batches in flight out of order fill most gaps.
        self.gap_timeout = gap_timeout
        self._gaps: dict[str, float] = {}  # unit -> monotonic time the gap was first seen
        self.resend_requests = 0
        self.group = group
        self.counts = ReceiverCounts()
        self.connected = asyncio.Event()
        self.options = LinkOptions(
            client_id=client_id or f"receiver-{uuid.uuid4().hex[:8]}",
            host=host, port=port, tls=tls, manual_ack=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        db = open_central(self.db_path)
        link = MqttLink(self.options)
        events = link.start()
        try:
            while not stop.is_set():
                event = await next_event(events, stop, min(1.0, self.gap_timeout / 2))
                if event is not None:
                    self._handle(db, link, event)
                self._request_missing(db, link)
        finally:
            link.stop()
            db.close()

    def _request_missing(self, db: CentralStore, link: MqttLink) -> None:
        now = time.monotonic()
        gaps = db.gaps()
        for unit in list(self._gaps):
            if unit not in gaps:
                del self._gaps[unit]  # filled
        for unit, last in gaps.items():
            since = self._gaps.setdefault(unit, now)
            if now - since < self.gap_timeout:
                continue
            command = {"id": uuid.uuid4().hex, "cmd": "resend-from", "seq": last + 1}
            try:
                link.publish(topics.CMD.of(unit), json.dumps(command).encode(),
                             qos=topics.CMD.qos)
            except LinkError:
                continue
            log.warning("receiver: unit %s has a gap after seq %d; asked it to resend", unit,
                        last)
            self.resend_requests += 1
            self._gaps[unit] = now  # ask again only after another gap_timeout

    def _handle(self, db: CentralStore, link: MqttLink, event: LinkEvent) -> None:
        if event.kind == "connected":
            try:
                link.subscribe([(topics.shared_readings(self.group), 1)])
            except LinkError as exc:  # lost again already: paho reconnects, we subscribe then
                log.warning("receiver: subscribe failed: %s", exc)
                return
            self.connected.set()
        elif event.kind == "disconnected":
            self.connected.clear()
        elif event.kind == "message":
            self._on_batch(db, link, event)

    def _on_batch(self, db: CentralStore, link: MqttLink, event: LinkEvent) -> None:
        unit = topics.unit_of(event.topic)
        try:
            batch = codec.decode_batch(event.payload)
            if batch.unit != unit:
                raise codec.CodecError(f"batch says unit {batch.unit!r}, topic says {unit!r}")
        except codec.CodecError as exc:
            self.counts.rejected += 1
            log.warning("receiver: refused %d bytes on %s: %s", len(event.payload), event.topic,
                        exc)
            link.ack(event.mid, event.qos)  # a bad payload will not get better by redelivery
            return
        new, last = db.store_batch(batch, utc_now())  # committed when this returns
        self.counts.batches += 1
        self.counts.stored += new
        self.counts.duplicates += len(batch.observations) - new
        self.counts.by_unit[batch.unit] = self.counts.by_unit.get(batch.unit, 0) + new
        ack = {
            "batch_id": batch.batch_id, "seq_from": batch.seq_from, "seq_to": batch.seq_to,
            "stored": len(batch.observations), "last_contiguous_seq": last,
            "central_time": time.time(),
        }
        try:
            link.publish(topics.ACK.of(batch.unit), json.dumps(ack).encode(),
                         qos=topics.ACK.qos)
        except LinkError as exc:
            # Stored, not acknowledged: the unit re-sends after its timeout and the duplicate
            # is stored as nothing new, then acknowledged. No PUBACK: the broker redelivers.
            log.warning("receiver: stored batch %s but could not ack: %s", batch.batch_id, exc)
            return
        link.ack(event.mid, event.qos)
        self.counts.acks += 1
