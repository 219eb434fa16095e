"""A full disk, episode by episode: hold, report, free space by class, write back, carry on.

The drivers' sink calls :meth:`FullDisk.enter` when a commit fails with
:class:`~edge_agent.errors.StoreFull` and :meth:`FullDisk.hold` for what stream devices send
meanwhile (the sink returns at once, so the transport keeps reading its port and every
reading is stamped when its bytes arrived). :meth:`FullDisk.run` (one task of the supervisor)
then, per episode:

1. at once (in ``enter``): deletes the reserve file and writes the status file
   (``disk: full``) for the CLI; then records a ``store.full`` event and the ``disk`` state in
   the store if it can;
2. every ``poll`` seconds: if less than ``resume_free_bytes`` is free, runs the next retention
   stage (:mod:`edge_agent.store.retention`); when a stage freed rows, when enough space is free, or
   every ``probe_every`` seconds, writes the held readings back in order, with their original
   reception times;
3. once everything held is written: ``store.space-returned`` event, ``disk`` state ``ok``,
   status file ``ok``, reserve re-created, devices back to their previous state.

Nothing here loops without waiting: between two attempts there is always ``poll`` seconds of
``stop.wait()``, so the agent is idle while the disk stays full and stops at once on SIGTERM.
Readings still held when the agent stops on a full disk are lost: the count is logged and put
in the status file (they were never acknowledged to anyone; stream devices do not resend).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.store import disk_status, retention
from edge_agent.store.acquisition_buffer import AcquisitionBuffer, Held
from edge_agent.store.database import put_state
from edge_agent.store.writer import Store

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 1000


class FullDisk:
    def __init__(
        self,
        store: Store,
        *,
        buffer: AcquisitionBuffer | None = None,
        reserve_bytes: int = 256 * 1024,
        resume_free_bytes: int = 1024 * 1024,
        poll: float = 1.0,
        probe_every: float = 30.0,
        flush_chunk: int = 200,
        free_bytes: Callable[[], int] | None = None,
        on_stored: Callable[[Held], None] = lambda held: None,
        on_recovered: Callable[[], None] = lambda: None,
        device_states: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.store = store
        self.path = Path(store.path)
        self.buffer = buffer if buffer is not None else AcquisitionBuffer()
        self.reserve_bytes = reserve_bytes
        self.resume_free_bytes = resume_free_bytes
        self.poll = poll
        self.probe_every = probe_every
        self.flush_chunk = flush_chunk
        self._free_bytes = free_bytes or (lambda: disk_status.free_bytes(self.path))
        self.on_stored = on_stored
        self.on_recovered = on_recovered
        self.device_states = device_states
        self.full = False
        self.since: str | None = None
        self.episodes = 0
        self.written_back = 0  # held readings written after space returned (this process)
        self.lost_at_stop = 0
        self._wake = asyncio.Event()
        self._pending_events: list[dict[str, Any]] = []
        self._last_status: dict[str, Any] = {}
        self._released = 0

    # --- called by the sink (event loop thread) -------------------------------------------
    def enter(self) -> None:
        if not self.full:
            self.full, self.since = True, utc_now()
            self.episodes += 1
            log.error(
                "store: the disk is full; stream readings are held in memory "
                "(at most %d readings), message devices are told to resend",
                self.buffer.max_readings,
            )
            # At once, not at the next poll: the CLI and the nurse's status must see it now.
            self._released = disk_status.release_reserve(self.path)
            self._write_status(force=True)
            self._wake.set()

    def hold(self, held: Held) -> bool:
        kept = self.buffer.offer(held)
        if not kept and self.buffer.dropped.get(held.device_id, 0) == held.readings + len(
            held.rejects
        ):
            log.error(
                "store: memory buffer full (%d readings); readings from %s are NOT kept "
                "until space is freed",
                self.buffer.readings,
                held.device_id,
            )
        return kept

    def note_event(self, kind: str, detail: str, device_id: str | None) -> None:
        """An event the store cannot take now (written when space returns); the status file
        shows the new device state at once."""
        self._write_status()
        if len(self._pending_events) < MAX_PENDING_EVENTS:
            self._pending_events.append(
                {"at": utc_now(), "kind": kind, "device_id": device_id, "detail": detail}
            )

    def status(self) -> dict[str, Any]:
        return {
            "disk": "full" if self.full else "ok",
            "since": self.since if self.full else None,
            "buffered": self.buffer.readings,
            "buffered_bytes": self.buffer.bytes,
            "buffer_limit": self.buffer.max_readings,
            "buffer_limit_bytes": self.buffer.max_bytes,
            "dropped": sum(self.buffer.dropped.values()),
            "dropped_by_device": dict(self.buffer.dropped),
            "written_back": self.written_back,
            "lost_at_stop": self.lost_at_stop,
            "devices": self.device_states(),
            "updated_at": utc_now(),
        }

    # --- the supervisor's task ------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        disk_status.ensure_reserve(self.path, self.reserve_bytes)
        self._write_status(force=True)
        while not stop.is_set():
            if not self.full:
                await _first(stop, self._wake)
                self._wake.clear()
                continue
            await self._episode(stop)
        if self.full and len(self.buffer):
            await self._flush(deadline=time.monotonic() + 1.0)
            if len(self.buffer):
                self.lost_at_stop = self.buffer.readings
                log.error(
                    "store: stopping on a full disk: %d readings held in memory are lost",
                    self.lost_at_stop,
                )
            self._write_status(force=True)

    async def _episode(self, stop: asyncio.Event) -> None:
        at, info = self.since or utc_now(), {"reserve_released": self._released}

        def op(db: Any) -> None:
            _event(db, at, "store.full", json.dumps(info))
            put_state(db, "disk", {"state": "full", "since": at})

        try:
            await asyncio.wrap_future(self.store.submit(op))
        except Exception:  # no room even for that: written with the others when space returns
            self._pending_events.insert(
                0, {"at": at, "kind": "store.full", "device_id": None, "detail": json.dumps(info)}
            )
        stages = list(retention.STAGES)
        last_try = time.monotonic()
        while not stop.is_set():
            await _first(stop, timeout=self.poll)
            if stop.is_set():
                return
            self._write_status()
            enough = self._free_bytes() >= self.resume_free_bytes
            attempt = enough or time.monotonic() - last_try >= self.probe_every
            if not enough and stages:
                attempt = attempt or await self._free(stages.pop(0))
            if not attempt:
                continue
            last_try = time.monotonic()
            if await self._flush() and await self._leave():
                return

    async def _free(self, stage: str) -> bool:
        try:
            changed = await asyncio.wrap_future(
                self.store.submit(lambda db: retention.free_stage(db, stage))
            )
        except Exception as exc:
            log.warning("store: retention %s failed: %s", stage, exc)
            return False
        log.warning("store: disk full: retention %s freed %d rows", stage, changed)
        return changed > 0

    async def _flush(self, deadline: float | None = None) -> bool:
        """Write held readings back, oldest first; True when none is left."""
        while len(self.buffer):
            if deadline is not None and time.monotonic() > deadline:
                return False
            chunk = self.buffer.take(self.flush_chunk)
            futures = [
                asyncio.wrap_future(
                    self.store.append(
                        h.device_id,
                        list(h.measurements),
                        list(h.rejects),
                        received_at=h.received_at,
                        clock_source=h.clock_source,
                        position=h.position,
                    )
                )
                for h in chunk
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [
                h for h, r in zip(chunk, results, strict=True) if isinstance(r, BaseException)
            ]
            for held, result in zip(chunk, results, strict=True):
                if not isinstance(result, BaseException):
                    self.written_back += held.readings
                    self.on_stored(held)
            if failed:
                # Order is kept unless the disk filled again inside one chunk (then a later
                # entry may have landed before an earlier one; reception times stay right).
                self.buffer.give_back(failed)
                return False
        return True

    async def _leave(self) -> bool:
        at = utc_now()
        info = {
            "since": self.since,
            "written_back": self.written_back,
            "dropped": sum(self.buffer.dropped.values()),
        }
        events = list(self._pending_events)

        def op(db: Any) -> None:
            for row in events:
                _event(db, row["at"], row["kind"], row["detail"], row["device_id"])
            _event(db, at, "store.space-returned", json.dumps(info))
            put_state(db, "disk", {"state": "ok", "since": at, "last_full": info})

        try:
            await asyncio.wrap_future(self.store.submit(op))
        except Exception:
            return False
        del self._pending_events[: len(events)]
        log.warning(
            "store: space returned; %d held readings written, %d not kept",
            info["written_back"],
            info["dropped"],
        )
        self.full, self.since = False, None
        self.buffer.dropped.clear()
        disk_status.ensure_reserve(self.path, self.reserve_bytes)
        self._write_status(force=True)
        self.on_recovered()
        return True

    def _write_status(self, *, force: bool = False) -> None:
        status = self.status()
        same = {k: v for k, v in status.items() if k != "updated_at"}
        if not force and same == self._last_status:
            return
        if disk_status.write_status(self.path, status):
            self._last_status = same


def _event(db: Any, at: str, kind: str, detail: str, device_id: str | None = None) -> None:
    db.execute(
        "INSERT INTO events (at, kind, device_id, detail) VALUES (?, ?, ?, ?)",
        [at, kind, device_id, detail],
    )


async def _first(
    stop: asyncio.Event, other: asyncio.Event | None = None, timeout: float | None = None
) -> None:
    """Wait for ``stop`` (or ``other``), at most ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if other is not None:
        waiters.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
