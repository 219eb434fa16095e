"""BLE discovery for technicians: health devices around and the driver that would read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bleak import BleakScanner
from bleak.exc import BleakError

from drivers.registry import DRIVERS
from edge_agent.errors import DeviceUnavailable

BASE_UUID = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class ScanResult:
    name: str | None
    address: str
    rssi: int
    services: list[str]
    driver: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def driver_for(services: list[str]) -> str | None:
    shorts = {s[4:8].lower() for s in services if s.lower().endswith(BASE_UUID)}
    for kind, spec in DRIVERS.items():
        if shorts & set(spec.ble_services):
            return kind
    return None


async def scan(seconds: float) -> list[ScanResult]:
    try:
        found = await BleakScanner.discover(timeout=seconds, return_adv=True)
    except (BleakError, OSError) as exc:
        raise DeviceUnavailable("ble", explain(exc)) from exc
    results = []
    for device, adv in found.values():
        services = sorted(adv.service_uuids)
        results.append(ScanResult(adv.local_name or device.name, device.address, adv.rssi,
                                  services, driver_for(services)))
    return sorted(results, key=lambda r: -r.rssi)


def explain(exc: BaseException) -> str:
    """What a technician should check, from bleak's error."""
    text = str(exc)
    if "No Bluetooth adapters found" in text or ("hci0" in text and "not found" in text):
        return f"no Bluetooth adapter: plug the USB dongle or check `rfkill list` ({text})"
    if "org.bluez" in text or "ServiceUnknown" in text:
        return f"BlueZ is not running: `systemctl start bluetooth` ({text})"
    if "DBUS" in text.upper() or isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return f"no system D-Bus: the agent needs the system bus for BlueZ ({text})"
    return text
