"""BLE discovery for technicians (``edge-agent ble scan``), and the one translation of the
Bluetooth stack's failures into what a technician should check.

A scan lists every device heard (not only health devices: a cuff that advertises only
manufacturer data must still show up) with the driver kind that would read it, from the
health service UUIDs it advertises.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Final

from bleak import BleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from edge_agent.errors import DeviceUnavailable

BASE_UUID: Final = "-0000-1000-8000-00805f9b34fb"

# GATT assigned numbers (PROTOCOLS.md §2) -> the driver kind that reads the service.
HEALTH_SERVICES: Final[dict[str, str]] = {
    "1810": "ble-blood-pressure",
    "1809": "ble-thermometer",
    "1808": "ble-glucose",
    "1822": "ble-pulse-oximeter",
    "181d": "ble-weight-scale",
    "181b": "ble-body-composition",
    "180d": "ble-heart-rate",
}

_NOT_AVAILABLE: Final = {
    BleakBluetoothNotAvailableReason.NO_BLUETOOTH: (
        "no Bluetooth adapter: plug in the USB dongle, then check `rfkill list`"
    ),
    BleakBluetoothNotAvailableReason.POWERED_OFF: (
        "the Bluetooth adapter is off: `rfkill unblock bluetooth` and `bluetoothctl power on`"
    ),
    BleakBluetoothNotAvailableReason.NO_BLE_CENTRAL_ROLE: (
        "the Bluetooth adapter does not support Bluetooth LE: use a 4.0+ dongle"
    ),
}
_NEEDS_PAIRING: Final = {
    BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,
    BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,
    BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION_KEY_SIZE,
    BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHORIZATION,
}


def uuid128(short: str) -> str:
    """'2a35' -> the 128-bit form bleak uses."""
    return f"0000{short.lower()}{BASE_UUID}"


def short_uuid(uuid: str) -> str:
    """A Bluetooth SIG UUID -> its 4 hex digits; any other UUID unchanged (lower case)."""
    uuid = uuid.lower()
    return uuid[4:8] if uuid.startswith("0000") and uuid.endswith(BASE_UUID) else uuid


@dataclass(frozen=True)
class ScanResult:
    name: str | None
    address: str
    rssi: int
    services: list[str]  # 128-bit UUIDs as advertised
    driver: str | None  # the driver kind that reads it, None for a non-health device

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def driver_for(services: list[str]) -> str | None:
    for uuid in services:
        kind = HEALTH_SERVICES.get(short_uuid(uuid))
        if kind is not None:
            return kind
    return None


# BlueZ runs one discovery per D-Bus connection and bleak shares one connection per event
# loop, so a second concurrent scan fails with org.bluez.Error.InProgress: scans take turns.
_scan_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def scan_lock() -> asyncio.Lock:
    """The running loop's scan lock (asyncio locks must not cross event loops)."""
    return _scan_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def scan(seconds: float) -> list[ScanResult]:
    """Everything heard in ``seconds``, strongest first. Raises DeviceUnavailable("ble", why)
    when the Bluetooth stack itself is missing (no adapter, BlueZ or D-Bus)."""
    try:
        async with scan_lock():
            found = await BleakScanner.discover(timeout=seconds, return_adv=True)
    except (BleakError, OSError, EOFError) as exc:
        raise DeviceUnavailable("ble", explain_ble_error(exc)) from exc
    results = []
    for device, adv in found.values():
        services = sorted(adv.service_uuids)
        results.append(
            ScanResult(
                adv.local_name or device.name,
                device.address,
                adv.rssi,
                services,
                driver_for(services),
            )
        )
    return sorted(results, key=lambda r: (-r.rssi, r.address))


def explain_ble_error(exc: BaseException) -> str:
    """What a technician should check, from an error of bleak, BlueZ or the D-Bus link."""
    if isinstance(exc, BleakBluetoothNotAvailableError):
        hint = _NOT_AVAILABLE.get(exc.reason)
        if hint is None:  # DENIED_BY_*: the D-Bus policy refused us
            hint = (
                "not allowed to use BlueZ: run the agent as a user that the D-Bus policy "
                "/etc/dbus-1/system.d/bluetooth.conf allows (group bluetooth)"
            )
        return f"{hint} ({exc.args[0]})"
    if isinstance(exc, BleakDBusError):
        if exc.dbus_error in (
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ):
            return "BlueZ is not running: install the bluez package and `systemctl start bluetooth`"
        if exc.dbus_error == "org.freedesktop.DBus.Error.AccessDenied":
            return (
                "not allowed to use BlueZ: check the D-Bus policy "
                f"/etc/dbus-1/system.d/bluetooth.conf ({exc.dbus_error_details})"
            )
        if (
            exc.dbus_error
            in (
                "org.bluez.Error.NotPermitted",
                "org.bluez.Error.NotAuthorized",
                "org.bluez.Error.AuthenticationFailed",
            )
            and "pair" in (exc.dbus_error_details or exc.dbus_error).lower()
        ):
            # BlueZ turns ATT Insufficient Authentication/Encryption into "Not paired".
            return (
                "the device requires pairing: pair it once with `bluetoothctl` "
                f"(pair, trust), then retry ({exc.dbus_error_details})"
            )
        if exc.dbus_error == "org.bluez.Error.NotReady":
            return _NOT_AVAILABLE[BleakBluetoothNotAvailableReason.POWERED_OFF]
        return f"BlueZ refused: {exc.dbus_error} {exc.dbus_error_details or ''}".rstrip()
    if isinstance(exc, BleakGATTProtocolError):
        if exc.code in _NEEDS_PAIRING:
            return (
                f"the device requires pairing: pair it once with `bluetoothctl` "
                f"(pair, trust), then retry ({exc.code.name})"
            )
        return f"the device answered with an ATT error: {exc.code.name}"
    if isinstance(exc, BleakCharacteristicNotFoundError):
        return f"the device lacks an expected characteristic ({exc}): is the driver kind right?"
    if isinstance(exc, BleakDeviceNotFoundError):
        return "device not found: out of range, switched off, or not advertising"
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError, PermissionError)):
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
        return (
            f"no system D-Bus at {address}: the agent needs the system bus to reach BlueZ "
            f"(`systemctl status dbus`) ({type(exc).__name__})"
        )
    if isinstance(exc, EOFError):
        return "the D-Bus connection to BlueZ closed (was bluetoothd restarted?)"
    if isinstance(exc, TimeoutError):
        return "no answer in time: device out of range or switched off"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
