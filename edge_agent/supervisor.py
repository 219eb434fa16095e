"""Runs the unit's drivers and the sync daemon in one asyncio TaskGroup, restarting what fails.

Each device gets a supervised task: a driver that crashes (a bug, not a device problem: those
are handled inside the transports) is logged, marked ``crashed`` in the health snapshot and
restarted with backoff; the others carry on. Acquisition never waits for the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Rejected, Sink
from drivers.registry import DriverSpec, driver
from drivers.transports.backoff import Backoff
from edge_agent.models import Measurement
from edge_agent.settings import DeviceSettings, Settings
from edge_agent.store import Store, utc_now

log = logging.getLogger(__name__)


@dataclass
class DeviceState:
    state: str = "starting"
    detail: str = ""
    since: str = field(default_factory=utc_now)
    readings: int = 0
    rejects: int = 0


class StoreSink(Sink):
    """The drivers' sink: commit through the store's single writer, keep device health."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.devices: dict[str, DeviceState] = {}

    async def store(
        self, device_id: str, measurements: list[Measurement], rejects: list[Rejected]
    ) -> None:
        await asyncio.wrap_future(self._store.append(device_id, measurements, rejects))
        state = self.devices.setdefault(device_id, DeviceState())
        state.readings += len(measurements)
        state.rejects += len(rejects)

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        current = self.devices.setdefault(device_id, DeviceState())
        if (current.state, current.detail) == (state, detail):
            return
        current.state, current.detail, current.since = state, detail, utc_now()
        log.info("device %s: %s %s", device_id, state, detail)
        self._store.log_event(f"device.{state}", detail, device_id)


async def run_device(
    dev: DeviceSettings, spec: DriverSpec, sink: Sink, stop: asyncio.Event
) -> None:
    if spec.transport == "serial":
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
        await run_serial(dev.id, params, lambda: factory(dev.options), sink, stop)
    else:
        raise NotImplementedError(f"transport {spec.transport} for {dev.kind}")


class Supervisor:
    def __init__(self, settings: Settings, store: Store, *, sync: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.sink = StoreSink(store)
        self.sync_enabled = sync and settings.broker is not None and settings.sync.enabled
        self.sync_daemon: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for dev in self.settings.devices:
                if dev.enabled:
                    tg.create_task(self._supervise(dev, stop), name=f"device:{dev.id}")
            if self.sync_enabled:
                from sync.daemon import SyncDaemon

                self.sync_daemon = SyncDaemon(self.store, self.settings)
                tg.create_task(self._keep(self.sync_daemon.run, stop, "sync"), name="sync")

    async def _supervise(self, dev: DeviceSettings, stop: asyncio.Event) -> None:
        spec = driver(dev.kind)
        await self._keep(lambda s: run_device(dev, spec, self.sink, s), stop, dev.id)

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
            "sync": self.sync_daemon.status() if self.sync_daemon is not None else None,
        }
