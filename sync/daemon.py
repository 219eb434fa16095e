"""The sync daemon: unsent readings -> batches -> MQTT; sent only on central's acknowledgement.

``await SyncDaemon(store, settings).run(stop)`` runs on the agent's event loop until ``stop``
is set. It is the I/O shell around pure parts: :class:`~sync.session.SyncSession` (window,
re-sends, reconnects), :mod:`sync.linger` (when a batch is worth taking),
:mod:`sync.clock_trust` (is the unit's clock right?), :mod:`sync.pacing` (uplink cap, batch
size), :mod:`sync.status_report` (retained status, rate-limited) and :mod:`sync.downlink`.

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
import os
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlite_utils import Database

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from edge_agent.files import attachments
from edge_agent.models import ClockSource
from edge_agent.settings import Settings
from edge_agent.store.database import get_state, put_state
from edge_agent.store.writer import CommitNote, Store
from sync import codec, fhir, outbox, planner, signing, topics, trusted_downlink
from sync.acks import Ack, DeadLetterNotice, parse_acks, parse_dead_letter
from sync.clock_trust import ClockTrust, Verdict, sample
from sync.downlink import (
    Command,
    apply_config,
    parse_command,
    restore_config,
    saved_config,
)
from sync.files.sender import FileSender
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles
from sync.pacing import Pacer, adapt_batch
from sync.refusals import AlreadyApplied, DownlinkRefused
from sync.session import Action, MarkAcked, Publish, Resend, SyncSession, Take
from sync.status_report import StatusThrottle, status_payload

T = TypeVar("T")
log = logging.getLogger(__name__)
ACK_REFUSAL_REPORT_S = 10.0  # refused acks: one up/events report at most this often, with a count
STATE_INTERVAL_S = 5.0  # the "sync" snapshot in the store (for `sync status`): at most this often
EXTERNAL_POLL_S = 1.0  # --only sync: another process writes the store; look for commits


@dataclass
class InFlight:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    payload: bytes
    attempts: int = 0
    priority: bool = False


class SyncDaemon:
    def __init__(self, store: Store, settings: Settings, *, external_writer: bool = False) -> None:
        if settings.broker is None:
            raise ValueError("sync needs a [broker] section")
        self.store = store
        self.settings = settings
        self.unit = settings.unit.id
        self.external_writer = external_writer  # readings come from another process
        self.session = SyncSession(settings.sync.max_in_flight, settings.sync.ack_timeout_s)
        self.batches: dict[str, InFlight] = {}  # payloads of the batches in flight
        self.connected = False
        self.backlog: int | None = None  # readings central has not acknowledged
        self.devices: Any = None  # device states (the supervisor tells us)
        self.pacer = Pacer(settings.sync.uplink_bps)
        self.batch_limit = settings.sync.batch_size  # adapted to the link (sync.pacing)
        self.last_ack_at: str | None = None
        self.last_error: str | None = None
        self.clock_offset_s: float | None = None
        self.clock_delay_s: float | None = None
        self.trust = ClockTrust()
        self.acked_readings = 0
        self.refused_readings = 0
        self.refused_downlinks = 0
        self.refused_acks = 0  # forged or unsigned acks (also counted in refused_downlinks)
        self._acks_unreported = 0
        self._ack_report_at = float("-inf")
        # Central's keys as acks are checked (the configured ones, or a signed rotation's).
        self.ack_trust = signing.Trust.from_texts(
            settings.trust.central_keys, settings.trust.require_signed
        )
        self.dead_letters = 0  # messages of this unit central parked for a human
        self.last_dead_letter: dict[str, Any] | None = None
        self.wakeups = 0  # loop turns: an idle agent has none
        self.config_version = 0
        self.config_recognised = 0  # retained down/config seen again (after a restart)
        self._config_sync: dict[str, Any] | None = None
        self._mids: dict[int, str] = {}  # publish mid -> batch id, until its PUBACK
        self._downlinks: list[LinkEvent] = []  # down/cmd, down/config waiting to be applied
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refusals: dict[str, dict[str, str]] = {}  # batch id -> refused reading ids
        self._waiting = 0  # readings committed and not yet taken into a batch (estimate)
        self._oldest_at: float | None = None  # monotonic time the oldest of them arrived
        self._alerts = False  # alert-range readings wait for a batch
        self._deadlines: dict[str, float] = {}  # the planner's, recomputed every turn
        # Batches held by the uplink cap: (when their reserved bandwidth comes, batch id), in
        # order. Held, not slept on: commands, acks and alerts are served meanwhile.
        self._held: list[tuple[float, str]] = []
        self._link: MqttLink | None = None
        self._wake_posted = False
        self._status = StatusThrottle(settings.sync.status_interval_s)
        self._status_hold: float | None = None  # a status publish that failed: try again then
        self._snapshot_at: float | None = None  # a changed snapshot waits until then
        self._polled_at = float("-inf")  # --only sync: when we last looked for commits
        self._state_written: Any = None
        self._state_at = 0.0
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
            self._poke()

    def request_sync_now(self) -> None:
        """Forget the reconnect backoff and send every batch in flight again (SIGUSR1)."""
        self._sync_now = True
        self._poke()

    def _on_commit(self, note: CommitNote) -> None:  # the store's writer thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._noted, note)

    def _noted(self, note: CommitNote) -> None:  # the event loop: all our state lives here
        self._waiting += note.readings
        if self.backlog is not None:
            self.backlog += note.readings
        if self._oldest_at is None:
            self._oldest_at = time.monotonic()
        if note.alerts:
            self._alerts = True
        self._poke()

    def _on_file(self) -> None:  # a new attachment committed (any thread)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._file_noted)

    def _file_noted(self) -> None:
        self._files_dirty = True
        self._poke()

    def store_changed(self) -> None:
        """Another process committed to the store (SIGUSR2: a file attached, readings
        attributed or an encounter closed from the command line): look at the file queue
        and the outbox on the next turn (the store's commit listener sees only our writer)."""
        self._look = True
        self._file_noted()

    def _poke(self) -> None:
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
                                self._status_body("offline"),
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
                    functools.partial(put_state, key="sync", value=self._snapshot(stopped=True))
                )

    async def _restore(self) -> None:
        """Take back what a previous run left: batches in flight (re-sent under their own ids),
        the remote configuration it applied, the backlog."""
        self.ack_trust = await trusted_downlink.trust_in_effect(self.store, self.settings)
        saved = await self.store.read_async(lambda db: get_state(db, "config-remote"))
        before = await self.store.read_async(lambda db: get_state(db, "sync"))
        if isinstance(before, dict):  # what central told the last run stays told
            self.dead_letters = int(before.get("dead_letters") or 0)
            self.last_dead_letter = before.get("last_dead_letter")
        self.settings, self.config_version, self._config_sync = restore_config(self.settings, saved)
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
            self.batches[record.batch_id] = self._encode(
                record.batch_id, rows, record.created_at, record.attempts, bool(record.priority)
            )
        for batch_id in extra:
            await self._write(functools.partial(outbox.release, batch_id=batch_id))
        self.backlog, self._waiting, self._alerts, devices = await self.store.read_async(
            lambda db: (
                outbox.backlog(db),
                outbox.unbatched(db),
                outbox.has_alerts(db),
                get_state(db, "devices"),
            )
        )
        if self.devices is None:
            self.devices = devices  # as the last run left them, until the supervisor speaks
        self._oldest_at = float("-inf") if self._waiting else None  # a backlog leaves at once
        if self.batches:
            log.info("sync: %d batches still in flight from the last run", len(self.batches))

    def _apply_sync_settings(self) -> None:
        sync = self.settings.sync
        self.session.max_in_flight = sync.max_in_flight
        self.session.ack_timeout = sync.ack_timeout_s
        self.pacer = Pacer(sync.uplink_bps)
        self.files.set_uplink(sync.uplink_bps)
        self.batch_limit = min(self.batch_limit, sync.batch_size) or sync.batch_size
        self._status.interval_s = sync.status_interval_s

    async def _serve(
        self, link: MqttLink, events: asyncio.Queue[LinkEvent], stop: asyncio.Event
    ) -> None:
        """One turn per wake-up: the events, the downlinks (their actions join the turn's),
        the session's actions executed, held batches released, a file message, the status and
        the snapshot; then the planner says when to wake next, from the state alone."""
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: link.wake())
        self._deadlines = planner.deadlines(self._outlook(time.monotonic()))
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
                    actions += await self._downlink(link, self._downlinks.pop(0))
                if self._sync_now:
                    self._sync_now = False
                    actions += self._sync_now_actions(link, now)
                if self._look:
                    self._look = False
                    await self._look_for_commits(now, force=True)
                if planner.take_alerts(self._outlook(now)):
                    actions += self.session.alerts_waiting()
                actions += self.session.tick(now)
                await self._execute(link, actions)
                self._release_held(link)
                await self._send_files(link)
                await self._housekeeping(link)
                self._deadlines = planner.deadlines(self._outlook(time.monotonic()))
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

    def _outlook(self, now: float) -> planner.Outlook:
        """Where the loop stands, for the planner (nothing is carried over from a turn)."""
        window = sum(1 for f in self.session.in_flight.values() if not f.priority)
        return planner.Outlook(
            now=now,
            connected=self.connected,
            room=window < self.session.max_in_flight,
            waiting=self._waiting,
            oldest_at=self._oldest_at,
            alerts=self._alerts,
            batch_limit=self.batch_limit,
            linger_s=self.settings.sync.linger_s,
            files_urgent=self.files.urgent(),
            held=tuple(at for at, _ in self._held),
            ack_at=self.session.ack_deadline(),
            status_at=self._status_at(now),
            snapshot_at=self._snapshot_at,
            files_at=self.files.deadline(),
            poll_at=self._polled_at + EXTERNAL_POLL_S if self.external_writer else None,
        )

    def _sync_now_actions(self, link: MqttLink, now: float) -> list[Action]:
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
            self._status = StatusThrottle(self.settings.sync.status_interval_s)  # say it now
            self._status_hold = None
            self.files.connected()
            return self.session.connected(time.monotonic())
        if event.kind == "disconnected":
            if self.connected:
                log.warning("sync: disconnected (%s)", event.reason)
            self.connected = False
            self.last_error = event.reason
            self._mids.clear()  # those PUBACKs will never come: the session re-sends
            self._held.clear()  # and it re-sends these too, once connected
            self._status_hold = None
            self.files.disconnected()
            return self.session.disconnected()
        if event.kind == "published":
            batch_id = self._mids.pop(event.mid, None)
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
            self._refuse_ack(link, len(event.payload), str(exc))
            return []
        try:
            notice = parse_dead_letter(event.payload)
        except ValueError as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a malformed dead-letter notice: %s", exc)
            return []
        if notice is not None:
            self._dead_letter(notice)
            return []
        try:
            acks = parse_acks(event.payload)  # one batch, or several (a cumulative ack)
        except ValueError as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a malformed ack (%d bytes): %s", len(event.payload), exc)
            return []
        if any(ack.epoch is not None and ack.epoch != self.store.epoch for ack in acks):
            # An ack for another store of this unit (the one this store replaced): not ours.
            log.warning("sync: ignored an ack for another store epoch")
            return []
        timed = [ack for ack in acks if ack.batch_id in self.batches]
        if timed:  # its times, only while its batch is in flight: one sample per message
            self._check_clock(timed[-1], arrived)
        actions: list[Action] = []
        for ack in acks:
            if ack.refused:
                self._refusals[ack.batch_id] = ack.refused
            actions += self.session.central_ack(ack.batch_id, ack.last_contiguous_seq)
        return actions

    def _refuse_ack(self, link: MqttLink, size: int, reason: str) -> None:
        """A forged or unsigned ack: nothing marked sent, no clock sample; counted, logged
        (its size and the reason, never its content) and reported on up/events (at most one
        report every ACK_REFUSAL_REPORT_S, with the count since the last one)."""
        self.refused_downlinks += 1
        self.refused_acks += 1
        self._acks_unreported += 1
        log.warning("sync: refused an ack (%d bytes): %s", size, reason)
        now = time.monotonic()
        if now - self._ack_report_at >= ACK_REFUSAL_REPORT_S:
            self._event(
                link,
                {
                    "type": "downlink-refused",
                    "topic": "ack",
                    "reason": reason,
                    "count": self._acks_unreported,
                },
            )
            self._acks_unreported, self._ack_report_at = 0, now

    def _dead_letter(self, notice: DeadLetterNotice) -> None:
        """Central parked one of our messages for a human: say so (log, status, `sync
        status`). The batch stays in flight: its readings are kept and go again."""
        if notice.epoch is not None and notice.epoch != self.store.epoch:
            log.warning("sync: ignored a dead-letter notice for another store epoch")
            return
        self.dead_letters += 1
        self.last_dead_letter = {
            "batch_id": notice.batch_id,
            "reason": notice.reason,
            "bytes": notice.bytes,
            "parked_at": notice.parked_at,
        }
        self.last_error = (
            f"central parked batch {notice.batch_id or '(unknown)'} as a dead "
            f"letter: {notice.reason}"
        )
        log.error(
            "sync: central parked batch %s (%d bytes) as a dead letter: %s",
            notice.batch_id or "(unknown)",
            notice.bytes,
            notice.reason,
        )
        self._poke()

    async def _downlink(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        """down/cmd and down/config: validated, applied whole, or refused with a reason. The
        session actions a command asks for join the turn's (the daemon executes them once)."""
        kind = "config" if event.topic == topics.CONFIG.of(self.unit) else "cmd"
        try:
            # Signed by central (sync/signing.py); its counter persisted before anything runs.
            payload = await trusted_downlink.verified(
                self.store, self.settings, kind, event.payload
            )
            if kind == "config":
                settings, version = apply_config(
                    self.settings, payload, self.config_version, self._config_sync
                )
                saved = saved_config(version, payload)
                # Persist first: a restart applies it again (and a retained copy of the same
                # version is then recognised, not refused).
                await self._write(functools.partial(put_state, key="config-remote", value=saved))
                self.settings, self.config_version = settings, version
                self._config_sync = saved["sync"]
                self.batch_limit = settings.sync.batch_size
                self._apply_sync_settings()
                log.info("sync: remote config version %d applied", version)
                self._event(link, {"type": "config-applied", "version": version})
            else:
                return await self._command(link, parse_command(payload))
        except AlreadyApplied:  # the retained copy of what this unit applied already
            self.config_recognised += 1
        except DownlinkRefused as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a %s downlink (%d bytes): %s", kind, len(event.payload), exc)
            self._event(link, {"type": "downlink-refused", "topic": kind, "reason": str(exc)})
        return []

    async def _command(self, link: MqttLink, command: Command) -> list[Action]:
        result: dict[str, Any] = {"type": "cmd-done", "id": command.id, "cmd": command.cmd}
        actions: list[Action] = []
        if command.cmd == "sync-now":
            actions = self._sync_now_actions(link, time.monotonic())
        elif command.cmd in signing.TRUST_COMMANDS:  # applied by the verification already
            self.ack_trust = await trusted_downlink.trust_in_effect(self.store, self.settings)
            result["keys"] = sorted(self.ack_trust.keys)
            log.warning(
                "sync: central's signed %s applied: keys %s",
                command.cmd,
                ", ".join(sorted(self.ack_trust.keys)) or "none",
            )
        elif command.cmd == "teleconsult":
            self.files.set_teleconsult(command.encounter)
            result["encounter"] = command.encounter
        elif command.cmd == "resend-from":
            if command.epoch is not None and command.epoch != self.store.epoch:
                raise DownlinkRefused(
                    f"resend-from names store epoch {command.epoch}, this "
                    f"store is {self.store.epoch}: those readings are gone"
                )
            seq = command.seq or 1
            result["readings"] = await self._write(functools.partial(outbox.resend_from, seq=seq))
            self._waiting += int(result["readings"])
            self._oldest_at = float("-inf")
        else:
            stats = await self.store.read_async(outbox.store_counts)
            result.update(version=__version__, store=stats, sync=self.status())
        self._event(link, result)
        return actions

    def _event(self, link: MqttLink, body: dict[str, Any]) -> None:
        """A unit event for central (no patient data) on up/events."""
        payload = json.dumps({**body, "unit": self.unit, "at": utc_now()}).encode()
        with contextlib.suppress(LinkError):
            link.publish(
                topics.EVENTS.of(self.unit),
                payload,
                qos=topics.EVENTS.qos,
                content_type=topics.EVENTS.content_type,
            )

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
                self._send(link, action.batch_id)
                if isinstance(action, Resend):
                    self.batch_limit = adapt_batch(
                        self.batch_limit, acked=False, ceiling=self.settings.sync.batch_size
                    )
                    self._write_later(
                        functools.partial(outbox.note_attempt, batch_id=action.batch_id)
                    )
            elif isinstance(action, MarkAcked):
                self._mark(action.batch_id)
            elif isinstance(action, Take):
                fresh = await self._take(action.priority)
                if fresh is not None:
                    self.batches[fresh.batch_id] = fresh
                queue += self.session.batch_ready(
                    fresh.batch_id if fresh else None, time.monotonic(), action.priority
                )

    def _send(self, link: MqttLink, batch_id: str) -> None:
        """Publish a batch, or hold it until the uplink cap's reserved bandwidth comes (other
        traffic shares the modem); an alert goes at once (its bytes still counted)."""
        batch = self.batches.get(batch_id)
        if batch is None or any(b == batch_id for _, b in self._held):
            return
        now = time.monotonic()
        wait = self.pacer.delay(len(batch.payload), now)
        if wait > 0 and not batch.priority:
            self._held.append((now + wait, batch_id))
        else:
            self._publish(link, batch)

    def _release_held(self, link: MqttLink) -> None:
        """Publish the held batches whose reserved bandwidth has come, in order (a batch
        acknowledged meanwhile, from an earlier send, is dropped)."""
        due = planner.due_held(self._outlook(time.monotonic()))
        for _, batch_id in self._held[:due]:
            batch = self.batches.get(batch_id)
            if batch is not None:
                self._publish(link, batch)
        del self._held[:due]

    def _mark(self, batch_id: str) -> None:
        """Mark the batch's readings sent. Not awaited: the next batch never depends on it
        (its readings are in a batch, so no one takes them), and a crash before this commit
        only means central sees the batch once more and acknowledges it again."""
        self.batch_limit = adapt_batch(
            self.batch_limit, acked=True, ceiling=self.settings.sync.batch_size
        )
        batch = self.batches.pop(batch_id, None)
        refused = self._refusals.pop(batch_id, {})
        at = utc_now()
        future = self._write_later(
            functools.partial(outbox.mark_acked, batch_id=batch_id, acked_at=at, refused=refused)
        )

        def marked(changed: int) -> None:  # on the event loop, like every other change
            self.acked_readings += changed
            if changed:
                self.last_ack_at = at
            if self.backlog is not None and batch is not None:
                self.backlog = max(0, self.backlog - changed - len(refused))
            self._poke()  # the status may say so

        def done(f: Future[int]) -> None:  # the store's writer thread
            loop = self._loop
            if f.cancelled() or f.exception() is not None or loop is None or loop.is_closed():
                return
            loop.call_soon_threadsafe(marked, f.result())

        future.add_done_callback(done)
        if refused:
            self.refused_readings += len(refused)
            log.error(
                "sync: central refused %d readings of batch %s (kept, not re-sent): %s",
                len(refused),
                batch_id,
                sorted(set(refused.values()))[:3],
            )

    async def _take(self, priority: bool) -> InFlight | None:
        if not priority and not isinstance(
            planner.decide(self._outlook(time.monotonic())), planner.Take
        ):
            return None  # lingering for company, files first, or nothing committed
        limit = min(self.batch_limit, self.settings.sync.batch_size)
        before = self._waiting  # commits noted while we read are counted apart
        rows = await self.store.read_async(
            functools.partial(outbox.next_batch, limit=limit, alerts_only=priority)
        )
        if priority:
            self._alerts = False
        is_alert = bool(rows) and rows[0]["priority"] == 1
        if is_alert:  # alerts come first and alone: ordinary readings may still wait
            self._alerts = True
        elif not priority and len(rows) < limit:  # empty now, but for what came meanwhile
            self._waiting = max(0, self._waiting - before)
            self._oldest_at = time.monotonic() if self._waiting else None
        elif not priority:  # a full batch: there may be more (a drain): look again at once
            self._waiting = max(1, self._waiting - len(rows))
        if not rows:
            return None
        batch_id = str(uuid.uuid4())
        created = utc_now()
        seqs = [int(r["seq"]) for r in rows]
        taken = await self._write(
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
            rows = await self.store.read_async(
                functools.partial(outbox.batch_readings, batch_id=batch_id)
            )
            if not rows:
                return None
        return self._encode(batch_id, rows, created, 0, is_alert)

    def _encode(
        self, batch_id: str, rows: list[dict[str, Any]], created: str, attempts: int, priority: bool
    ) -> InFlight:
        payload = codec.encode_batch(self.unit, batch_id, rows, created, epoch=self.store.epoch)
        return InFlight(
            batch_id, rows[0]["seq"], rows[-1]["seq"], len(rows), payload, attempts, priority
        )

    def _publish(self, link: MqttLink, batch: InFlight) -> None:
        properties = [
            *codec.WIRE_PROPERTIES,  # what the payload is: zlib, dictionary, inner media type
            ("batch_id", batch.batch_id),
            ("epoch", self.store.epoch),
            ("seq_from", str(batch.seq_from)),
            ("seq_to", str(batch.seq_to)),
            ("sent_at", f"{time.time():.3f}"),  # the NTP origin time central echoes
        ]
        if batch.priority:
            properties.append(("priority", "alert"))
        try:
            mid = link.publish(
                topics.READINGS.of(self.unit),
                batch.payload,
                qos=topics.READINGS.qos,
                retain=topics.READINGS.retain,
                content_type=topics.READINGS.content_type,
                user_properties=properties,
            )
        except LinkError as exc:
            self.last_error = str(exc)  # the session sends it again after the timeout
            return
        self._mids[mid] = batch.batch_id
        batch.attempts += 1

    async def _send_files(self, link: MqttLink) -> None:
        """One file message per turn, when no alert and no readings backlog waits (a file
        segment delays an alert by at most its own transmission time)."""
        if self._files_dirty:
            self._files_dirty = False
            await self.files.refresh()
        now = time.monotonic()
        if not planner.files_may_send(self._outlook(now)):
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

    def _write_later(self, op: Callable[[Database], T]) -> Future[T]:
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
        if planner.status_due(self._outlook(now)):
            body = self._status_body("online")
            # A few hundred bytes, at most once an interval: sent at once and charged to the
            # cap (what follows waits for them), never slept on nor held behind a backlog.
            self.pacer.delay(len(body), now)
            self._status_hold = None
            try:
                link.publish(
                    topics.STATUS.of(self.unit),
                    body,
                    retain=topics.STATUS.retain,
                    content_type=topics.STATUS.content_type,
                )
                self._status.sent(self._status_content(), now)
            except LinkError:  # lost meanwhile: the disconnect event follows
                self._status_hold = now + 1.0
        snapshot = self._snapshot()
        key = {k: v for k, v in snapshot.items() if k != "updated_at"}
        self._snapshot_at = None
        if key != self._state_written:
            if now - self._state_at >= STATE_INTERVAL_S or (
                self._state_written is None
                or key["connected"] != self._state_written.get("connected")
            ):
                self._state_written, self._state_at = key, now
                self._write_later(functools.partial(put_state, key="sync", value=snapshot))
            else:
                self._snapshot_at = self._state_at + STATE_INTERVAL_S

    def _status_content(self) -> tuple[Any, Any]:
        return (self.backlog, self.devices)

    def _status_at(self, now: float) -> float | None:
        """When the retained status may go: None when it has nothing new to say."""
        if not self.connected or not self._status.changed(self._status_content()):
            return None
        if self._status_hold is not None:
            return self._status_hold
        at = self._status.due(now)
        return now if at is None else at

    async def _look_for_commits(self, now: float, *, force: bool = False) -> None:
        self._polled_at = now
        version = await self.store.read_async(outbox.data_version)
        if force or version != self._data_version:
            self._data_version = version
            waiting, alerts = await self.store.read_async(
                lambda db: (outbox.unbatched(db), outbox.has_alerts(db))
            )
            if waiting:
                self._waiting = waiting
                self._oldest_at = self._oldest_at or now
                self._alerts = self._alerts or alerts

    def _status_body(self, state: str) -> bytes:
        return status_payload(
            state, self.unit, self.store.epoch, self.backlog, self.devices, utc_now()
        )

    def _snapshot(self, stopped: bool = False) -> dict[str, Any]:
        return {**self.status(), "pid": os.getpid(), "stopped": stopped}

    # --- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for the supervisor's health and `sync status` (no patient data)."""
        return {
            "connected": self.connected,
            "epoch": self.store.epoch,
            "backlog": self.backlog,
            "in_flight": len(self.batches),
            "in_flight_batches": len(self.batches),
            "batch_size": self.batch_limit,
            "in_flight_readings": sum(b.count for b in self.batches.values()),
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
