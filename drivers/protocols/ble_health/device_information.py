"""Device Information 0x180A: who the meter is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from drivers.base import (
    DeviceFacts,
    eui64,
    fact,
)

# --- Device Information 0x180A: who the meter is ---------------------------------------------
DIS_SERIAL_NUMBER: Final = "2a25"  # UTF-8 string
DIS_SYSTEM_ID: Final = "2a23"  # uint40 manufacturer identifier + uint24 OUI
DIS_MANUFACTURER: Final = "2a29"  # UTF-8 string
DIS_MODEL_NUMBER: Final = "2a24"  # UTF-8 string
DIS_FIRMWARE: Final = "2a26"  # UTF-8 string
# The Device Information characteristics read from every BLE device that exposes them.
DEVICE_INFORMATION: Final = (
    DIS_SERIAL_NUMBER,
    DIS_SYSTEM_ID,
    DIS_MANUFACTURER,
    DIS_MODEL_NUMBER,
    DIS_FIRMWARE,
)


def device_information(values: Mapping[str, bytes]) -> DeviceFacts:
    """A device's Device Information Service values (characteristic -> bytes read) as its
    facts; absent, empty, padding-only or all-zero values are none."""
    return DeviceFacts(
        serial=fact(values.get(DIS_SERIAL_NUMBER)),
        system_id=eui64(values.get(DIS_SYSTEM_ID)),
        manufacturer=fact(values.get(DIS_MANUFACTURER)),
        model=fact(values.get(DIS_MODEL_NUMBER)),
        firmware=fact(values.get(DIS_FIRMWARE)),
    )


def meter_identity(serial_number: bytes | None, system_id: bytes | None) -> str | None:
    """A meter's identity from its Device Information values (None: not exposed), or None
    when it gives neither (an empty or all-zero value counts as none)."""
    parts = []
    serial = (serial_number or b"").decode("utf-8", "replace").strip("\x00 \t\r\n")
    if serial:
        parts.append(f"serial={serial}")
    if system_id and any(system_id):
        parts.append(f"system-id={bytes(system_id).hex()}")
    return ",".join(parts) or None
