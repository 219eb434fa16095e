"""The sync daemon: unsent readings -> batches -> MQTT; sent only on central's acknowledgement.

``await SyncDaemon(store, settings).run(stop)`` runs on the agent's event loop until ``stop``
is set. It is the I/O shell around pure parts: :class:`~sync.session.SyncSession` (window,
re-sends, reconnects), :mod:`sync.linger` (when a batch is worth taking),
:mod:`sync.clock_trust` (is the unit's clock right?), :mod:`sync.pacing` (uplink cap, batch
size), :mod:`sync.status_report` (retained status, rate-limited) and :mod:`sync.downlink`.
Whole responsibilities it calls live in modules of their own: :mod:`sync.batches` (forming,
encoding, publishing and marking batches), :mod:`sync.downlink_apply` (applying central's
config and commands, refused acks, dead-letter notices) and :mod:`sync.status_shell` (the
retained status and the store snapshot).

It is event-driven: it sleeps until an ack, a PUBACK, a downlink, a new commit in the store
(a commit listener), a signal (``sync now``: SIGUSR1) or the next deadline it computed (an ack
timeout, a linger, a status) wakes it. There is no polling tick: an idle agent neither wakes
nor writes. Reads (taking a batch) use the store's read connections and never wait for the
writer; writes (recording a batch, marking one sent) are group-committed. Alert-range readings
leave at once, in batches of their own that travel outside the window (one at a time), and only
once: they are ordinary readings with a higher priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlite_utils import Database

from edge_agent.backoff import Backoff
from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from edge_agent.files import attachments
from edge_agent.models import ClockSource
from edge_agent.settings import Settings
from edge_agent.store.database import get_state, put_state
from edge_agent.store.writer import CommitNote, Store
from sync import outbox, planner, signing, topics, trusted_downlink
from sync.acks import Ack, parse_acks, parse_dead_letter
from sync.batches import Batches, InFlight
from sync.clock_trust import ClockTrust, Verdict, sample
from sync.downlink import restore_config
from sync.downlink_apply import DownlinkApplier
from sync.files.sender import FileSender
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles
from sync.pacing import Pacer, adapt_batch
from sync.refusals import DownlinkRefused
from sync.session import Action, MarkAcked, Publish, Resend, SyncSession, Take
from sync.status_report import StatusThrottle
from sync.status_shell import StatusReporter

T = TypeVar("T")
log = logging.getLogger(__name__)
EXTERNAL_POLL_S = 1.0  # --only sync: another process writes the store; look for commits


class SyncDaemon:
    def __init__(self, store: Store, settings: Settings, *, external_writer: bool = False) -> None:
        if settings.broker is None:
            raise ValueError("sync needs a [broker] section")
        self.store = store
        self.settings = settings
        self.unit = settings.unit.id
        self.external_writer = external_writer  # readings come from another process
        self.session = SyncSession(settings.sync.max_in_flight, settings.sync.ack_timeout_s)
        self.connected = False
        self.backlog: int | None = None  # readings central has not acknowledged
        self.devices: Any = None  # device states (the supervisor tells us)
        self.pacer = Pacer(settings.sync.uplink_bps)
        # Batches: formed, encoded, published, held by the uplink cap, marked sent.
        self.out = Batches(self, settings.sync.batch_size)
        self.last_error: str | None = None
        self.clock_offset_s: float | None = None
        self.clock_delay_s: float | None = None
        self.trust = ClockTrust()
        # Central's keys as acks are checked (the configured ones, or a signed rotation's).
        self.ack_trust = signing.Trust.from_texts(
            settings.trust.central_keys, settings.trust.require_signed
        )
        self.wakeups = 0  # loop turns: an idle agent has none
        self.config_version = 0
        self.config_sync: dict[str, Any] | None = None
        self._downlinks: list[LinkEvent] = []  # down/cmd, down/config waiting to be applied
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: dict[str, float] = {}  # the planner's, recomputed every turn
        self._link: MqttLink | None = None
        self._wake_posted = False
        self.report = StatusReporter(self, settings.sync.status_interval_s)
        self._polled_at = float("-inf")  # --only sync: when we last looked for commits
        self._writes: set[Future[Any]] = set()
        self._data_version: int | None = None
        self._look = False  # another process wrote the store (SIGUSR2): look at the outbox
        self._sync_now = False
        # Teleconsultation files (sync/files): after readings and alerts, on the same link.
        self.files = FileSender(
            store,
            self.unit,
            uplink_bps=settings.sync.uplink_bps,
            ack_timeout=settings.sync.ack_timeout_s,
            mode=settings.files.mode,
        )
        self._files_dirty = True
        self.downlinks = DownlinkApplier(self)  # down/cmd, down/config, refused acks

    # what the batches count, where tests and `sync status` have always read it
    @property
    def batches(self) -> dict[str, InFlight]:
        return self.out.batches

    @property
    def batch_limit(self) -> int:
        return self.out.batch_limit

    @property
    def acked_readings(self) -> int:
        return self.out.acked_readings

    @property
    def refused_readings(self) -> int:
        return self.out.refused_readings

    @property
    def last_ack_at(self) -> str | None:
        return self.out.last_ack_at

    @property
    def _status(self) -> StatusThrottle:  # the retained status's throttle (tests read it)
        return self.report.throttle

    # the downlink counters, likewise
    @property
    def refused_downlinks(self) -> int:
        return self.downlinks.refused_downlinks

    @property
    def refused_acks(self) -> int:
        return self.downlinks.refused_acks

    @property
    def dead_letters(self) -> int:
        return self.downlinks.dead_letters

    @property
    def last_dead_letter(self) -> dict[str, Any] | None:
        return self.downlinks.last_dead_letter

    @property
    def config_recognised(self) -> int:
        return self.downlinks.config_recognised

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

    # --- what the supervisor tells us -------------------------------------------------------
    def devices_changed(self, states: Any) -> None:
        """Device states changed (a device came or went): the retained status follows."""
        if states != self.devices:
            self.devices = states
            self.poke()

    def request_sync_now(self) -> None:
        """Forget the reconnect backoff and send every batch in flight again (SIGUSR1)."""
        self._sync_now = True
        self.poke()

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from any thread), if it still runs."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_commit(self, note: CommitNote) -> None:  # the store's writer thread
        self.soon(self._noted, note)

    def _noted(self, note: CommitNote) -> None:  # the event loop: all our state lives here
        self.out.waiting += note.readings
        if self.backlog is not None:
            self.backlog += note.readings
        if self.out.oldest_at is None:
            self.out.oldest_at = time.monotonic()
        if note.alerts:
            self.out.alerts = True
        self.poke()

    def _on_file(self) -> None:  # a new attachment committed (any thread)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._file_noted)

    def _file_noted(self) -> None:
        self._files_dirty = True
        self.poke()

    def store_changed(self) -> None:
        """Another process committed to the store (SIGUSR2: a file attached, readings
        attributed or an encounter closed from the command line): look at the file queue
        and the outbox on the next turn (the store's commit listener sees only our writer)."""
        self._look = True
        self._file_noted()

    def poke(self) -> None:
        link = self._link
        if link is not None and not self._wake_posted:
            self._wake_posted = True
            link.wake()

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self._restore()
        backoff = Backoff(1.0, 60.0, floor=1.0)
        loop = self._loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, self.request_sync_now)
            # `edge-agent attach`, `patient assign/close`: another process wrote the store
            loop.add_signal_handler(signal.SIGUSR2, self.store_changed)
        self.store.add_commit_listener(self._on_commit)
        attachments.add_listener(self.store, self._on_file)
        try:
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
                self._link = link
                try:
                    await self._serve(link, events, stop)
                finally:
                    self._link = None
                    if self.connected:
                        with contextlib.suppress(LinkError):
                            link.publish(
                                topics.STATUS.of(self.unit),
                                self.report.body("offline"),
                                retain=True,
                                content_type=topics.STATUS.content_type,
                            )
                    # paho's thread may sit in a reconnect wait (<= 1 s): join it off the loop.
                    await asyncio.to_thread(link.stop)
                    self.connected = False
                return
        finally:
            self.store.remove_commit_listener(self._on_commit)
            attachments.remove_listener(self.store, self._on_file)
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGUSR1)
                loop.remove_signal_handler(signal.SIGUSR2)
            await self._settle_writes()
            with contextlib.suppress(Exception):
                await self._write(
                    functools.partial(
                        put_state, key="sync", value=self.report.snapshot(stopped=True)
                    )
                )

    async def _restore(self) -> None:
        """Take back what a previous run left: batches in flight (re-sent under their own ids),
        the remote configuration it applied, the backlog."""
        self.ack_trust = await trusted_downlink.trust_in_effect(self.store, self.settings)
        saved = await self.store.read_async(lambda db: get_state(db, "config-remote"))
        before = await self.store.read_async(lambda db: get_state(db, "sync"))
        if isinstance(before, dict):  # what central told the last run stays told
            self.downlinks.dead_letters = int(before.get("dead_letters") or 0)
            self.downlinks.last_dead_letter = before.get("last_dead_letter")
        self.settings, self.config_version, self.config_sync = restore_config(self.settings, saved)
        self._apply_sync_settings()
        records = await self.store.read_async(outbox.in_flight)
        ordinary = [r.batch_id for r in records if not r.priority]
        extra = self.session.restore(ordinary)
        for record in records:
            if record.batch_id in extra:
                continue
            rows = await self.store.read_async(
                functools.partial(outbox.batch_readings, batch_id=record.batch_id)
            )
            if not rows:  # settled meanwhile
                extra.append(record.batch_id)
                self.session.in_flight.pop(record.batch_id, None)
                continue
            if record.priority:
                self.session.restore_priority(record.batch_id)
            self.out.batches[record.batch_id] = self.out.encode(
                record.batch_id, rows, record.created_at, record.attempts, bool(record.priority)
            )
        for batch_id in extra:
            await self._write(functools.partial(outbox.release, batch_id=batch_id))
        self.backlog, self.out.waiting, self.out.alerts, devices = await self.store.read_async(
            lambda db: (
                outbox.backlog(db),
                outbox.unbatched(db),
                outbox.has_alerts(db),
                get_state(db, "devices"),
            )
        )
        if self.devices is None:
            self.devices = devices  # as the last run left them, until the supervisor speaks
        self.out.oldest_at = float("-inf") if self.out.waiting else None  # a backlog leaves at once
        if self.out.batches:
            log.info("sync: %d batches still in flight from the last run", len(self.out.batches))

    def _apply_sync_settings(self) -> None:
        sync = self.settings.sync
        self.session.max_in_flight = sync.max_in_flight
        self.session.ack_timeout = sync.ack_timeout_s
        self.pacer = Pacer(sync.uplink_bps)
        self.files.set_uplink(sync.uplink_bps)
        self.out.batch_limit = min(self.out.batch_limit, sync.batch_size) or sync.batch_size
        self.report.throttle.interval_s = sync.status_interval_s

    def config_applied(self, settings: Settings, version: int, sync: dict[str, Any]) -> None:
        """Central's remote config, validated and persisted: in effect from now on."""
        self.settings, self.config_version = settings, version
        self.config_sync = sync
        self.out.batch_limit = settings.sync.batch_size
        self._apply_sync_settings()

    def readings_requeued(self, count: int) -> None:
        """``resend-from`` put readings back in the outbox: they leave at once."""
        self.out.waiting += count
        self.out.oldest_at = float("-inf")

    async def _serve(
        self, link: MqttLink, events: asyncio.Queue[LinkEvent], stop: asyncio.Event
    ) -> None:
        """One turn per wake-up: the events, the downlinks (their actions join the turn's),
        the session's actions executed, held batches released, a file message, the status and
        the snapshot; then the planner says when to wake next, from the state alone."""
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: link.wake())
        self._deadlines = planner.deadlines(self.outlook(time.monotonic()))
        try:
            while not stop.is_set():
                event = await self._next(events)
                self.wakeups += 1
                now = time.monotonic()
                actions: list[Action] = []
                while event is not None:  # and what else is queued, in the same turn
                    if event.kind == "wake":
                        self._wake_posted = False
                    else:
                        actions += self._on_event(link, event)
                    event = None if events.empty() else events.get_nowait()
                while self._downlinks:
                    actions += await self.downlinks.apply(link, self._downlinks.pop(0))
                if self._sync_now:
                    self._sync_now = False
                    actions += self.sync_now_actions(link, now)
                if self._look:
                    self._look = False
                    await self._look_for_commits(now, force=True)
                if planner.take_alerts(self.outlook(now)):
                    actions += self.session.alerts_waiting()
                actions += self.session.tick(now)
                await self._execute(link, actions)
                self.out.release_held(link)
                await self._send_files(link)
                await self._housekeeping(link)
                self._deadlines = planner.deadlines(self.outlook(time.monotonic()))
        finally:
            stopper.cancel()

    async def _next(self, events: asyncio.Queue[LinkEvent]) -> LinkEvent | None:
        """The next event, or ``None`` when a deadline is due. Always yields to the event loop
        first: the drivers and the console share this loop, and a turn that never awaits
        starves them (the offline freeze)."""
        if not events.empty():
            await asyncio.sleep(0)
            return events.get_nowait()
        deadline = min(self._deadlines.values(), default=None)
        if deadline is None:
            return await events.get()
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            await asyncio.sleep(0)
            return None
        try:
            return await asyncio.wait_for(events.get(), timeout)
        except TimeoutError:
            return None

    def outlook(self, now: float) -> planner.Outlook:
        """Where the loop stands, for the planner (nothing is carried over from a turn)."""
        window = sum(1 for f in self.session.in_flight.values() if not f.priority)
        return planner.Outlook(
            now=now,
            connected=self.connected,
            room=window < self.session.max_in_flight,
            waiting=self.out.waiting,
            oldest_at=self.out.oldest_at,
            alerts=self.out.alerts,
            batch_limit=self.out.batch_limit,
            linger_s=self.settings.sync.linger_s,
            files_urgent=self.files.urgent(),
            held=tuple(at for at, _ in self.out.held),
            ack_at=self.session.ack_deadline(),
            status_at=self.report.status_at(now),
            snapshot_at=self.report.snapshot_at,
            files_at=self.files.deadline(),
            poll_at=self._polled_at + EXTERNAL_POLL_S if self.external_writer else None,
        )

    def sync_now_actions(self, link: MqttLink, now: float) -> list[Action]:
        """``sync now`` (SIGUSR1 or central's command): reconnect without backoff, send every
        batch in flight again, look at the files again."""
        self._files_dirty = True
        log.info("sync: sync now requested")
        link.reconnect_soon()
        return self.session.connected(now) if self.connected else []

    # --- events ---------------------------------------------------------------------------
    def _on_event(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        if event.kind == "connected":
            self.connected = True
            log.info("sync: connected")
            try:
                link.subscribe(
                    [(t.of(self.unit), t.qos) for t in (topics.ACK, topics.CMD, topics.CONFIG)]
                    + self.files.subscriptions()
                )
            except LinkError as exc:  # lost again already: the disconnect event follows
                self.last_error = str(exc)
            self.report.connected(self.settings.sync.status_interval_s)  # say it now
            self.files.connected()
            return self.session.connected(time.monotonic())
        if event.kind == "disconnected":
            if self.connected:
                log.warning("sync: disconnected (%s)", event.reason)
            self.connected = False
            self.last_error = event.reason
            self.out.mids.clear()  # those PUBACKs will never come: the session re-sends
            self.out.held.clear()  # and it re-sends these too, once connected
            self.report.disconnected()
            self.files.disconnected()
            return self.session.disconnected()
        if event.kind == "published":
            batch_id = self.out.mids.pop(event.mid, None)
            if batch_id is None:
                self.files.on_puback(event.mid, event.reason_code, time.monotonic())
                return []
            if event.failed:
                self.last_error = f"broker refused a batch: {event.reason}"
                log.warning("sync: broker refused batch %s: %s", batch_id, event.reason)
            return self.session.puback(batch_id, not event.failed)
        if event.kind == "message":
            return self._on_message(link, event)
        return []

    def _on_message(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        if self.files.on_message(event.topic, event.payload):
            return []
        if event.topic in (topics.CMD.of(self.unit), topics.CONFIG.of(self.unit)):
            self._downlinks.append(event)  # applied after this turn's actions: they need I/O
            return []
        if event.topic != topics.ACK.of(self.unit):
            return []
        arrived = time.time()
        try:  # before anything of it is believed: only central may make us forget data
            signing.verify_ack(
                self.ack_trust,
                unit=self.unit,
                payload=event.payload,
                properties=event.user_properties,
            )
        except DownlinkRefused as exc:
            self.downlinks.refuse_ack(link, len(event.payload), str(exc))
            return []
        try:
            notice = parse_dead_letter(event.payload)
        except ValueError as exc:
            self.downlinks.refused_downlinks += 1
            log.warning("sync: refused a malformed dead-letter notice: %s", exc)
            return []
        if notice is not None:
            self.downlinks.dead_letter(notice)
            return []
        try:
            acks = parse_acks(event.payload)  # one batch, or several (a cumulative ack)
        except ValueError as exc:
            self.downlinks.refused_downlinks += 1
            log.warning("sync: refused a malformed ack (%d bytes): %s", len(event.payload), exc)
            return []
        if any(ack.epoch is not None and ack.epoch != self.store.epoch for ack in acks):
            # An ack for another store of this unit (the one this store replaced): not ours.
            log.warning("sync: ignored an ack for another store epoch")
            return []
        timed = [ack for ack in acks if ack.batch_id in self.out.batches]
        if timed:  # its times, only while its batch is in flight: one sample per message
            self._check_clock(timed[-1], arrived)
        actions: list[Action] = []
        for ack in acks:
            if ack.refused:
                self.out.refusals[ack.batch_id] = ack.refused
            actions += self.session.central_ack(ack.batch_id, ack.last_contiguous_seq)
        return actions

    def _check_clock(self, ack: Ack, arrived: float) -> None:
        """NTP-style: only an exchange with all four times says anything about the clock."""
        if ack.t_origin is None or ack.t_recv is None or ack.t_send is None:
            return
        verdict = self.trust.add(sample(ack.t_origin, ack.t_recv, ack.t_send, arrived))
        best = self.trust.best()
        assert best is not None
        self.clock_offset_s, self.clock_delay_s = best.offset, best.delay
        if verdict is not Verdict.UNSURE:  # certain: the drivers' sink may correct with it
            self.store.central_offset_s = best.offset
        source = self.store.clock_source
        if verdict is Verdict.CONFIRMED and source is ClockSource.UNTRUSTED:
            log.info(
                "sync: central confirms the unit clock (offset %+.2f s ± %.2f)",
                best.offset,
                best.delay / 2,
            )
            self.store.clock_source = ClockSource.SYSTEM
        elif verdict is Verdict.WRONG and source is ClockSource.SYSTEM:
            log.warning(
                "sync: the unit clock is off by %+.0f s against central; readings are "
                "stamped with central's time (the unit's kept) until it is fixed",
                best.offset,
            )
            self.store.clock_source = ClockSource.UNTRUSTED

    # --- actions --------------------------------------------------------------------------
    async def _execute(self, link: MqttLink, actions: list[Action]) -> None:
        """The session's actions, in order; a take's answer adds the next ones. The ack
        deadline (``WaitUntil``) is read from the session when the turn ends."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Publish | Resend):
                self.out.send(link, action.batch_id)
                if isinstance(action, Resend):
                    self.out.batch_limit = adapt_batch(
                        self.out.batch_limit, acked=False, ceiling=self.settings.sync.batch_size
                    )
                    self.write_later(
                        functools.partial(outbox.note_attempt, batch_id=action.batch_id)
                    )
            elif isinstance(action, MarkAcked):
                self.out.mark(action.batch_id)
            elif isinstance(action, Take):
                fresh = await self.out.take(action.priority)
                if fresh is not None:
                    self.out.batches[fresh.batch_id] = fresh
                queue += self.session.batch_ready(
                    fresh.batch_id if fresh else None, time.monotonic(), action.priority
                )

    async def _send_files(self, link: MqttLink) -> None:
        """One file message per turn, when no alert and no readings backlog waits (a file
        segment delays an alert by at most its own transmission time)."""
        if self._files_dirty:
            self._files_dirty = False
            await self.files.refresh()
        now = time.monotonic()
        if not planner.files_may_send(self.outlook(now)):
            return
        out = self.files.next_publish(now, self.pacer.delay)
        if out is not None:
            try:
                mid = link.publish(
                    out.topic,
                    out.payload,
                    qos=1,
                    content_type=out.content_type,
                    user_properties=out.user_properties,
                    response_topic=out.response_topic,
                )
                self.files.published(out, now, mid)
            except LinkError as exc:  # lost meanwhile: the disconnect event follows
                self.last_error = str(exc)

    # --- store ----------------------------------------------------------------------------
    async def _write(self, op: Callable[[Database], T]) -> T:
        return await self.store.write(op)

    def write_later(self, op: Callable[[Database], T]) -> Future[T]:
        future = self.store.submit(op)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)
        return future

    async def _settle_writes(self) -> None:
        pending = list(self._writes)
        for future in pending:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)

    # --- housekeeping ---------------------------------------------------------------------
    async def _housekeeping(self, link: MqttLink) -> None:
        """The retained status and the store snapshot, on change only and rate-limited;
        another process's commits (``--only sync``). Nothing here waits: a status the uplink
        cap holds goes at a deadline, like a held batch."""
        now = time.monotonic()
        if self.external_writer:
            await self._look_for_commits(now)
        if planner.status_due(self.outlook(now)):
            self.report.publish(link, now)
        self.report.write_snapshot(now)

    async def _look_for_commits(self, now: float, *, force: bool = False) -> None:
        self._polled_at = now
        version = await self.store.read_async(outbox.data_version)
        if force or version != self._data_version:
            self._data_version = version
            waiting, alerts = await self.store.read_async(
                lambda db: (outbox.unbatched(db), outbox.has_alerts(db))
            )
            if waiting:
                self.out.waiting = waiting
                self.out.oldest_at = self.out.oldest_at or now
                self.out.alerts = self.out.alerts or alerts

    # --- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for the supervisor's health and `sync status` (no patient data)."""
        return {
            "connected": self.connected,
            "epoch": self.store.epoch,
            "backlog": self.backlog,
            "in_flight": len(self.out.batches),
            "in_flight_batches": len(self.out.batches),
            "batch_size": self.out.batch_limit,
            "in_flight_readings": sum(b.count for b in self.out.batches.values()),
            "acked_readings": self.acked_readings,
            "refused_readings": self.refused_readings,
            "last_ack_at": self.last_ack_at,
            "last_error": self.last_error,
            "central_last_contiguous_seq": self.session.central_seq,
            "broker_refusals": self.session.broker_refusals,
            "clock_offset_s": self.clock_offset_s,
            "clock_delay_s": self.clock_delay_s,
            "refused_downlinks": self.refused_downlinks,
            "refused_acks": self.refused_acks,
            "dead_letters": self.dead_letters,
            "last_dead_letter": self.last_dead_letter,
            "config_version": self.config_version,
            "trust_keys": sorted(self.ack_trust.keys),  # key ids, in effect
            "trust_require_signed": self.ack_trust.require_signed,
            **self.files.status(),
            "files_state": self.files.state(),
            "updated_at": utc_now(),
        }
