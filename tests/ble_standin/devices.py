"""One device model per supported profile, for the BlueZ stand-in.

Values come from the project's own encoders (``drivers.simulators.ble_values``), so the
stand-in and the decoders are checked against the same GSS field layouts (PROTOCOLS.md §2).
Behaviour follows the devices: a cuff, thermometer, oximeter or scale sends its measurement
once the central subscribes, then switches off; a glucose meter answers RACP requests from
its record memory; a stalled meter accepts a RACP write and never answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from drivers.protocols.ieee11073 import encode_sfloat
from drivers.simulators import ble_values as enc
from tests.ble_standin.fake_bluez import (
    AttError,
    Characteristic,
    FakePeripheral,
    Service,
    uuid128,
)

WHEN = (2026, 11, 23, 8, 15, 0)
Message = list[tuple[int, bytes]]  # one measurement: (characteristic, value), in sending order


class _Model(FakePeripheral):
    """Background sends from hooks (the fake awaits hooks inside D-Bus method replies)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, char: int, value: bytes) -> bool:
        """Indicate or notify, as the characteristic is flagged; False when not subscribed."""
        if "indicate" in self.char(char).flags:
            return await self.indicate(char, value)
        return await self.notify(char, value)

    def power_off(self) -> None:
        """Stop advertising: scans no longer hear it."""
        self.advertising = False

    def power_on(self) -> None:
        self.advertising = True


class HealthDevice(_Model):
    """Holds measurements; sends the next one when the central subscribes to ``trigger`` and,
    with ``switch_off``, disconnects after it (cuffs, thermometers, scales).

    A measurement leaves the memory only once its ``trigger`` value was delivered, as a cuff
    keeps a reading until a collector has taken it.
    """

    def __init__(
        self,
        address: str,
        name: str,
        service: int,
        chars: list[tuple[int, tuple[str, ...]]],
        trigger: int,
        measurements: list[Message],
        *,
        switch_off: bool = True,
        info: dict[int, bytes] | None = None,
    ) -> None:
        table = [Service(service, [Characteristic(c, flags) for c, flags in chars])]
        if info:  # a Device Information Service (0x180A): {0x2A29: b"A&D", 0x2A25: ...}
            table.insert(
                0, Service(0x180A, [Characteristic(c, ("read",), v) for c, v in info.items()])
            )
        super().__init__(address, name, table, service_uuids=[service])
        self.trigger, self.switch_off = trigger, switch_off
        self.pending = list(measurements)
        self.sent: list[tuple[int, bytes]] = []

    async def on_subscribe(self, char: Characteristic, enabled: bool) -> None:
        if enabled and char.uuid == uuid128(self.trigger):
            self.spawn(self._send_all())

    async def _send_all(self) -> None:
        await asyncio.sleep(0.01)  # the central finishes its other subscriptions first
        while self.pending and self.connected:
            delivered = False
            for char, value in self.pending[0]:
                if await self.send(char, value):
                    self.sent.append((char, value))
                    delivered = delivered or char == self.trigger
            if not delivered:
                break
            self.pending.pop(0)
            if self.switch_off:
                break
        if self.switch_off and self.connected:
            await asyncio.sleep(0.01)
            await self.disconnect()


def cuff(
    address: str, readings: list[tuple[int, int, int]], info: dict[int, bytes] | None = None
) -> HealthDevice:
    """Blood pressure (0x1810): cuff pressure notifications (0x2A36) while inflating, then
    the measurement indication (0x2A35); switches off after each measurement (A&D UA-651BLE)."""
    nan = 0x07FF  # SFLOAT NaN: diastolic and MAP are unused in 0x2A36
    messages = [
        [
            (0x2A36, enc.encode_2a35(0, 0, 0, raw_values=(encode_sfloat(p, 0), nan, nan)))
            for p in (160, 120)
        ]
        + [(0x2A35, enc.encode_2a35(s, d, m, when=WHEN, pulse=70))]
        for s, d, m in readings
    ]
    return HealthDevice(
        address,
        "UA-651BLE",
        0x1810,
        [(0x2A35, ("indicate",)), (0x2A36, ("notify",))],
        0x2A35,
        messages,
        info=info,
    )


def thermometer(address: str, *celsius: float) -> HealthDevice:
    """Health thermometer (0x1809/0x2A1C indicate), ear site."""
    return HealthDevice(
        address,
        "Thermo",
        0x1809,
        [(0x2A1C, ("indicate",))],
        0x2A1C,
        [[(0x2A1C, enc.encode_2a1c(c, site=3, when=WHEN))] for c in celsius],
    )


def oximeter(address: str) -> HealthDevice:
    """Pulse oximeter (0x1822): continuous 0x2A5F notifications, then a spot-check 0x2A5E
    indication (Nonin 3230)."""
    continuous = [(0x2A5F, enc.encode_2a5f(s, 64)) for s in (96, 97)]
    return HealthDevice(
        address,
        "Nonin3230",
        0x1822,
        [(0x2A5E, ("indicate",)), (0x2A5F, ("notify",))],
        0x2A5E,
        [[*continuous, (0x2A5E, enc.encode_2a5e(97, 64, when=WHEN))]],
    )


def weight_scale(address: str, kg: float) -> HealthDevice:
    return HealthDevice(
        address,
        "Scale",
        0x181D,
        [(0x2A9D, ("indicate",))],
        0x2A9D,
        [[(0x2A9D, enc.encode_2a9d(kg, when=WHEN))]],
    )


def body_composition(address: str) -> HealthDevice:
    return HealthDevice(
        address,
        "BodyComp",
        0x181B,
        [(0x2A9C, ("indicate",))],
        0x2A9C,
        [[(0x2A9C, enc.encode_2a9c(22.5, kg=70.0))]],
    )


def body_composition_split(address: str, *, lone_half: bool = False) -> HealthDevice:
    """A scale that splits its full measurement into two indications (b12, default MTU);
    ``lone_half``: it switches off after the first one (the second never comes)."""
    first = enc.encode_2a9c(
        22.5,
        "kg",
        (2026, 11, 23, 9, 30, 0),
        2,
        multiple_packet=True,
        basal_metabolism=6500,
        muscle_percentage=38.5,
        muscle_mass=28.1,
        fat_free_mass=54.2,
    )
    second = enc.encode_2a9c(
        22.5,
        "kg",
        multiple_packet=True,
        soft_lean_mass=50.3,
        body_water_mass=39.8,
        impedance=512.3,
        kg=70.0,
        height=172.0,
    )
    values = [(0x2A9C, first)] if lone_half else [(0x2A9C, first), (0x2A9C, second)]
    return HealthDevice(address, "BodyComp", 0x181B, [(0x2A9C, ("indicate",))], 0x2A9C, [values])


def heart_rate(address: str) -> HealthDevice:
    """Heart rate (0x180D/0x2A37 notify): a strap keeps sending while worn."""
    return HealthDevice(
        address,
        "HRM",
        0x180D,
        [(0x2A37, ("notify",))],
        0x2A37,
        [[(0x2A37, enc.encode_2a37(72, rr=(800,)))]],
        switch_off=False,
    )


class GlucoseMeter(_Model):
    """A GLS meter (0x1808): measurement 0x2A18 and context 0x2A34 notifications, RACP 0x2A52
    write + indicate, answering from ``records`` (report all / >= seq, count, abort, with a
    success or no-records-found indication).

    ``switch_off``: after a request answered with records (or a count > 0) the meter disconnects
    and stops advertising until :meth:`power_on` (the next time a patient uses it).
    ``stalled``: accepts RACP writes and never answers them. ``needs_pairing``: refuses RACP
    writes with ATT Insufficient Authentication, as an Accu-Chek Guide does before bonding.
    ``serial`` / ``system_id``: a Device Information Service (0x180A) with Serial Number
    String (0x2A25) and/or System ID (0x2A23); BlueZ before 5.80 hides it from D-Bus clients
    (``FakeBlueZ(claimed_services="hide")``, the default).
    """

    def __init__(
        self,
        address: str,
        records: enc.GlucoseMeterRecords,
        *,
        stalled: bool = False,
        switch_off: bool = False,
        needs_pairing: bool = False,
        serial: str | None = None,
        system_id: bytes | None = None,
    ) -> None:
        services = [
            Service(
                0x1808,
                [
                    Characteristic(0x2A18, ("notify",)),
                    Characteristic(0x2A34, ("notify",)),
                    Characteristic(0x2A51, ("read",), b"\x00\x00"),  # Glucose Feature
                    Characteristic(0x2A52, ("write", "indicate")),
                ],
            )
        ]
        info = [Characteristic(0x2A29, ("read",), b"Roche")]  # Manufacturer Name
        if serial is not None:
            info.append(Characteristic(0x2A25, ("read",), serial.encode()))
        if system_id is not None:
            info.append(Characteristic(0x2A23, ("read",), system_id))
        services.insert(0, Service(0x180A, info))
        super().__init__(address, "Accu-Chek", services, service_uuids=[0x1808])
        self.records, self.stalled, self.switch_off = records, stalled, switch_off
        self.needs_pairing = needs_pairing
        self.requests: list[bytes] = []
        self.answered = asyncio.Event()  # set after each final RACP indication

    async def handle_write(self, char: Characteristic, value: bytes, with_response: bool) -> None:
        if char.uuid != uuid128(0x2A52):
            await super().handle_write(char, value, with_response)
            return
        if self.needs_pairing:
            raise AttError(AttError.INSUFFICIENT_AUTHENTICATION)
        self.requests.append(bytes(value))
        if not self.stalled:
            self.spawn(self._answer(bytes(value)))

    async def _answer(self, request: bytes) -> None:
        await asyncio.sleep(0.005)  # the write response goes out first
        replies = self.records.handle_racp(request)
        for char, value in replies:
            await self.send(int(char, 16), value)
        self.answered.set()
        # Done once it delivered records or counted some; after "no records found" or a count
        # of 0 the central may still ask something (a collector checking for a reset asks for
        # a count, then for all records). A real meter switches off after some idle seconds.
        final = replies[-1][1]
        done = final[-1:] == b"\x01" if final[:1] == b"\x06" else final[2:] != b"\x00\x00"
        if self.switch_off and done:
            self.power_off()
            await asyncio.sleep(0.01)
            await self.disconnect()


def stalled_meter(address: str) -> GlucoseMeter:
    """Accepts the connection and the RACP write, never answers (a hung firmware)."""
    records = enc.GlucoseMeterRecords()
    records.add(100)
    return GlucoseMeter(address, records, stalled=True)
