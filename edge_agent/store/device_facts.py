"""What each configured device told us about itself, in the store (``device_facts``).

Written by the drivers' shells when a device reports its identity (``drivers.base.DeviceFacts``:
BLE Device Information, HL7 MSH-3/MSH-4 and OBX-18, an ASTM H record) and by the supervisor at
start from the configuration (the BLE address, the IEEE 11073-10101 device specialization of the
device's kind). Read by the outbox with each batch (:func:`sync.outbox.add_context`), so
the codec's FHIR Device carries them. A fact the device does not repeat is kept (NULL never
overwrites); ``updated_at`` moves only when a value changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from sqlite_utils import Database

from drivers.base import DeviceFacts
from edge_agent.clock import utc_now

COLUMNS: Final = ("serial", "system_id", "mac", "manufacturer", "model", "firmware", "mdc_type")
_MAC: Final = re.compile(r"^([0-9A-Fa-f]{2})(?::([0-9A-Fa-f]{2})){5}$")


def from_event(facts: DeviceFacts) -> dict[str, str | int | None]:
    return {
        "serial": facts.serial,
        "system_id": facts.system_id,
        "manufacturer": facts.manufacturer,
        "model": facts.model,
        "firmware": facts.firmware,
    }


def from_config(address: str | None, mdc_type: int | None) -> dict[str, str | int | None]:
    """The configured BLE address (a MAC, not a name: as the PHD IG's EUI-48 text,
    "00-1C-05-FF-E8-74") and the kind's device specialization."""
    mac = address.upper().replace(":", "-") if address and _MAC.match(address) else None
    return {"mac": mac, "mdc_type": mdc_type}


def save(db: Database, device_id: str, values: Mapping[str, str | int | None]) -> bool:
    """Upsert the non-None ``values``; True when something changed."""
    given = {k: v for k, v in values.items() if k in COLUMNS and v is not None}
    if not given:
        return False
    row = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM device_facts WHERE device_id = ?", [device_id]
    ).fetchone()
    if row is not None and all(
        dict(zip(COLUMNS, row, strict=True))[k] == v for k, v in given.items()
    ):
        return False
    cols = ", ".join(given)
    marks = ", ".join("?" for _ in given)
    sets = ", ".join(f"{k} = excluded.{k}" for k in given)
    db.execute(
        f"INSERT INTO device_facts (device_id, {cols}, updated_at) VALUES (?, {marks}, ?) "
        f"ON CONFLICT(device_id) DO UPDATE SET {sets}, updated_at = excluded.updated_at",
        [device_id, *given.values(), utc_now()],
    )
    return True


def load(db: Database, device_id: str) -> dict[str, str | int | None] | None:
    row = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM device_facts WHERE device_id = ?", [device_id]
    ).fetchone()
    return None if row is None else dict(zip(COLUMNS, row, strict=True))
