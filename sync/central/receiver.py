"""The reference central receiver: store uplink batches, then acknowledge what central holds.

Subscribes with an MQTT 5 shared subscription (``$share/<group>/mmu/v1/+/up/readings``) so
several receivers can run side by side behind one broker. Per message, in this order:

1. decode strictly (a payload that is not a valid batch is parked in ``dead_letters``);
2. **commit** the batch (several queued batches in one transaction when ``max_group`` > 1) in
   the one store worker thread, so the event loop never waits on the database;
3. publish the **ack** on ``mmu/v1/{unit}/down/ack``: which readings central holds after the
   commit and which it refused (a seq conflict), the (unit, epoch)'s last contiguous seq, and
   the times the unit needs to measure its clock offset (a message parked in ``dead_letters``
   is also told to the unit there: a dead-letter notice, :mod:`sync.acks`);
4. **PUBACK** the broker's message (``manual_ack``): a receiver killed before this leaves the
   message with the broker, which delivers it again; it is then stored as nothing new.

Every message has an error boundary. A transient database error (connection lost,
serialization failure, locked or full) is retried with backoff and nothing is acknowledged
meanwhile. Any other error rolls back, parks the message in ``dead_letters`` for a human,
refuses all its readings to the unit (``central-store-error: <class>``), PUBACKs it and goes on
with the next message: a poison message can no longer crash-loop the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.backoff import Backoff
from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from sync import codec, topics
from sync.acks import DeadLetterNotice, dead_letter_body
from sync.central import stats
from sync.central.files import EmqxAnswer, FileRoute, default_files_dir
from sync.central.store import (
    CentralStore,
    DeadLetter,
    Outcome,
    Refusal,
    open_central,
    transient,
)
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles, next_event

log = logging.getLogger(__name__)
T = TypeVar("T")
STORE_ERROR = stats.STORE_ERROR


@dataclass
class ReceiverCounts:
    batches: int = 0  # committed
    stored: int = 0  # new readings
    duplicates: int = 0  # readings central held already
    refused: int = 0  # readings refused (seq conflicts)
    rejected: int = 0  # payloads that are not a batch
    store_errors: int = 0  # messages the store refused for good (dead-lettered)
    dead_letters: int = 0
    transient_errors: int = 0  # store attempts to retry
    acks: int = 0
    by_unit: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    t_recv: float  # central's clock when the message was taken from the link
    t_origin: float | None  # the unit's clock at publish (user property "sent_at")
    batch_id: str | None = None  # as the unit's user properties say (for a dead letter)
    epoch: str | None = None


class Stopped(Exception):
    """The receiver was stopped while a store operation waited to be retried."""


def origin_time(user_properties: Sequence[tuple[str, str]]) -> float | None:
    for key, value in user_properties:
        if key == "sent_at":
            try:
                stamp = float(value)
            except ValueError:
                return None
            return stamp if math.isfinite(stamp) else None
    return None


def user_property(user_properties: Sequence[tuple[str, str]], key: str) -> str | None:
    return next((value for k, value in user_properties if k == key), None)


def ack_body(outcome: Outcome, message: Message, t_send: float) -> dict[str, Any]:
    batch = outcome.batch
    return {
        "batch_id": batch.batch_id,
        "epoch": batch.epoch,
        "stored": outcome.held,
        "refused": [{"id": r.id, "seq": r.seq, "reason": r.reason} for r in outcome.refused],
        "last_contiguous_seq": outcome.last_contiguous_seq,
        "t_origin": message.t_origin,
        "t_recv": message.t_recv,
        "t_send": t_send,
        "central_time": t_send,
    }


def cumulative_ack_body(done: list[tuple[Message, Outcome]], t_send: float) -> dict[str, Any]:
    """One ack for several batches of one (unit, epoch), committed together
    (:func:`sync.acks.parse_acks`): the last contiguous seq after all of them."""
    return {
        "acks": [
            {
                "batch_id": o.batch.batch_id,
                "stored": o.held,
                "refused": [{"id": r.id, "seq": r.seq, "reason": r.reason} for r in o.refused],
                "t_origin": m.t_origin,
                "t_recv": m.t_recv,
            }
            for m, o in done
        ],
        "epoch": done[0][1].batch.epoch,
        "last_contiguous_seq": max(o.last_contiguous_seq for _, o in done),
        "t_send": t_send,
    }


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
        max_group: int = 32,  # queued batches committed in one transaction
        retry_cap: float = 30.0,  # longest wait between attempts after a transient error
        open_store: Callable[[], CentralStore] | None = None,
        link_factory: Callable[[LinkOptions], MqttLink] = MqttLink,
        announce: Callable[[str], None] | None = None,  # connection news for an operator
        # Signs the commands it sends (sync/signing.py): (unit, topic, body) -> payload.
        sign: Callable[[str, str, dict[str, Any]], bytes] | None = None,
        # Signs its acks (Signer.ack_properties): (unit, ack payload) -> MQTT 5 user properties.
        sign_ack: Callable[[str, bytes], list[tuple[str, str]]] | None = None,
        # Teleconsultation files (sync/central/files.py); default: beside a SQLite store.
        # One receiver of a group serves them (serve_files=False for the others).
        files_dir: Path | None = None,
        serve_files: bool = True,
        # A test aid: also play EMQX's part for $file/... with this answer (the emulation in
        # tests/files/emqx_emulator.py; not EMQX, never in production).
        emqx_answer: EmqxAnswer | None = None,
    ) -> None:
        self.db_path = db_path
        self.host, self.port = host, port
        # A gap (a seq missing below what arrived) that outlives gap_timeout is asked for
        # again with down/cmd resend-from; batches in flight out of order fill most gaps.
        self.gap_timeout = gap_timeout
        self._gaps: dict[tuple[str, str], float] = {}  # (unit, epoch) -> first seen (monotonic)
        self.resend_requests = 0
        self.group = group
        self.max_group = max(1, max_group)
        self.counts = ReceiverCounts()
        self.connected = asyncio.Event()
        self.options = LinkOptions(
            client_id=client_id or f"receiver-{uuid.uuid4().hex[:8]}",
            host=host,
            port=port,
            tls=tls,
            manual_ack=True,
        )
        self._open_store = open_store or (lambda: open_central(db_path))
        self._link_factory = link_factory
        self._announce = announce
        self._sign = sign
        self._sign_ack = sign_ack
        self._backoff = Backoff(0.2, retry_cap)
        self._store: CentralStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._next_gap_check = 0.0
        files_dir = (files_dir or default_files_dir(db_path)) if serve_files else None
        self.files = FileRoute(files_dir, emqx=emqx_answer) if files_dir is not None else None

    # --- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        # One thread owns the store (SQLite connections stay in their thread; one writer per
        # receiver keeps the per-message order).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="central-store")
        link = self._link_factory(self.options)
        try:
            await self._store_call(lambda s: None, stop)  # open (and migrate) before serving
            events = link.start()
            held: LinkEvent | None = None
            while not stop.is_set():
                event = held or await next_event(events, stop, min(1.0, self.gap_timeout / 2))
                held = None
                if (
                    event is not None
                    and self.files
                    and event.kind == "message"
                    and (self.files.takes(event.topic))
                ):
                    await self.files.on_message(link, event)
                elif event is not None and event.kind == "message":
                    group = [self._message(event)]
                    while len(group) < self.max_group and not events.empty():
                        more = events.get_nowait()
                        if more.kind != "message" or (
                            self.files is not None and self.files.takes(more.topic)
                        ):
                            held = more
                            break
                        group.append(self._message(more))
                    await self._on_messages(link, group, stop)
                elif event is not None:
                    self._on_link_event(link, event)
                await self._request_missing(link)
        except Stopped:
            pass
        finally:
            await asyncio.to_thread(link.stop)
            if self.files is not None:
                await self.files.close()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_store)
            self._executor.shutdown(wait=True)

    def _message(self, event: LinkEvent) -> Message:
        props = event.user_properties
        return Message(
            event.topic,
            event.payload,
            event.mid,
            event.qos,
            time.time(),
            origin_time(props),
            user_property(props, "batch_id"),
            user_property(props, "epoch"),
        )

    def _say(self, text: str, *, trouble: bool) -> None:
        if self._announce is not None:
            self._announce(text)
        elif trouble:
            log.warning("%s", text)
        else:
            log.info("%s", text)

    def _on_link_event(self, link: MqttLink, event: LinkEvent) -> None:
        where = f"{self.host}:{self.port}"
        if event.kind == "connected":
            try:
                link.subscribe(
                    [
                        (topics.shared_readings(self.group), 1),
                        *(self.files.subscriptions() if self.files else []),
                    ]
                )
            except LinkError as exc:  # lost again already: paho reconnects, we subscribe then
                self._say(f"receiver: subscribe at {where} failed: {exc}", trouble=True)
        elif event.kind == "subscribed":
            if event.failed:
                self._say(
                    f"receiver: broker {where} refused the subscription "
                    f"({event.reason}); check its ACL",
                    trouble=True,
                )
                return
            files = (
                f"; files in {self.files.root}"
                + (" (and EMQX's $file/... emulated)" if self.files.emulate_emqx else "")
                if self.files is not None
                else "; not files (another receiver serves them)"
            )
            self._say(
                f"receiver: connected to broker {where}, serving "
                f"{topics.shared_readings(self.group)}{files}",
                trouble=False,
            )
            self.connected.set()
        elif event.kind == "disconnected":
            self.connected.clear()
            self._say(
                f"receiver: cannot reach broker {where} ({event.reason}); retrying", trouble=True
            )

    # --- the store, in its worker thread --------------------------------------------------
    def _close_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to save
                self._store.close()
            self._store = None

    def _with_store(self, op: Callable[[CentralStore], T]) -> T:
        if self._store is None:
            self._store = self._open_store()
        return op(self._store)

    async def _store_call(self, op: Callable[[CentralStore], T], stop: asyncio.Event) -> T:
        """Run ``op`` in the worker; retry a transient error with backoff until ``stop``.
        Any other error is raised to the caller's error boundary."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._executor, self._with_store, op)
            except Exception as exc:
                if not transient(exc):
                    raise
                self.counts.transient_errors += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "receiver: central store unavailable (%s); retrying in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                await loop.run_in_executor(self._executor, self._close_store)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    raise Stopped from None
                continue
            self._backoff.reset()
            return result

    # --- messages ---------------------------------------------------------------------------
    async def _on_messages(
        self, link: MqttLink, messages: list[Message], stop: asyncio.Event
    ) -> None:
        run: list[tuple[Message, codec.Batch]] = []
        for message in messages:
            unit = topics.unit_of(message.topic)
            try:
                batch = codec.decode_batch(message.payload)
                if batch.unit != unit:
                    raise codec.CodecError(f"batch says unit {batch.unit!r}, topic says {unit!r}")
            except codec.CodecError as exc:
                await self._commit_and_ack(link, run, stop)  # keep the messages' order
                run = []
                await self._refuse_undecodable(link, message, exc, stop)
                continue
            run.append((message, batch))
        await self._commit_and_ack(link, run, stop)

    async def _commit_and_ack(
        self, link: MqttLink, items: list[tuple[Message, codec.Batch]], stop: asyncio.Event
    ) -> None:
        if not items:
            return
        batches = [b for _, b in items]
        try:
            outcomes = await self._store_call(lambda s: s.store_batches(batches, utc_now()), stop)
        except Stopped:
            raise
        except Exception as exc:  # the error boundary: rolled back, this group only
            if len(items) > 1:  # find the message at fault: one transaction each
                for item in items:
                    await self._commit_and_ack(link, [item], stop)
                return
            await self._refuse_poison(link, *items[0], exc, stop)
            return
        groups: dict[tuple[str, str], list[tuple[Message, Outcome]]] = {}
        for (message, _), outcome in zip(items, outcomes, strict=True):
            self._count(outcome)
            groups.setdefault((outcome.batch.unit, outcome.batch.epoch), []).append(
                (message, outcome)
            )
        acked = [
            m.mid
            for group in groups.values()  # one ack per store of a unit
            if self._ack_all(link, group, puback=False)
            for m, _ in group
        ]
        for message, _ in items:  # the PUBACKs in the order the messages came
            if message.mid in acked:
                link.ack(message.mid, message.qos)

    def _count(self, outcome: Outcome) -> None:
        unit = outcome.batch.unit
        self.counts.batches += 1
        self.counts.stored += outcome.new
        self.counts.duplicates += outcome.held - outcome.new
        self.counts.refused += len(outcome.refused)
        self.counts.by_unit[unit] = self.counts.by_unit.get(unit, 0) + outcome.new

    def _ack(self, link: MqttLink, message: Message, outcome: Outcome) -> None:
        self._ack_all(link, [(message, outcome)])

    def _ack_all(
        self, link: MqttLink, done: list[tuple[Message, Outcome]], *, puback: bool = True
    ) -> bool:
        """Called only after the commit: one ack for these batches of one unit's store (a
        cumulative ack when several), then their PUBACKs (the caller's, if not ``puback``).
        Whether the ack went out."""
        unit = done[0][1].batch.unit
        now = time.time()
        body = (
            ack_body(done[0][1], done[0][0], now)
            if len(done) == 1
            else cumulative_ack_body(done, now)
        )
        payload = json.dumps(body, separators=(",", ":")).encode()
        signature = self._sign_ack(unit, payload) if self._sign_ack is not None else []
        try:
            link.publish(
                topics.ACK.of(unit),
                payload,
                qos=topics.ACK.qos,
                content_type=topics.ACK.content_type,
                user_properties=signature,
            )
        except LinkError as exc:
            # Stored, not acknowledged: the unit re-sends after its timeout and the duplicate
            # is stored as nothing new, then acknowledged. No PUBACK: the broker redelivers.
            log.warning(
                "receiver: stored %d batch(es) of unit %s but could not ack: %s",
                len(done),
                unit,
                exc,
            )
            return False
        if puback:
            for message, _ in done:
                link.ack(message.mid, message.qos)
        self.counts.acks += 1
        return True

    async def _park(
        self, link: MqttLink, letter: DeadLetter, told: str, stop: asyncio.Event
    ) -> None:
        """Park the message for a human, then tell its unit (``told``: the reason as the
        unit sees it, without what the error may quote of the data)."""
        try:
            await self._store_call(lambda s: s.dead_letter(letter), stop)
        except Stopped:
            raise
        except Exception as exc:
            log.error(
                "receiver: could not park a message from %s in dead_letters (%s)",
                letter.topic,
                type(exc).__name__,
            )
            return
        self.counts.dead_letters += 1
        unit = topics.unit_of(letter.topic)
        if unit is None:
            return
        notice = DeadLetterNotice(
            told, letter.batch_id, letter.epoch, len(letter.payload), letter.received_at
        )
        payload = dead_letter_body(notice)  # signed as an ack is: the unit verifies both
        signature = self._sign_ack(unit, payload) if self._sign_ack is not None else []
        try:
            link.publish(
                topics.ACK.of(unit),
                payload,
                qos=topics.ACK.qos,
                content_type=topics.ACK.content_type,
                user_properties=signature,
            )
        except LinkError as exc:  # parked all the same; the unit sends it again and is told
            log.warning(
                "receiver: parked a message of unit %s but could not tell it: %s", unit, exc
            )

    async def _refuse_undecodable(
        self, link: MqttLink, message: Message, exc: codec.CodecError, stop: asyncio.Event
    ) -> None:
        self.counts.rejected += 1
        log.warning(
            "receiver: refused %d bytes on %s: %s", len(message.payload), message.topic, exc
        )
        await self._park(
            link,
            DeadLetter(
                message.topic,
                message.payload,
                f"codec: {exc}",
                utc_now(),
                unit=topics.unit_of(message.topic),
                epoch=message.epoch,
                batch_id=message.batch_id,
            ),
            f"codec: {exc}",
            stop,
        )
        link.ack(message.mid, message.qos)  # a bad payload will not get better by redelivery

    async def _refuse_poison(
        self,
        link: MqttLink,
        message: Message,
        batch: codec.Batch,
        exc: Exception,
        stop: asyncio.Event,
    ) -> None:
        reason = f"{STORE_ERROR}: {type(exc).__name__}"
        self.counts.store_errors += 1
        # The class only: a database message may quote the data (patient data stays out of logs).
        log.warning(
            "receiver: central store refused batch %s of unit %s (%s): parked in dead_letters",
            batch.batch_id,
            batch.unit,
            reason,
        )
        await self._park(
            link,
            DeadLetter(
                message.topic,
                message.payload,
                f"{reason}: {exc}"[:2000],
                utc_now(),
                batch.unit,
                batch.epoch,
                batch.batch_id,
            ),
            reason,
            stop,
        )
        try:
            rows = await self._store_call(
                lambda s: s.query(
                    "SELECT last_contiguous_seq FROM epochs WHERE unit = ? AND epoch = ?",
                    [batch.unit, batch.epoch],
                ),
                stop,
            )
        except Stopped:
            raise
        except Exception:
            rows = []
        last = int(rows[0][0]) if rows else 0
        refused = tuple(_refusals(batch, reason))
        self._ack(link, message, Outcome(batch, 0, 0, refused, last))

    # --- gaps -------------------------------------------------------------------------------
    async def _request_missing(self, link: MqttLink) -> None:
        assert self._executor is not None
        now = time.monotonic()
        if now < self._next_gap_check:
            return
        self._next_gap_check = now + min(1.0, self.gap_timeout / 2)
        try:
            gaps = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._with_store, lambda s: s.gaps()
            )
        except Exception as exc:  # asked again next round; the messages' boundary reports it
            log.warning("receiver: cannot list gaps (%s)", type(exc).__name__)
            return
        # An old epoch's gap is permanent once the unit moved on: listed, never asked for.
        open_gaps = {(g.unit, g.epoch): g for g in gaps if g.current}
        for key in list(self._gaps):
            if key not in open_gaps:
                del self._gaps[key]  # filled
        for key, gap in open_gaps.items():
            since = self._gaps.setdefault(key, now)
            if now - since < self.gap_timeout:
                continue
            command = {
                "id": uuid.uuid4().hex,
                "cmd": "resend-from",
                "seq": gap.last_contiguous_seq + 1,
                "epoch": gap.epoch,
            }
            try:
                payload = (
                    json.dumps(command).encode()
                    if self._sign is None
                    else self._sign(gap.unit, "cmd", command)
                )
                link.publish(
                    topics.CMD.of(gap.unit),
                    payload,
                    qos=topics.CMD.qos,
                    content_type=topics.CMD.content_type,
                )
            except LinkError:
                continue
            log.warning(
                "receiver: unit %s epoch %s has a gap after seq %d; asked it to resend",
                gap.unit,
                gap.epoch,
                gap.last_contiguous_seq,
            )
            self.resend_requests += 1
            self._gaps[key] = now  # ask again only after another gap_timeout


def _refusals(batch: codec.Batch, reason: str) -> list[Refusal]:
    return [Refusal(r.id, r.seq, reason) for r in batch.readings]
