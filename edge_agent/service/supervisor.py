"""Runs the unit's drivers and the sync daemon in one asyncio TaskGroup, restarting what fails.

Each device gets a supervised task: a driver that crashes (a bug, not a device problem: those
are handled inside the transports) is logged, marked ``crashed`` in the health snapshot and
restarted with backoff; the others carry on. Acquisition never waits for the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.base import DeviceFacts, Rejected, Sink
from drivers.registry import DRIVERS, DriverSpec, driver
from edge_agent.backoff import Backoff
from edge_agent.checks.device_rules import device_problems
from edge_agent.clock import ClockChoice, choose_clock, utc_now
from edge_agent.errors import StoreFull
from edge_agent.files import sources as file_sources
from edge_agent.models import ClockSource, Measurement
from edge_agent.service import heartbeat
from edge_agent.service.device_silence import silent_since
from edge_agent.service.loop_lag import LagMonitor
from edge_agent.settings import DeviceSettings, Settings
from edge_agent.store import connect as store_connect
from edge_agent.store import device_facts
from edge_agent.store.acquisition_buffer import AcquisitionBuffer, Held
from edge_agent.store.database import put_state
from edge_agent.store.disk_full import FullDisk
from edge_agent.store.writer import Store

log = logging.getLogger(__name__)
STREAM_BUSY_RETRIES = 5  # a stream's readings appended again while the store stays locked


@dataclass
class DeviceState:
    state: str = "starting"
    detail: str = ""
    since: str = field(default_factory=utc_now)
    readings: int = 0
    rejects: int = 0
    last_reading_at: str | None = None  # the last time the device sent something stored


@dataclass
class _Fix:
    latitude: float | None = None
    longitude: float | None = None
    position_at: float | None = None  # monotonic
    gps_offset: float | None = None  # GPS UTC minus the unit's clock, seconds
    offset_at: float | None = None  # monotonic


class StoreSink(Sink):
    """The drivers' sink: commit through the store's single writer, keep device health.

    It also attaches the van's position (from any device that reports latitude/longitude: the
    GPS) to the other devices' readings, and chooses the reception clock by cross-checking
    GPS time, the system clock (NTP) and central's measured offset
    (:func:`edge_agent.clock.choose_clock`): central's offset corrects a wrong clock
    (``clock_source = "central"``), GPS time is used only while neither NTP nor central
    vouches for the clock and its date is plausible (``"gps"``), and a GPS time that disagrees
    with the clock chosen is not used but reported (agent state ``clock``: the nurse's clock
    tile, ``doctor``). A corrected reading keeps the system's time as context
    ``system-time``.

    A device with a known clock offset (``clock_offset`` in its configuration: how far its
    clock is ahead of true time) has the offset in effect recorded with each reading that
    carries a device time (context ``clock-offset``, seconds): the codec subtracts it, and a
    later change of the configuration does not rewrite what was taken before.
    """

    POSITION_MAX_AGE = 300.0
    GPS_TIME_MAX_AGE = 600.0
    CLOCK_TOLERANCE = 2.0

    def __init__(
        self,
        store: Store,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        full_disk: FullDisk | None = None,
    ) -> None:
        self.unit_store = store
        self._wall = wall
        self._monotonic = monotonic
        self._fix = _Fix()
        self.devices: dict[str, DeviceState] = {}
        self.on_devices: Callable[[dict[str, dict[str, str]]], None] | None = None  # sync
        self._before_full: dict[str, tuple[str, str]] = {}
        self.full_disk = full_disk or FullDisk(store)
        self.full_disk.on_stored = self._count
        self.full_disk.on_recovered = self._recovered
        self.full_disk.device_states = lambda: {k: v.state for k, v in self.devices.items()}
        self.clock_offsets: dict[str, float] = {}  # device id -> seconds its clock is ahead
        self.clock = ClockChoice(ClockSource.SYSTEM)  # the last choice (agent state "clock")
        self._clock_said: tuple[str, str | None] | None = None

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None:
        """Commit, then return. With ``may_buffer`` (stream devices, which never resend) a full
        disk holds the readings in memory and returns at once; without it (a message the
        device will be acknowledged for) a full disk raises :class:`StoreFull` at once, so
        the device gets a negative answer and resends. A ``cursor`` (a download cursor saved
        in the readings' transaction) is never held: such a store is always durable."""
        may_buffer = may_buffer and cursor is None
        measurements = with_clock_offset(measurements, self.clock_offsets.get(device_id))
        wall, mono = self._wall(), self._monotonic()
        is_gps = self._learn(measurements, wall, mono)
        received_at, clock = self._reception_time(wall, mono)
        if clock in (ClockSource.GPS, ClockSource.CENTRAL):  # corrected: keep the raw time
            raw = (("system-time", _iso(wall)),)
            measurements = [dataclasses.replace(m, context=m.context + raw) for m in measurements]
        position = None if is_gps else self._position(mono)
        held = Held(device_id, tuple(measurements), tuple(rejects), received_at, clock, position)
        full = self.full_disk
        if full.full and (may_buffer or full.buffer.holds(device_id)):
            # Behind what is already held (order), or never acknowledged while held.
            self._hold_or_refuse(held, may_buffer)
            return
        try:
            await self._append(held, cursor, may_buffer)
        except StoreFull:
            full.enter()
            self._hold_or_refuse(held, may_buffer)
            return
        self._count(held)

    async def _append(self, held: Held, cursor: tuple[str, int] | None, may_buffer: bool) -> None:
        """Append through the writer (which already tries a locked commit again). Stream
        readings (no device resends them) are appended again, bounded, while the store stays
        locked; a message's readings are refused at once (the device resends)."""
        backoff = Backoff(base=0.5, cap=5.0)
        while True:
            try:
                await asyncio.wrap_future(
                    self.unit_store.append(
                        held.device_id,
                        list(held.measurements),
                        list(held.rejects),
                        received_at=held.received_at,
                        clock_source=held.clock_source,
                        position=held.position,
                        cursor=cursor,
                    )
                )
                return
            except Exception as exc:
                if (
                    not may_buffer
                    or not store_connect.is_busy(exc)
                    or backoff.attempt >= STREAM_BUSY_RETRIES
                ):
                    raise
                log.warning("device %s: the store is locked; its readings wait", held.device_id)
                await asyncio.sleep(backoff.next_delay())

    def _hold_or_refuse(self, held: Held, may_buffer: bool) -> None:
        full = self.full_disk
        if not may_buffer:
            self.device_status(held.device_id, "store-full", "disk full: the device will resend")
            raise StoreFull(str(self.unit_store.path))
        if full.hold(held):
            self.device_status(held.device_id, "store-full", "disk full: readings held in memory")
        else:
            self.device_status(
                held.device_id, "buffer-full", "disk full and memory buffer full: readings NOT kept"
            )

    def _count(self, held: Held) -> None:
        state = self.devices.setdefault(held.device_id, DeviceState())
        state.readings += held.readings
        state.rejects += len(held.rejects)
        if held.readings or held.rejects:
            state.last_reading_at = utc_now()

    def _recovered(self) -> None:
        for device_id, (state, detail) in list(self._before_full.items()):
            self.device_status(device_id, state, detail)
        self._before_full.clear()

    def _learn(self, measurements: list[Measurement], wall: float, mono: float) -> bool:
        fix = self._fix
        found = False
        for m in measurements:
            if m.quantity == "latitude" and m.value is not None:
                fix.latitude, found = m.value, True
            elif m.quantity == "longitude" and m.value is not None:
                fix.longitude, found = m.value, True
                fix.position_at = mono
            if found and m.device_time and m.device_time.endswith("Z"):
                gps = datetime.fromisoformat(m.device_time.replace("Z", "+00:00"))
                fix.gps_offset, fix.offset_at = gps.timestamp() - wall, mono
        return found

    def _position(self, mono: float) -> tuple[float, float] | None:
        fix = self._fix
        if fix.position_at is None or mono - fix.position_at > self.POSITION_MAX_AGE:
            return None
        assert fix.latitude is not None and fix.longitude is not None
        return (fix.latitude, fix.longitude)

    def _reception_time(self, wall: float, mono: float) -> tuple[str, ClockSource]:
        fix = self._fix
        fresh = fix.offset_at is not None and mono - fix.offset_at <= self.GPS_TIME_MAX_AGE
        store = self.unit_store
        choice = choose_clock(
            wall,
            system_synced=store.clock_source is ClockSource.SYSTEM,
            gps_offset_s=fix.gps_offset if fresh else None,
            central_offset_s=store.central_offset_s,
            tolerance_s=self.CLOCK_TOLERANCE,
        )
        self._say_clock(choice, fix.gps_offset if fresh else None)
        return _iso(wall + choice.correction_s), choice.source

    def _say_clock(self, choice: ClockChoice, gps_offset: float | None) -> None:
        """Keep the choice in the store (agent state ``clock``) when it changes: the nurse's
        clock tile and ``doctor`` show a disagreement. A background write."""
        self.clock = choice
        said = (str(choice.source), choice.disagreement)
        if said == self._clock_said:
            return
        self._clock_said = said
        if choice.disagreement:
            log.warning(
                "clock: GPS time disagrees with the %s clock by %+.0f s: not used",
                choice.source,
                (gps_offset or 0.0) - choice.correction_s,
            )
        value = {
            "source": str(choice.source),
            "correction_s": round(choice.correction_s, 3),
            "disagreement": choice.disagreement,
            "gps_offset_s": None if gps_offset is None else round(gps_offset, 3),
            "since": utc_now(),
        }
        fut = self.unit_store.submit(lambda db: put_state(db, "clock", value))
        fut.add_done_callback(
            lambda f: (
                None
                if f.cancelled() or f.exception() is None
                else log.warning("clock: state not kept: %s", f.exception())
            )
        )

    def device_facts(self, device_id: str, facts: DeviceFacts) -> None:
        """Keep what the device said about itself (a background write: no reading waits)."""
        values = device_facts.from_event(facts)
        fut = self.unit_store.submit(lambda db: device_facts.save(db, device_id, values))

        def done(f: Future[bool]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("device %s: its facts were not kept: %s", device_id, f.exception())

        fut.add_done_callback(done)

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        current = self.devices.setdefault(device_id, DeviceState())
        if (current.state, current.detail) == (state, detail):
            return
        if state in ("store-full", "buffer-full"):
            self._before_full.setdefault(device_id, (current.state, current.detail))
        elif device_id in self._before_full:  # e.g. disconnected meanwhile: restore that
            self._before_full[device_id] = (state, detail)
        current.state, current.detail, current.since = state, detail, utc_now()
        log.info("device %s: %s %s", device_id, state, detail)
        # For the unit's retained status (birth message; central sees a full disk too).
        states = {k: {"state": v.state, "since": v.since} for k, v in self.devices.items()}
        if self.on_devices is not None:
            self.on_devices(states)
        if self.full_disk.full:  # the store would refuse these: keep them for later
            self.full_disk.note_event(f"device.{state}", detail, device_id)
            return
        self.unit_store.log_event(f"device.{state}", detail, device_id)
        # For `sync status` and the next start.
        self.unit_store.submit(lambda db: put_state(db, "devices", states))


def offset_text(seconds: float) -> str:
    """Seconds as the context value: milliseconds at most, no trailing zeros ("90", "-2.5")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def with_clock_offset(measurements: list[Measurement], offset: float | None) -> list[Measurement]:
    """The measurements with the device's clock offset in effect in their context (only
    those with a device time; none when the offset is zero or unknown)."""
    if not offset:
        return measurements
    pair = ("clock-offset", offset_text(offset))
    return [
        dataclasses.replace(m, context=(*m.context, pair)) if m.device_time else m
        for m in measurements
    ]


def _iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


async def run_device(
    dev: DeviceSettings, spec: DriverSpec, sink: Sink, stop: asyncio.Event
) -> None:
    if dev.listen is not None or (spec.transport == "tcp" and dev.port is None):
        from drivers.transports.mllp_tcp import DEFAULT_PORT, run_mllp

        if spec.decoder is None:
            raise ValueError(f"device {dev.id}: kind {dev.kind} has no stream decoder")
        factory = spec.decoder
        listen = dev.listen or f"127.0.0.1:{DEFAULT_PORT}"
        await run_mllp(dev.id, listen, sink, stop, decoder_factory=lambda: factory(dev.options))
    elif spec.transport in ("serial", "tcp"):
        from drivers.transports.serial_port import SerialParams, run_serial

        if dev.port is None or spec.decoder is None:
            raise ValueError(f"device {dev.id}: kind {dev.kind} needs a port")
        params = SerialParams(
            port=dev.port,
            baudrate=dev.baudrate or spec.serial.baudrate,
            bytesize=dev.bytesize or spec.serial.bytesize,
            parity=dev.parity or spec.serial.parity,
            stopbits=dev.stopbits or spec.serial.stopbits,
        )
        factory = spec.decoder
        await run_serial(
            dev.id,
            params,
            lambda: factory(dev.options),
            sink,
            stop,
            idle_timeout=spec.idle_timeout,
        )
    elif spec.transport == "ble":
        from drivers.transports.ble_gatt import run_ble

        if dev.address is None or spec.gatt is None:
            raise ValueError(f"device {dev.id}: kind {dev.kind} needs an address")
        gatt = spec.gatt
        cursor = _StoreCursor(sink) if isinstance(sink, StoreSink) else None
        await run_ble(dev.id, dev.address, lambda: gatt(dev.options), sink, stop, cursor=cursor)
    else:
        raise NotImplementedError(f"transport {spec.transport} for {dev.kind}")


class _StoreCursor:
    """Reads a BLE device's download cursor (glucose RACP: ``<device>/racp/<meter identity>``)
    from the store. It is written only by the commit of the readings it covers (the sink's
    ``cursor`` argument), never on its own.

    Upgrade: agents before issue 13 kept one cursor per device under the device id. The first
    meter a device meets afterwards (no ``<device>/racp/...`` cursor yet) takes that cursor
    over instead of downloading its whole memory again (those readings have random ids and
    would be stored twice); a meter below it is caught by the reset check."""

    def __init__(self, sink: StoreSink) -> None:
        self._store = sink.unit_store

    def load(self, key: str) -> int | None:
        found = self._store.cursor_load(key)
        device, racp, _ = key.partition("/racp/")
        if found is not None or not racp:
            return found
        prefix = device.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

        def legacy(db: Any) -> int | None:
            taken = db.execute(
                "SELECT 1 FROM device_cursors WHERE device_id LIKE ? ESCAPE '\\' LIMIT 1",
                [prefix + "/racp/%"],
            ).fetchone()
            if taken:
                return None  # another meter took it over already
            row = db.execute(
                "SELECT cursor FROM device_cursors WHERE device_id = ?", [device]
            ).fetchone()
            return None if row is None else int(row[0])

        return self._store.read(legacy)


def _mdc_type(kind: str) -> int | None:
    try:
        return driver(kind).mdc_type
    except KeyError:
        return None


class Supervisor:
    def __init__(
        self, settings: Settings, store: Store, *, acquire: bool = True, sync: bool = True
    ) -> None:
        self.settings = settings
        self.acquire = acquire
        self.store = store
        cfg = settings.store
        self.sink = StoreSink(
            store,
            full_disk=FullDisk(
                store,
                buffer=AcquisitionBuffer(cfg.full_buffer_readings, cfg.full_buffer_kib * 1024),
                reserve_bytes=cfg.reserve_kib * 1024,
                resume_free_bytes=cfg.resume_free_kib * 1024,
            ),
        )
        self.sync_enabled = sync and settings.broker is not None and settings.sync.enabled
        self.sync_daemon: Any = None
        self.loop_lag = LagMonitor()
        # The codec reads device times without a zone in the unit's zone (sync.fhir).
        zone = settings.unit.timezone
        store.submit(lambda db: put_state(db, "unit-timezone", zone))
        self.sink.clock_offsets = {d.id: d.clock_offset.total_seconds() for d in settings.devices}
        if acquire:  # what the configuration says about each device (the FHIR Device)
            configured = [
                (d.id, device_facts.from_config(d.address, _mdc_type(d.kind)))
                for d in settings.devices
            ]
            store.submit(lambda db: [device_facts.save(db, i, v) for i, v in configured])

    async def run(self, stop: asyncio.Event, started: Callable[[], None] | None = None) -> None:
        """Run until ``stop``; ``started()`` once every device and sync task is started."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.loop_lag.run(stop), name="loop-lag")
            tg.create_task(self._heartbeat(stop), name="heartbeat")
            if self.acquire:
                tg.create_task(self.sink.full_disk.run(stop), name="full-disk")
            for dev in self.settings.devices if self.acquire else []:
                if dev.enabled:
                    tg.create_task(self._supervise(dev, stop), name=f"device:{dev.id}")
            if self.acquire and file_sources.wanted(self.settings):  # DICOM, drop folders
                tg.create_task(
                    self._keep(
                        functools.partial(file_sources.run_file_sources, self.store, self.settings),
                        stop,
                        "files",
                    ),
                    name="files",
                )
            if self.sync_enabled:
                from sync.daemon import SyncDaemon

                self.sync_daemon = SyncDaemon(
                    self.store, self.settings, external_writer=not self.acquire
                )
                self.sink.on_devices = self.sync_daemon.devices_changed
                tg.create_task(self._keep(self.sync_daemon.run, stop, "sync"), name="sync")
            if self.settings.console.enabled and self.acquire:
                from edge_agent.console.serve import serve_console

                tg.create_task(
                    self._keep(
                        lambda s: serve_console(self.settings, s, self.store), stop, "console"
                    ),
                    name="console",
                )
            if started is not None:
                await asyncio.sleep(0)  # the tasks take their first step
                started()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Answer ``start``/``status``/the console from this loop (:mod:`heartbeat`)."""
        path = heartbeat.socket_path(self.store.path, "agent" if self.acquire else "sync")
        try:
            await heartbeat.serve(path, self.heartbeat_answer, stop)
        except OSError as exc:  # the screens will say "not running": say why here
            log.error(
                "heartbeat: cannot listen at %s (%s): the screens cannot ask this agent",
                path,
                exc.strerror or exc,
            )

    def heartbeat_answer(self) -> dict[str, Any]:
        """What the screens ask the running agent (no patient data: ids, states, times)."""
        now = datetime.now(UTC)
        kinds = {d.id: d.kind for d in self.settings.devices}
        devices = {}
        for dev_id, st in self.sink.devices.items():
            kind = kinds.get(dev_id)
            spec = DRIVERS.get(kind) if kind is not None else None
            devices[dev_id] = {
                "state": st.state,
                "since": st.since,
                "last_reading_at": st.last_reading_at,
                "silent_since": silent_since(
                    spec.expected_interval if spec else None,
                    st.state,
                    st.since,
                    st.last_reading_at,
                    now,
                ),
            }
        sync = self.sync_daemon
        return {
            "pid": os.getpid(),
            "role": "agent" if self.acquire else "sync",
            "at": _iso(now.timestamp()),
            "loop": self.loop_lag.figures(),
            "devices": devices,
            "sync": None if sync is None else {"connected": bool(sync.connected)},
        }

    async def _supervise(self, dev: DeviceSettings, stop: asyncio.Event) -> None:
        spec = self._buildable(dev)
        if spec is not None:
            await self._keep(lambda s: run_device(dev, spec, self.sink, s), stop, dev.id)

    def _buildable(self, dev: DeviceSettings) -> DriverSpec | None:
        """The device's driver, if it can be built; else the device is marked ``failed`` (it
        needs an operator, restarting cannot help) and the other devices carry on."""
        try:
            problems = device_problems(dev)
            if problems:
                p = problems[0]
                raise ValueError(f"{p.field}: {p.problem} (fix: {p.fix})")
            spec = driver(dev.kind)
            if spec.decoder is not None:
                spec.decoder(dev.options)  # a throwaway: the transport builds its own
            elif spec.gatt is not None:
                spec.gatt(dev.options)
        except Exception as exc:
            log.error("device %s cannot be started: %s", dev.id, exc)
            self.sink.device_status(dev.id, "failed", f"{type(exc).__name__}: {exc}")
            return None
        return spec

    async def _keep(self, job: Any, stop: asyncio.Event, name: str) -> None:
        backoff = Backoff(base=1.0, cap=60.0)
        while not stop.is_set():
            try:
                await job(stop)
                return
            except Exception as exc:  # a bug: log it, keep the unit running
                log.exception("%s crashed; restarting", name)
                self.sink.device_status(name, "crashed", f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next_delay())

    def health(self) -> dict[str, Any]:
        return {
            "devices": {k: vars(v) for k, v in self.sink.devices.items()},
            "disk": self.sink.full_disk.status(),
            "sync": self.sync_daemon.status() if self.sync_daemon is not None else None,
        }
