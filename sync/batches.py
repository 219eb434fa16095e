"""Forming, encoding and publishing the readings' batches, and marking them sent.

:class:`Batches` holds what is between the outbox and central: the batches in flight (their
encoded payloads), the ones the uplink cap holds, the publishes waiting for their PUBACK, the
readings central refused, and the estimate of what is committed and not yet taken. The sync
daemon (:mod:`sync.daemon`) owns the link and the session and calls it for each action; the
planner (:mod:`sync.planner`) decides when a batch is worth taking.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from sqlite_utils import Database

from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from edge_agent.settings import Settings
from edge_agent.store.writer import Store
from sync import codec, fhir, outbox, planner, topics
from sync.link import MqttLink
from sync.pacing import Pacer, adapt_batch

log = logging.getLogger("sync.daemon")


@dataclass
class InFlight:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    payload: bytes
    attempts: int = 0
    priority: bool = False


class Host(Protocol):
    """What the batches need of the daemon."""

    store: Store
    unit: str
    settings: Settings
    pacer: Pacer
    last_error: str | None
    backlog: int | None

    def outlook(self, now: float) -> planner.Outlook: ...

    def poke(self) -> None: ...

    def soon(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def write_later(self, op: Callable[[Database], Any]) -> Future[Any]: ...


class Batches:
    def __init__(self, host: Host, batch_limit: int) -> None:
        self.host = host
        self.batches: dict[str, InFlight] = {}  # payloads of the batches in flight
        self.batch_limit = batch_limit  # adapted to the link (sync.pacing)
        self.last_ack_at: str | None = None
        self.acked_readings = 0
        self.refused_readings = 0
        self.mids: dict[int, str] = {}  # publish mid -> batch id, until its PUBACK
        self.refusals: dict[str, dict[str, str]] = {}  # batch id -> refused reading ids
        self.waiting = 0  # readings committed and not yet taken into a batch (estimate)
        self.oldest_at: float | None = None  # monotonic time the oldest of them arrived
        self.alerts = False  # alert-range readings wait for a batch
        # Batches held by the uplink cap: (when their reserved bandwidth comes, batch id), in
        # order. Held, not slept on: commands, acks and alerts are served meanwhile.
        self.held: list[tuple[float, str]] = []

    def send(self, link: MqttLink, batch_id: str) -> None:
        """Publish a batch, or hold it until the uplink cap's reserved bandwidth comes (other
        traffic shares the modem); an alert goes at once (its bytes still counted)."""
        batch = self.batches.get(batch_id)
        if batch is None or any(b == batch_id for _, b in self.held):
            return
        now = time.monotonic()
        wait = self.host.pacer.delay(len(batch.payload), now)
        if wait > 0 and not batch.priority:
            self.held.append((now + wait, batch_id))
        else:
            self.publish(link, batch)

    def release_held(self, link: MqttLink) -> None:
        """Publish the held batches whose reserved bandwidth has come, in order (a batch
        acknowledged meanwhile, from an earlier send, is dropped)."""
        due = planner.due_held(self.host.outlook(time.monotonic()))
        for _, batch_id in self.held[:due]:
            batch = self.batches.get(batch_id)
            if batch is not None:
                self.publish(link, batch)
        del self.held[:due]

    def mark(self, batch_id: str) -> None:
        """Mark the batch's readings sent. Not awaited: the next batch never depends on it
        (its readings are in a batch, so no one takes them), and a crash before this commit
        only means central sees the batch once more and acknowledges it again."""
        self.batch_limit = adapt_batch(
            self.batch_limit, acked=True, ceiling=self.host.settings.sync.batch_size
        )
        batch = self.batches.pop(batch_id, None)
        refused = self.refusals.pop(batch_id, {})
        at = utc_now()
        future = self.host.write_later(
            functools.partial(outbox.mark_acked, batch_id=batch_id, acked_at=at, refused=refused)
        )

        def marked(changed: int) -> None:  # on the event loop, like every other change
            self.acked_readings += changed
            if changed:
                self.last_ack_at = at
            if self.host.backlog is not None and batch is not None:
                self.host.backlog = max(0, self.host.backlog - changed - len(refused))
            self.host.poke()  # the status may say so

        def done(f: Future[int]) -> None:  # the store's writer thread
            if f.cancelled() or f.exception() is not None:
                return
            self.host.soon(marked, f.result())

        future.add_done_callback(done)
        if refused:
            self.refused_readings += len(refused)
            log.error(
                "sync: central refused %d readings of batch %s (kept, not re-sent): %s",
                len(refused),
                batch_id,
                sorted(set(refused.values()))[:3],
            )

    async def take(self, priority: bool) -> InFlight | None:
        if not priority and not isinstance(
            planner.decide(self.host.outlook(time.monotonic())), planner.Take
        ):
            return None  # lingering for company, files first, or nothing committed
        limit = min(self.batch_limit, self.host.settings.sync.batch_size)
        before = self.waiting  # commits noted while we read are counted apart
        rows = await self.host.store.read_async(
            functools.partial(outbox.next_batch, limit=limit, alerts_only=priority)
        )
        if priority:
            self.alerts = False
        is_alert = bool(rows) and rows[0]["priority"] == 1
        if is_alert:  # alerts come first and alone: ordinary readings may still wait
            self.alerts = True
        elif not priority and len(rows) < limit:  # empty now, but for what came meanwhile
            self.waiting = max(0, self.waiting - before)
            self.oldest_at = time.monotonic() if self.waiting else None
        elif not priority:  # a full batch: there may be more (a drain): look again at once
            self.waiting = max(1, self.waiting - len(rows))
        if not rows:
            return None
        batch_id = str(uuid.uuid4())
        created = utc_now()
        seqs = [int(r["seq"]) for r in rows]
        taken = await self.host.store.write(
            functools.partial(
                outbox.record_batch,
                batch_id=batch_id,
                seqs=seqs,
                created_at=created,
                priority=1 if is_alert else 0,
                device_versions=fhir.full_device_versions(rows),
            )
        )
        if taken != len(rows):  # cannot happen with one sync loop per store: say so loudly
            log.error("sync: batch %s recorded %d of %d readings", batch_id, taken, len(rows))
            rows = await self.host.store.read_async(
                functools.partial(outbox.batch_readings, batch_id=batch_id)
            )
            if not rows:
                return None
        return self.encode(batch_id, rows, created, 0, is_alert)

    def encode(
        self, batch_id: str, rows: list[dict[str, Any]], created: str, attempts: int, priority: bool
    ) -> InFlight:
        payload = codec.encode_batch(
            self.host.unit, batch_id, rows, created, epoch=self.host.store.epoch
        )
        return InFlight(
            batch_id, rows[0]["seq"], rows[-1]["seq"], len(rows), payload, attempts, priority
        )

    def publish(self, link: MqttLink, batch: InFlight) -> None:
        properties = [
            *codec.WIRE_PROPERTIES,  # what the payload is: zlib, dictionary, inner media type
            ("batch_id", batch.batch_id),
            ("epoch", self.host.store.epoch),
            ("seq_from", str(batch.seq_from)),
            ("seq_to", str(batch.seq_to)),
            ("sent_at", f"{time.time():.3f}"),  # the NTP origin time central echoes
        ]
        if batch.priority:
            properties.append(("priority", "alert"))
        try:
            mid = link.publish(
                topics.READINGS.of(self.host.unit),
                batch.payload,
                qos=topics.READINGS.qos,
                retain=topics.READINGS.retain,
                content_type=topics.READINGS.content_type,
                user_properties=properties,
            )
        except LinkError as exc:
            self.host.last_error = str(exc)  # the session sends it again after the timeout
            return
        self.mids[mid] = batch.batch_id
        batch.attempts += 1
