"""One device model per supported profile, for the BlueZ stand-in. Values come from the
project's own encoders (``drivers.simulators.ble_values``), so the stand-in and the decoders
are checked against the same GSS field layouts."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.simulators import ble_values as enc
from tests.ble_standin.fake_bluez import Characteristic, FakePeripheral, Service

WHEN = (2026, 11, 23, 8, 15, 0)


class _Sender(FakePeripheral):
    """Sends ``values`` on ``char`` once the central subscribes, then (optionally) switches
    off, like cuffs, thermometers and scales after a measurement."""

    def __init__(self, address: str, name: str, service: int, char: int, flags: tuple[str, ...],
                 values: list[bytes], switch_off: bool = True, **kw: Any) -> None:
        super().__init__(address, name, [Service(service, [Characteristic(char, flags)])],
                         service_uuids=[service], **kw)
        self.value_char, self.values, self.switch_off = char, list(values), switch_off
        self.sent: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_subscribe(self, char: Characteristic, enabled: bool) -> None:
        if enabled and str(char.uuid).startswith(f"0000{self.value_char:04x}"):
            task = asyncio.ensure_future(self._send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        await asyncio.sleep(0.01)  # the central finishes subscribing first, as on air
        while self.values:
            value = self.values.pop(0)
            send = self.indicate if "indicate" in self._flags() else self.notify
            if await send(self.value_char, value):
                self.sent.append(value)
            if self.switch_off:
                break
        if self.switch_off:
            await asyncio.sleep(0.02)
            await self.disconnect()

    def _flags(self) -> tuple[str, ...]:
        return tuple(self.services[0].characteristics[0].flags)


def cuff(address: str, readings: list[tuple[int, int, int]]) -> _Sender:
    values = [enc.encode_2a35(s, d, m, when=WHEN, pulse=70) for s, d, m in readings]
    return _Sender(address, "UA-651BLE", 0x1810, 0x2A35, ("indicate",), values)


def thermometer(address: str, celsius: float) -> _Sender:
    return _Sender(address, "Thermo", 0x1809, 0x2A1C, ("indicate",),
                   [enc.encode_2a1c(celsius, site=3)])


def oximeter(address: str) -> _Sender:
    return _Sender(address, "Nonin3230", 0x1822, 0x2A5E, ("indicate",),
                   [enc.encode_2a5e(97, 64, when=WHEN)])


def weight_scale(address: str, kg: float) -> _Sender:
    return _Sender(address, "Scale", 0x181D, 0x2A9D, ("indicate",), [enc.encode_2a9d(kg)])


def body_composition(address: str) -> _Sender:
    return _Sender(address, "BodyComp", 0x181B, 0x2A9C, ("indicate",),
                   [enc.encode_2a9c(22.5, kg=70.0)])


def heart_rate(address: str) -> _Sender:
    return _Sender(address, "HRM", 0x180D, 0x2A37, ("notify",),
                   [enc.encode_2a37(72, rr=(800,))])


class GlucoseMeter(FakePeripheral):
    """A GLS meter with stored records answering RACP requests (write + indicate)."""

    def __init__(self, address: str, records: enc.GlucoseMeterRecords, *,
                 stalled: bool = False) -> None:
        super().__init__(address, "Accu-Chek", [Service(0x1808, [
            Characteristic(0x2A18, ("notify",)),
            Characteristic(0x2A34, ("notify",)),
            Characteristic(0x2A51, ("read",), b"\x00\x00"),
            Characteristic(0x2A52, ("write", "indicate")),
        ])], service_uuids=[0x1808])
        self.records = records
        self.stalled = stalled
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_write(self, char: Characteristic, value: bytes,
                           with_response: bool) -> None:
        if not str(char.uuid).startswith("00002a52"):
            await super().handle_write(char, value, with_response)
            return
        self.requests.append(bytes(value))
        if self.stalled:
            return  # accepts the write, never answers: the procedure stalls
        task = asyncio.ensure_future(self._answer(bytes(value)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: bytes) -> None:
        await asyncio.sleep(0.005)  # the write response goes out first
        for char, value in self.records.handle_racp(request):
            uuid = int(char, 16)
            if char == "2a52":
                await self.indicate(uuid, value)
            else:
                await self.notify(uuid, value)
