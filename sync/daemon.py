"""The sync daemon: unsent readings -> batches -> MQTT; sent only on central's acknowledgement.

``await SyncDaemon(store, settings).run(stop)`` runs on the agent's event loop until ``stop``
is set, and carries out what the pure :class:`~sync.session.SyncSession` decides: the store is
the queue (never paho), at most ``max_in_flight`` batches are unacknowledged, a batch central
has not acknowledged within ``ack_timeout_s`` is sent again (same batch id: the receiver is
idempotent), every in-flight batch is sent again after a reconnect, and batches recorded in
flight by a previous run are re-sent under their own ids. It returns promptly when ``stop`` is
set; a link that cannot even be set up (TLS files missing) is retried with backoff, reported in
:meth:`SyncDaemon.status`; a malformed downlink is refused and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlite_utils import Database

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import confirmed_by_central
from edge_agent.errors import LinkError
from edge_agent.models import ClockSource
from edge_agent.settings import Settings
from edge_agent.store import Store, get_state, put_state, take_state, utc_now
from sync import codec, outbox, topics
from sync.downlink import Command, DownlinkRefused, apply_config, parse_command
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles, next_event
from sync.pacing import Pacer, adapt_batch
from sync.session import (
    Action,
    MarkAcked,
    Publish,
    Resend,
    SyncSession,
    Take,
    WaitUntil,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
TICK = 0.25  # how often the daemon looks for new readings while idle
MAX_ACK_BYTES = 4096  # an ack is ~150 bytes: anything far larger is refused unparsed


@dataclass
class InFlight:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    payload: bytes
    attempts: int = 0


@dataclass(frozen=True)
class Ack:
    batch_id: str
    last_contiguous_seq: int | None
    central_time: float | None


def parse_ack(payload: bytes) -> Ack:
    """A ``down/ack`` message, strictly; ValueError for anything else."""
    if len(payload) > MAX_ACK_BYTES:
        raise ValueError(f"ack of {len(payload)} bytes")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("batch_id"), str):
        raise ValueError("no batch_id")
    seq = data.get("last_contiguous_seq")
    central = data.get("central_time")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ValueError("last_contiguous_seq is not an integer")
    if central is not None and (not isinstance(central, int | float) or isinstance(central, bool)):
        raise ValueError("central_time is not a number")
    return Ack(data["batch_id"], seq, None if central is None else float(central))


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
        self.backlog: int | None = None  # readings central has not acknowledged
        self.devices: Any = None  # device states the supervisor keeps in the store
        self.pacer = Pacer(settings.sync.uplink_bps)
        self.batch_limit = settings.sync.batch_size  # adapted to the link (sync.pacing)
        self.last_ack_at: str | None = None
        self.last_error: str | None = None
        self.clock_offset_s: float | None = None
        self.acked_readings = 0
        self.refused_downlinks = 0
        self._mids: dict[int, str] = {}  # publish mid -> batch id, until its PUBACK
        self._downlinks: list[LinkEvent] = []  # down/cmd, down/config waiting to be applied
        self._wake_at: float | None = None
        self._last_housekeeping = 0.0

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

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self._restore()
        backoff = Backoff(1.0, 60.0, floor=1.0)
        while not stop.is_set():
            try:
                link = MqttLink(self.link_options())
                events = link.start()
            except LinkError as exc:  # e.g. a certificate being replaced: try again later
                self.last_error = str(exc)
                log.error("sync: cannot set up the link: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next_delay())
                continue
            try:
                await self._serve(link, events, stop)
            finally:
                if self.connected:
                    with contextlib.suppress(LinkError):
                        link.publish(topics.STATUS.of(self.unit),
                                     self._status_payload("offline"), retain=True)
                # paho's thread may sit in a reconnect wait (<= 1 s): join it off the loop.
                await asyncio.to_thread(link.stop)
                self.connected = False
            return

    async def _restore(self) -> None:
        """Take back the batches a previous run left in flight, under their own ids."""
        records = await self._store(outbox.in_flight)
        extra = self.session.restore([r.batch_id for r in records])
        for record in records:
            if record.batch_id in extra:
                continue
            rows = await self._store(functools.partial(outbox.batch_readings,
                                                       batch_id=record.batch_id))
            if not rows:  # settled meanwhile (e.g. marked through an older batch)
                extra.append(record.batch_id)
                self.session.in_flight.pop(record.batch_id, None)
                continue
            payload = codec.encode_batch(self.unit, record.batch_id, rows, record.created_at,
                                         epoch=str(uuid.UUID(int=0)))  # lead: store.epoch
            self.batches[record.batch_id] = InFlight(
                record.batch_id, rows[0]["seq"], rows[-1]["seq"], len(rows), payload,
                record.attempts)
        for batch_id in extra:
            await self._store(functools.partial(outbox.release, batch_id=batch_id))
        if self.batches:
            log.info("sync: %d batches still in flight from the last run", len(self.batches))

    async def _serve(self, link: MqttLink, events: asyncio.Queue[LinkEvent],
                     stop: asyncio.Event) -> None:
        while not stop.is_set():
            timeout = TICK
            if self._wake_at is not None:
                timeout = max(0.0, min(TICK, self._wake_at - time.monotonic()))
            event = await next_event(events, stop, timeout)
            actions: list[Action] = []
            if event is not None:
                actions = self._on_event(link, event)
            if self.connected:
                await self._alerts(link)  # clinical alerts leave before readings batches
            actions += self.session.tick(time.monotonic())
            await self._execute(link, actions)
            while self._downlinks:
                await self._downlink(link, self._downlinks.pop(0))
            await self._housekeeping(link)

    # --- events ---------------------------------------------------------------------------
    def _on_event(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        if event.kind == "connected":
            self.connected = True
            log.info("sync: connected")
            try:
                link.subscribe([(t.of(self.unit), t.qos)
                                for t in (topics.ACK, topics.CMD, topics.CONFIG)])
                link.publish(topics.STATUS.of(self.unit), self._status_payload("online"),
                             retain=topics.STATUS.retain)
            except LinkError as exc:  # lost again already: the disconnect event follows
                self.last_error = str(exc)
            return self.session.connected(time.monotonic())
        if event.kind == "disconnected":
            if self.connected:
                log.warning("sync: disconnected (%s)", event.reason)
            self.connected = False
            self.last_error = event.reason
            self._mids.clear()  # those PUBACKs will never come: the session re-sends
            return self.session.disconnected()
        if event.kind == "published":
            batch_id = self._mids.pop(event.mid, None)
            if batch_id is None:
                return []
            if event.failed:
                self.last_error = f"broker refused a batch: {event.reason}"
                log.warning("sync: broker refused batch %s: %s", batch_id, event.reason)
            return self.session.puback(batch_id, not event.failed)
        if event.kind == "message":
            return self._on_downlink(event)
        return []

    def _on_downlink(self, event: LinkEvent) -> list[Action]:
        if event.topic in (topics.CMD.of(self.unit), topics.CONFIG.of(self.unit)):
            self._downlinks.append(event)  # applied in _serve: they need the store
            return []
        if event.topic != topics.ACK.of(self.unit):
            return []
        try:
            ack = parse_ack(event.payload)
        except ValueError as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a malformed ack (%d bytes): %s", len(event.payload), exc)
            return []
        if ack.central_time is not None:
            self._check_clock(ack.central_time - time.time())
        return self.session.central_ack(ack.batch_id, ack.last_contiguous_seq)

    async def _downlink(self, link: MqttLink, event: LinkEvent) -> None:
        """down/cmd and down/config: validated, applied whole, or refused with a reason."""
        kind = "config" if event.topic == topics.CONFIG.of(self.unit) else "cmd"
        try:
            if kind == "config":
                applied = await self._store(lambda db: get_state(db, "config-version") or 0)
                settings, version = apply_config(self.settings, event.payload, int(applied))
                self.settings = settings
                self.session.max_in_flight = settings.sync.max_in_flight
                self.session.ack_timeout = settings.sync.ack_timeout_s
                self.pacer = Pacer(settings.sync.uplink_bps)
                await self._store(lambda db: put_state(db, "config-version", version))
                log.info("sync: remote config version %d applied", version)
                self._event(link, {"type": "config-applied", "version": version})
            else:
                command = parse_command(event.payload)
                await self._command(link, command)
        except DownlinkRefused as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a %s downlink (%d bytes): %s", kind,
                        len(event.payload), exc)
            self._event(link, {"type": "downlink-refused", "topic": kind,
                               "reason": str(exc)})

    async def _command(self, link: MqttLink, command: Command) -> None:
        result: dict[str, Any] = {"type": "cmd-done", "id": command.id, "cmd": command.cmd}
        if command.cmd == "sync-now":
            link.reconnect_soon()
            if self.connected:
                await self._execute(link, self.session.connected(time.monotonic()))
        elif command.cmd == "resend-from":
            seq = command.seq or 1

            def unsend(db: Database) -> int:
                return int(db.execute(
                    "UPDATE readings SET sent_at = NULL, batch_id = NULL "
                    "WHERE seq >= ? AND sent_at IS NOT NULL", [seq]).rowcount)

            result["readings"] = await self._store(unsend)
        else:
            stats = await self._store(lambda db: {
                "readings": db.execute("SELECT count(*) FROM readings").fetchone()[0],
                "rejects": db.execute("SELECT count(*) FROM rejects").fetchone()[0],
            })
            result.update(version=__version__, store=stats, sync=self.status())
        self._event(link, result)

    async def _alerts(self, link: MqttLink) -> None:
        """The priority path: every reading flagged ``alert`` goes out at once on up/events
        as a clinical-alert event (a FHIR Observation), ahead of the readings batches that
        will also carry it (central stores readings by id, so nothing is stored twice)."""
        cursor = await self._store(lambda db: get_state(db, "alert-cursor") or 0)
        rows, reached = await self._store(lambda db: outbox.next_alerts(db, int(cursor)))
        for row in rows:
            body = {"type": "clinical-alert", "observation": codec.observation(self.unit, row)}
            payload = json.dumps({**body, "unit": self.unit, "at": utc_now()}).encode()
            try:
                link.publish(topics.EVENTS.of(self.unit), payload, qos=topics.EVENTS.qos)
            except LinkError:
                reached = int(row["seq"]) - 1  # send this one again next time
                break
        if reached != cursor:
            await self._store(lambda db: put_state(db, "alert-cursor", reached))

    def _event(self, link: MqttLink, body: dict[str, Any]) -> None:
        """A unit event for central (no patient data) on up/events."""
        payload = json.dumps({**body, "unit": self.unit, "at": utc_now()}).encode()
        with contextlib.suppress(LinkError):
            link.publish(topics.EVENTS.of(self.unit), payload, qos=topics.EVENTS.qos)

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
            if isinstance(action, Publish | Resend):
                batch = self.batches.get(action.batch_id)
                if batch is not None:
                    wait = self.pacer.delay(len(batch.payload), time.monotonic())
                    if wait > 0:  # the uplink cap: other traffic shares the modem
                        await asyncio.sleep(wait)
                    self._publish(link, batch)
                if isinstance(action, Resend):
                    self.batch_limit = adapt_batch(self.batch_limit, acked=False,
                                                   ceiling=self.settings.sync.batch_size)
                    await self._store(functools.partial(outbox.note_attempt,
                                                        batch_id=action.batch_id))
            elif isinstance(action, MarkAcked):
                batch_id = action.batch_id
                self.batch_limit = adapt_batch(self.batch_limit, acked=True,
                                               ceiling=self.settings.sync.batch_size)
                changed = await self._store(functools.partial(
                    outbox.mark_acked, batch_id=batch_id, acked_at=utc_now()))
                self.batches.pop(batch_id, None)
                if changed:
                    self.acked_readings += changed
                    self.last_ack_at = utc_now()
            elif isinstance(action, WaitUntil):
                self._wake_at = action.at
            elif isinstance(action, Take):
                fresh = await self._take_batch(min(self.batch_limit,
                                                   self.settings.sync.batch_size))
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

        def exchange(db: Database) -> tuple[int, Any, Any]:
            put_state(db, "sync", snapshot)
            return outbox.backlog(db), take_state(db, "sync-now"), get_state(db, "devices")

        self.backlog, request, devices = await self._store(exchange)
        if devices != self.devices:  # a device came or went: refresh the retained status
            self.devices = devices
            if self.connected:
                with contextlib.suppress(LinkError):
                    link.publish(topics.STATUS.of(self.unit), self._status_payload("online"),
                                 retain=topics.STATUS.retain)
        if request is not None:
            log.info("sync: sync now requested")
            link.reconnect_soon()
            if self.connected:  # send everything in flight again, take new batches
                await self._execute(link, self.session.connected(now))

    # --- publishing -----------------------------------------------------------------------
    async def _take_batch(self, limit: int) -> InFlight | None:
        batch_id = str(uuid.uuid4())
        created = utc_now()

        def take(db: Database) -> list[dict[str, Any]]:
            # One writer operation: the batch is recorded in the transaction that formed it.
            rows = outbox.next_batch(db, limit)
            if rows:
                outbox.record_batch(db, batch_id, rows[0]["seq"], rows[-1]["seq"], len(rows),
                                    created)
            return rows

        rows = await self._store(take)
        if not rows:
            return None
        payload = codec.encode_batch(self.unit, batch_id, rows, created,
                                     epoch=str(uuid.UUID(int=0)))  # lead: store.epoch
        return InFlight(batch_id, rows[0]["seq"], rows[-1]["seq"], len(rows), payload)

    def _publish(self, link: MqttLink, batch: InFlight) -> None:
        try:
            mid = link.publish(
                topics.READINGS.of(self.unit),
                batch.payload,
                qos=topics.READINGS.qos,
                retain=topics.READINGS.retain,
                content_type=codec.CONTENT_TYPE,
                # Lets central route and count without inflating; ~60 bytes per message.
                user_properties=[
                    ("schema", codec.SCHEMA), ("encoding", codec.ENCODING),
                    ("batch_id", batch.batch_id), ("seq_from", str(batch.seq_from)),
                    ("seq_to", str(batch.seq_to)),
                ],
            )
        except LinkError as exc:
            self.last_error = str(exc)  # the session sends it again after the timeout
            return
        self._mids[mid] = batch.batch_id
        batch.attempts += 1

    async def _store(self, op: Callable[[Database], T]) -> T:
        return await asyncio.wrap_future(self.store.submit(op))

    # --- status ---------------------------------------------------------------------------
    def _status_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "unit": self.unit, "version": __version__,
                           "backlog": self.backlog, "devices": self.devices,
                           "at": utc_now()}).encode()

    def status(self) -> dict[str, Any]:
        """A snapshot for the supervisor's health and `sync status` (no patient data)."""
        return {
            "connected": self.connected,
            "backlog": self.backlog,
            "in_flight": len(self.batches),
            "in_flight_batches": len(self.batches),
            "batch_size": self.batch_limit,
            "in_flight_readings": sum(b.count for b in self.batches.values()),
            "acked_readings": self.acked_readings,
            "last_ack_at": self.last_ack_at,
            "last_error": self.last_error,
            "central_last_contiguous_seq": self.session.central_seq,
            "broker_refusals": self.session.broker_refusals,
            "clock_offset_s": self.clock_offset_s,
            "refused_downlinks": self.refused_downlinks,
            "updated_at": utc_now(),
        }
