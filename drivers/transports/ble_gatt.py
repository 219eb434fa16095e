"""BLE transport (bleak): find, connect, subscribe, write, decode, commit; reconnect.

Strategy, one task per configured device:

* Find the device by address, by advertised name, or (no target) by the health service its
  decoder reads, with a service-UUID scan filter. Scans take turns (``scan_lock``): BlueZ runs
  one discovery per D-Bus connection.
* bleak's callbacks only queue ``(characteristic, value)``. One consumer task decodes, commits
  through ``drivers.runtime.dispatch`` (commit, then acknowledge) and performs the writes the
  decoder asks for; values that arrived before a disconnect are still decoded.
* GATT operations on a client are serialized by one lock and bounded by ``op_timeout``. While
  a procedure runs (a glucose RACP download) the device must answer within ``op_timeout``;
  if it does not, the procedure is aborted, reported as ``stalled`` and the link dropped. The
  download cursor is saved only after the acknowledge that follows the commit, so it never
  moves past what is stored.
* Cuffs, thermometers and meters switch off after each measurement: a disconnect is normal
  (``waiting``), not an error. Anything else bleak, BlueZ or D-Bus raises is turned into a
  status at one boundary (``_attempt``) and the device is looked for again after an
  exponential backoff with jitter.

The device's own time stays in each Measurement (``device_time``); the store stamps the
reception time when it commits.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.base import GattDecoder, Sink
from drivers.runtime import dispatch
from drivers.transports.ble_scan import explain_ble_error, scan_lock, short_uuid, uuid128
from edge_agent.backoff import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

CursorLoad = Callable[[], int | None]
CursorSave = Callable[[int], None]
DecoderFactory = Callable[[int | None], GattDecoder]

# Which service carries each characteristic the decoders read (GATT assigned numbers), for a
# device configured without an address: it is found by the service it advertises.
SERVICE_OF: Final[dict[str, str]] = {
    "2a35": "1810", "2a36": "1810", "2a1c": "1809", "2a1e": "1809", "2a18": "1808",
    "2a34": "1808", "2a52": "1808", "2a5e": "1822", "2a5f": "1822", "2a9d": "181d",
    "2a9c": "181b", "2a37": "180d",
}
_ADDRESS = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")  # or macOS
_BLE_ERRORS = (BleakError, OSError, EOFError, TimeoutError)


@runtime_checkable
class Procedure(Protocol):
    """A decoder that asks the device for its data (GlucoseDownload: RACP)."""

    active: bool  # a request is out and the device owes an answer

    def start(self) -> None: ...

    def abort(self) -> None: ...


class Cursor(Protocol):
    """Where a device's download cursor is persisted (the store)."""

    def load(self) -> int | None: ...

    def save(self, value: int) -> None: ...


class _Stalled(Exception):
    """The device accepted a request but never answered it."""


class _Misconfigured(Exception):
    """The device is not what its driver kind expects."""


async def run(
    address_or_name: str | None,
    decoder_factory: DecoderFactory,
    sink: Sink,
    device_id: str,
    *,
    stop: asyncio.Event,
    scan_timeout: float = 10.0,
    op_timeout: float = 30.0,
    backoff: Backoff | None = None,
    cursor_load: CursorLoad | None = None,
    cursor_save: CursorSave | None = None,
    services: Sequence[str] = (),
) -> None:
    """Read one BLE device until ``stop`` is set. Device trouble never raises: it becomes a
    ``sink.device_status`` and a later retry.

    ``address_or_name``: a MAC address, an advertised name, or None/"" for the first device
    advertising ``services`` (16-bit UUIDs; default: the services of the decoder's
    characteristics). ``decoder_factory(cursor)`` gets the persisted cursor (``cursor_load``)
    on every connection. ``op_timeout`` bounds the connect, each GATT operation and each wait
    for a procedure's next answer.
    """
    backoff = backoff or Backoff(base=1.0, cap=15.0)
    while not stop.is_set():
        if await _attempt(address_or_name or None, decoder_factory, sink, device_id, stop,
                          scan_timeout, op_timeout, cursor_load, cursor_save, services):
            backoff.reset()
        await _unless_stopped(asyncio.sleep(backoff.next_delay()), stop)
    sink.device_status(device_id, "stopped")


async def run_ble(
    device_id: str,
    address: str,
    decoder_factory: DecoderFactory,
    sink: Sink,
    stop: asyncio.Event,
    *,
    cursor: Cursor | None = None,
    scan_timeout: float = 10.0,
    op_timeout: float = 30.0,
    backoff: Backoff | None = None,
) -> None:
    """:func:`run` with the cursor as one object (the supervisor's store cursor)."""
    await run(address, decoder_factory, sink, device_id, stop=stop, scan_timeout=scan_timeout,
              op_timeout=op_timeout, backoff=backoff,
              cursor_load=cursor.load if cursor is not None else None,
              cursor_save=cursor.save if cursor is not None else None)


async def _attempt(
    target: str | None,
    decoder_factory: DecoderFactory,
    sink: Sink,
    device_id: str,
    stop: asyncio.Event,
    scan_timeout: float,
    op_timeout: float,
    cursor_load: CursorLoad | None,
    cursor_save: CursorSave | None,
    services: Sequence[str],
) -> bool:
    """One find-connect-serve cycle; the boundary where errors become statuses. True when the
    device was served (connected), to reset the backoff."""
    try:
        start = await asyncio.to_thread(cursor_load) if cursor_load is not None else None
        decoder = decoder_factory(start)
        sink.device_status(device_id, "scanning", target or "any device with its service")
        device = await _find(target, decoder, services, scan_timeout, stop)
        if device is None:
            if not stop.is_set():
                sink.device_status(device_id, "waiting", "not heard: out of range or switched off")
            return False
        link = _Link(device, decoder, sink, device_id, stop, op_timeout, cursor_save)
        await link.serve()
    except _Stalled as exc:
        sink.device_status(device_id, "stalled", str(exc))
    except _Misconfigured as exc:
        sink.device_status(device_id, "misconfigured", str(exc))
    except _BLE_ERRORS as exc:
        log.debug("device %s: %r", device_id, exc)
        sink.device_status(device_id, "unavailable", explain_ble_error(exc))
    else:
        return True
    return False


async def _find(
    target: str | None,
    decoder: GattDecoder,
    services: Sequence[str],
    scan_timeout: float,
    stop: asyncio.Event,
) -> BLEDevice | None:
    wanted = [uuid128(s) for s in services or
              sorted({SERVICE_OF[c] for c in decoder.subscriptions if c in SERVICE_OF})]

    def match(device: BLEDevice, adv: AdvertisementData) -> bool:
        if target is None:
            return bool(set(wanted) & {u.lower() for u in adv.service_uuids})
        if _ADDRESS.match(target):
            return device.address.lower() == target.lower()
        return target in (adv.local_name, device.name)

    async def find() -> BLEDevice | None:
        async with scan_lock():
            if target is None:  # let BlueZ filter: only health devices wake us up
                return await BleakScanner.find_device_by_filter(
                    match, timeout=scan_timeout, service_uuids=wanted)
            # No service filter: some devices advertise only a name or manufacturer data.
            return await BleakScanner.find_device_by_filter(match, timeout=scan_timeout)

    return await _unless_stopped(find(), stop)


async def _unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``aw``'s result, or None once ``stop`` is set first (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # let bleak clean up (stop discovery, cancel Connect)
    return None if task.cancelled() else task.result()


class _Link:
    """One connection: subscribe, start the decoder's procedure, consume values until the
    device goes away, ``stop`` is set or a procedure stalls."""

    def __init__(self, device: BLEDevice, decoder: GattDecoder, sink: Sink, device_id: str,
                 stop: asyncio.Event, op_timeout: float, cursor_save: CursorSave | None) -> None:
        self.device, self.decoder, self.sink, self.device_id = device, decoder, sink, device_id
        self.stop, self.op_timeout, self.cursor_save = stop, op_timeout, cursor_save
        self.values: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()  # None: end
        self.gone = asyncio.Event()
        self.lock = asyncio.Lock()  # one GATT operation at a time on this client
        self.client = BleakClient(device, disconnected_callback=self._on_gone,
                                  timeout=op_timeout)
        self.label = f"{device.address} ({device.name})" if device.name else device.address

    def _on_gone(self, _client: BleakClient) -> None:
        self.gone.set()

    def _on_value(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        # bleak's callback: queue only; decoding and the commit happen in the consumer task.
        self.values.put_nowait((short_uuid(char.uuid), bytes(data)))

    async def serve(self) -> None:
        if await _unless_stopped(self._connect(), self.stop) is None:
            return
        consumer: asyncio.Task[None] | None = None
        try:
            self.sink.device_status(self.device_id, "connected", self.label)
            try:
                await self._subscribe()
                if isinstance(self.decoder, Procedure):
                    self.decoder.start()
                await self._send_writes()
                consumer = asyncio.create_task(self._consume())
                await self._until_done(consumer)
            except (BleakError, EOFError) as exc:
                if not self.gone.is_set():
                    raise
                log.debug("device %s went away during setup: %r", self.device_id, exc)
            finally:
                self.values.put_nowait(None)  # the consumer decodes what arrived, then ends
                if consumer is None:
                    consumer = asyncio.create_task(self._consume())
                await consumer
        finally:
            await self._disconnect()
        if not self.stop.is_set():
            self.sink.device_status(self.device_id, "waiting", self._why_gone())

    async def _connect(self) -> bool:
        await self.client.connect()
        return True

    async def _disconnect(self) -> None:
        try:
            async with asyncio.timeout(self.op_timeout):
                await self.client.disconnect()
        except _BLE_ERRORS as exc:  # gone already: nothing left to close
            log.debug("device %s: disconnect: %r", self.device_id, exc)

    def _why_gone(self) -> str:
        if isinstance(self.decoder, Procedure) and self.decoder.active:
            return "device disconnected during the transfer; it will be asked again"
        return "device switched off after measurement"

    async def _gatt(self, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        async with self.lock:
            try:
                async with asyncio.timeout(self.op_timeout):
                    await op()
            except TimeoutError:
                raise _Stalled(f"{what}: no answer within {self.op_timeout:g} s") from None

    async def _subscribe(self) -> None:
        # Devices expose a subset (an oximeter may have spot-check or continuous only).
        present = [c for c in self.decoder.subscriptions
                   if self.client.services.get_characteristic(uuid128(c)) is not None]
        if not present:
            wanted = ", ".join(self.decoder.subscriptions)
            raise _Misconfigured(f"none of the characteristics {wanted} is on the device: "
                                 "is the driver kind right?")
        for char in present:  # start_notify enables notifications or indications as flagged
            await self._gatt(f"subscribe to {char}",
                             partial(self.client.start_notify, uuid128(char), self._on_value))

    async def _send_writes(self) -> None:
        for write in self.decoder.writes_to_send():
            await self._gatt(f"write {write.characteristic}", partial(
                self.client.write_gatt_char, uuid128(write.characteristic), write.value,
                response=write.with_response))

    async def _until_done(self, consumer: asyncio.Task[None]) -> None:
        waits = {asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(self.stop.wait())}
        try:
            await asyncio.wait({consumer, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if consumer.done() and isinstance(consumer.exception(), _Stalled):
            await self._abort()

    async def _abort(self) -> None:
        """Tell the device to abandon the procedure (best effort: it may be hung)."""
        if isinstance(self.decoder, Procedure) and not self.gone.is_set():
            self.decoder.abort()
            try:
                await self._send_writes()
            except (_Stalled, *_BLE_ERRORS) as exc:
                log.debug("device %s: abort not sent: %r", self.device_id, exc)

    async def _consume(self) -> None:
        while True:
            busy = isinstance(self.decoder, Procedure) and self.decoder.active
            try:
                async with asyncio.timeout(self.op_timeout if busy else None):
                    item = await self.values.get()
            except TimeoutError:
                raise _Stalled(f"the device accepted the request but sent nothing for "
                               f"{self.op_timeout:g} s; procedure aborted, cursor kept at "
                               f"{_cursor(self.decoder)}") from None
            if item is None:
                return
            await self._deliver(*item)

    async def _deliver(self, char: str, value: bytes) -> None:
        before = _cursor(self.decoder)
        events = self.decoder.receive_value(char, value)
        infos = await dispatch(self.device_id, events, self.sink, self.decoder)
        for info in infos:
            # The key only: some facts carry clinical context (a glucose record's meal,
            # medication), which stays out of logs.
            log.debug("device %s: device fact %s", self.device_id, info.key)
        after = _cursor(self.decoder)
        # dispatch has committed and acknowledged: only now may the cursor move.
        if self.cursor_save is not None and after is not None and after != before:
            await asyncio.to_thread(self.cursor_save, after)
        try:
            await self._send_writes()
        except (BleakError, EOFError):
            if not self.gone.is_set():
                raise


def _cursor(decoder: GattDecoder) -> int | None:
    value = getattr(decoder, "last_seq", None)  # GlucoseDownload's cursor
    return value if isinstance(value, int) else None
