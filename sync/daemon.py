"""The sync daemon: unsent readings -> batches -> MQTT; sent only on central's acknowledgement.

Runs on the agent's event loop and carries out what the pure :class:`~sync.session.SyncSession`
decides (publish, mark acked, take a batch): the store is the queue (never paho), at most
``max_in_flight`` batches are unacknowledged, a batch central has not acknowledged within
``ack_timeout_s`` is published again (same batch id; the receiver is idempotent), and every
in-flight batch is published again after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from edge_agent import __version__
from edge_agent.clock import confirmed_by_central
from edge_agent.errors import LinkError
from edge_agent.models import ClockSource
from edge_agent.settings import Settings
from edge_agent.store import Store, put_state, take_state, utc_now
from sync import codec, outbox, topics
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles, next_event
from sync.session import Action, MarkAcked, Publish, SyncSession

log = logging.getLogger(__name__)
TICK = 0.25  # how often the daemon looks for new readings while idle


@dataclass
class InFlight:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    payload: bytes
    attempts: int = 0


class SyncDaemon:
    def __init__(self, store: Store, settings: Settings) -> None:
        if settings.broker is None:
            raise ValueError("sync needs a [broker] section")
        self.store = store
        self.settings = settings
        self.unit = settings.unit.id
        self.session = SyncSession(settings.sync.max_in_flight, settings.sync.ack_timeout_s)
        self.batches: dict[str, InFlight] = {}  # payloads of the batches in flight
        self.connected = False
        self.last_ack_at: str | None = None
        self.last_error: str | None = None
        self.clock_offset_s: float | None = None
        self.acked_readings = 0
        self.refused_downlinks = 0
        self._cursor = 0  # highest seq taken into a batch by this process
        self._last_housekeeping = 0.0
        self._link: MqttLink | None = None

    def link_options(self) -> LinkOptions:
        return self.link_options_for(self.settings)

    @staticmethod
    def link_options_for(settings: Settings) -> LinkOptions:
        broker = settings.broker
        if broker is None:
            raise LinkError("link.config", "no [broker] section in the config")
        unit = settings.unit.id
        tls = None
        if broker.tls:
            if broker.ca_file is None:
                raise LinkError("link.tls", "broker.tls is on but broker.ca_file is not set")
            tls = TlsFiles(broker.ca_file, broker.cert_file, broker.key_file)
        offline = json.dumps({"state": "offline", "unit": unit}).encode()
        return LinkOptions(
            client_id=f"edge-agent-{unit}",
            host=broker.host,
            port=broker.port,
            keepalive=broker.keepalive_s,
            tls=tls,
            will=(topics.STATUS.of(unit), offline, True),
        )

    async def run(self, stop: asyncio.Event) -> None:
        link = self._link = MqttLink(self.link_options())
        events = link.start()
        try:
            while not stop.is_set():
                event = await next_event(events, stop, TICK)
                actions = self._handle(link, event) if event is not None else []
                if event is not None and event.kind == "message":
                    actions += await self._on_downlink(event)
                actions += self.session.tick(time.monotonic())
                await self._execute(link, actions)
                await self._housekeeping(link)
        finally:
            if self.connected:
                with contextlib.suppress(LinkError):
                    link.publish(topics.STATUS.of(self.unit), self._status_payload("offline"),
                                 retain=True)
            link.stop()
            self.connected = False

    # --- events ---------------------------------------------------------------------------
    def _handle(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        if event.kind == "connected":
            self.connected = True
            log.info("sync: connected")
            try:
                link.subscribe([(topics.ACK.of(self.unit), 1)])
                link.publish(topics.STATUS.of(self.unit), self._status_payload("online"),
                             retain=True)
            except LinkError as exc:  # lost again already: the disconnect event follows
                self.last_error = str(exc)
            return self.session.connected(time.monotonic())
        if event.kind == "disconnected":
            if self.connected:
                log.warning("sync: disconnected (%s)", event.reason)
            self.connected = False
            self.last_error = event.reason
            return self.session.disconnected()
        return []

    async def _on_downlink(self, event: LinkEvent) -> list[Action]:
        if event.topic != topics.ACK.of(self.unit):
            return []
        try:
            ack = json.loads(event.payload)
            batch_id = ack["batch_id"]
            if not isinstance(batch_id, str):
                raise TypeError("batch_id is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a malformed ack (%d bytes): %s", len(event.payload), exc)
            return []
        central = ack.get("central_time")
        if isinstance(central, (int, float)) and not isinstance(central, bool):
            self._check_clock(float(central) - time.time())
        return self.session.central_ack(batch_id)

    def _check_clock(self, offset: float) -> None:
        """Central's time exposes a wrong unit clock (a van that booted offline)."""
        self.clock_offset_s = offset
        trusted = confirmed_by_central(offset)
        source = self.store.clock_source
        if trusted and source is ClockSource.UNTRUSTED:
            log.info("sync: central confirms the unit clock (offset %+.1f s)", offset)
            self.store.clock_source = ClockSource.SYSTEM
        elif not trusted and source is ClockSource.SYSTEM:
            log.warning("sync: the unit clock is off by %+.0f s against central; readings are "
                        "flagged clock-untrusted until it is fixed", offset)
            self.store.clock_source = ClockSource.UNTRUSTED

    async def _execute(self, link: MqttLink, actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Publish):
                batch = self.batches.get(action.batch_id)
                if batch is not None:
                    self._publish(link, batch)
            elif isinstance(action, MarkAcked):
                batch_id = action.batch_id
                changed = await asyncio.wrap_future(self.store.submit(
                    functools.partial(outbox.mark_acked, batch_id=batch_id, acked_at=utc_now())
                ))
                self.batches.pop(batch_id, None)
                if changed:
                    self.acked_readings += changed
                    self.last_ack_at = utc_now()
            else:
                fresh = await self._take_batch(self.settings.sync.batch_size)
                if fresh is not None:
                    self.batches[fresh.batch_id] = fresh
                queue += self.session.batch_ready(
                    fresh.batch_id if fresh else None, time.monotonic()
                )

    async def _housekeeping(self, link: MqttLink) -> None:
        """Once a second: publish our state for `sync status`, honour a `sync now`."""
        now = time.monotonic()
        if now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        snapshot = self.status()

        def exchange(db: Database) -> Any:
            put_state(db, "sync", snapshot)
            return take_state(db, "sync-now")

        if await asyncio.wrap_future(self.store.submit(exchange)) is not None:
            log.info("sync: sync now requested")
            link.reconnect_soon()
            if self.connected:  # publish everything in flight again, take new batches
                await self._execute(link, self.session.connected(now))

    # --- publishing -----------------------------------------------------------------------
    async def _take_batch(self, limit: int) -> InFlight | None:
        after = self._cursor
        rows = await asyncio.wrap_future(
            self.store.submit(lambda db: outbox.next_batch(db, after, limit))
        )
        if not rows:
            return None
        batch_id = str(uuid.uuid4())
        created = utc_now()
        payload = codec.encode_batch(self.unit, batch_id, rows, created)
        seq_from, seq_to = rows[0]["seq"], rows[-1]["seq"]
        await asyncio.wrap_future(self.store.submit(
            lambda db: outbox.record_batch(db, batch_id, seq_from, seq_to, len(rows), created)
        ))
        self._cursor = seq_to
        return InFlight(batch_id, seq_from, seq_to, len(rows), payload)

    def _publish(self, link: MqttLink, batch: InFlight) -> None:
        try:
            link.publish(
                topics.READINGS.of(self.unit),
                batch.payload,
                qos=topics.READINGS.qos,
                content_type=codec.CONTENT_TYPE,
                # Batch id and seq range are in the payload; 2G bytes are dear.
                user_properties=[("schema", codec.SCHEMA), ("encoding", codec.ENCODING)],
            )
        except LinkError as exc:
            self.last_error = str(exc)  # the session publishes it again after the timeout
            return
        batch.attempts += 1

    # --- status ---------------------------------------------------------------------------
    def _status_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "unit": self.unit, "version": __version__,
                           "at": utc_now()}).encode()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "in_flight_batches": len(self.batches),
            "in_flight_readings": sum(b.count for b in self.batches.values()),
            "acked_readings": self.acked_readings,
            "last_ack_at": self.last_ack_at,
            "last_error": self.last_error,
            "clock_offset_s": self.clock_offset_s,
            "refused_downlinks": self.refused_downlinks,
            "updated_at": utc_now(),
        }
