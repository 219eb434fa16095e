"""Bluetooth SIG health profiles, sans-I/O: one decoder per characteristic value, the Record
Access Control Point (RACP), a glucose-meter download and a plain notify/indicate decoder.

Facts: ``docs/protocols.md`` §2 (GSS field tables), codes §9, FHIR mapping §10.

Every ``decode_XXXX(value) -> list[Event]`` is pure and total:

- Fields are little-endian; optional fields follow in table order when their flag is set.
- A value that is too short (``truncated``), has octets left over (``too-long``), sets RFU
  flag bits (``rfu-flags``: the layout is then unknown) or has an odd RR-interval tail
  (``rr-odd-length``) becomes ``Rejected(value, reason)`` with the whole characteristic value.
- IEEE 11073 special values give a Measurement with ``value=None`` and the PHD IG
  ``absent_reason`` (not-a-number, error, positive-infinity, negative-infinity); so does a
  scale's "measurement unsuccessful" (0xFFFF; ``error`` + flag ``measurement-unsuccessful``).
- Reserved, impossible and RFU values follow :mod:`drivers.protocols.policy`: RFU *values* inside a
  defined field are named ``reserved-<n>``; a temperature type 12 keeps its reading, a glucose
  sample type or location 0/11-14 withholds the number (``reserved-value``: it may be a control
  solution); RFU bits of status words are ignored (the raw value is kept on every
  Measurement); values outside the catalogue's physical ``limits`` are withheld
  (``impossible-value``), and so is a heart rate the sensor reports without skin contact
  (``no-sensor-contact``).
- An impossible Date Time keeps the reading without ``device_time`` and flags
  ``bad-device-time``; an unknown one (year/month/day 0) just has no ``device_time``.

Intermediate Cuff Pressure (0x2A36) decodes to ``cuff_pressure`` flagged ``intermediate``: it
is the live pressure while the cuff inflates, not a reading; Intermediate Temperature (0x2A1E)
likewise decodes to ``body_temperature`` flagged ``intermediate``. A caller may show it as progress
but must not store or forward it; the agent's BLE kinds do not subscribe to 0x2A36 and wait
for the final 0x2A35 indication.
"""

from __future__ import annotations

from typing import Final

from drivers.base import DecoderMisuse, Event, GattWrite, Rejected
from drivers.protocols.ble_health.blood_pressure import (
    BP_STATUS,
    MDC_PULS_RATE_NON_INV,
    decode_2a35,
    decode_2a36,
)
from drivers.protocols.ble_health.body_composition import (
    BodyCompositionAssembler,
    decode_2a9c,
    decode_2a9d,
)
from drivers.protocols.ble_health.common import Context, Decoder
from drivers.protocols.ble_health.device_information import (
    DEVICE_INFORMATION,
    DIS_FIRMWARE,
    DIS_MANUFACTURER,
    DIS_MODEL_NUMBER,
    DIS_SERIAL_NUMBER,
    DIS_SYSTEM_ID,
    device_information,
    meter_identity,
)
from drivers.protocols.ble_health.glucose import (
    CARBOHYDRATES,
    GLUCOSE_MOLAR_LOINC,
    GLUCOSE_STATUS,
    HEALTH,
    MEALS,
    MEDICATIONS,
    SAMPLE_LOCATIONS,
    SAMPLE_TYPES,
    TESTERS,
    decode_2a18,
    decode_2a34,
)
from drivers.protocols.ble_health.glucose_download import GlucoseDownload
from drivers.protocols.ble_health.heart_rate import decode_2a37
from drivers.protocols.ble_health.pulse_oximeter import (
    PLX_MEASUREMENT_STATUS,
    PLX_SENSOR_STATUS,
    decode_2a5e,
    decode_2a5f,
)
from drivers.protocols.ble_health.racp import (
    RACP_FILTER_SEQUENCE,
    RACP_RESPONSES,
    RacpCount,
    RacpOp,
    RacpOperator,
    RacpResponse,
    decode_racp,
    racp_abort,
    racp_count_all,
    racp_count_from,
    racp_report_all,
    racp_report_from,
)
from drivers.protocols.ble_health.thermometer import TEMPERATURE_TYPES, decode_2a1c, decode_2a1e

__all__ = [
    "BP_STATUS",
    "CARBOHYDRATES",
    "DECODERS",
    "DEVICE_INFORMATION",
    "DIS_FIRMWARE",
    "DIS_MANUFACTURER",
    "DIS_MODEL_NUMBER",
    "DIS_SERIAL_NUMBER",
    "DIS_SYSTEM_ID",
    "GLUCOSE_MOLAR_LOINC",
    "GLUCOSE_STATUS",
    "HEALTH",
    "MDC_PULS_RATE_NON_INV",
    "MEALS",
    "MEDICATIONS",
    "PLX_MEASUREMENT_STATUS",
    "PLX_SENSOR_STATUS",
    "RACP_FILTER_SEQUENCE",
    "RACP_RESPONSES",
    "SAMPLE_LOCATIONS",
    "SAMPLE_TYPES",
    "TEMPERATURE_TYPES",
    "TESTERS",
    "BodyCompositionAssembler",
    "Context",
    "Decoder",
    "GlucoseDownload",
    "HealthDecoder",
    "RacpCount",
    "RacpOp",
    "RacpOperator",
    "RacpResponse",
    "decode_2a1c",
    "decode_2a1e",
    "decode_2a5e",
    "decode_2a5f",
    "decode_2a9c",
    "decode_2a9d",
    "decode_2a18",
    "decode_2a34",
    "decode_2a35",
    "decode_2a36",
    "decode_2a37",
    "decode_racp",
    "device_information",
    "meter_identity",
    "racp_abort",
    "racp_count_all",
    "racp_count_from",
    "racp_report_all",
    "racp_report_from",
]


DECODERS: Final[dict[str, Decoder]] = {
    "2a35": decode_2a35,
    "2a36": decode_2a36,
    "2a37": decode_2a37,
    "2a1c": decode_2a1c,
    "2a1e": decode_2a1e,
    "2a18": decode_2a18,
    "2a34": decode_2a34,
    "2a5e": decode_2a5e,
    "2a5f": decode_2a5f,
    "2a9d": decode_2a9d,
    "2a9c": decode_2a9c,
}


# --- GATT decoders ---------------------------------------------------------------------------
class HealthDecoder:
    """Notify/indicate profiles (cuff, thermometer, oximeter, scales, heart rate): every value
    is one complete measurement, decoded by :data:`DECODERS`. Nothing is written and nothing
    is acknowledged: these profiles never emit ``MessageComplete``, so the runtime commits
    their events as they come and a call to :meth:`acknowledge` is a caller bug
    (``DecoderMisuse``)."""

    def __init__(self, characteristics: tuple[str, ...]) -> None:
        unknown = [c for c in characteristics if c not in DECODERS]
        if not characteristics:
            raise DecoderMisuse("HealthDecoder needs at least one characteristic")
        if unknown:
            raise DecoderMisuse(f"no decoder for characteristics {unknown}")
        self.subscriptions: tuple[str, ...] = tuple(characteristics)
        self._body = BodyCompositionAssembler()

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        if characteristic not in self.subscriptions:
            return [Rejected(bytes(value), "unexpected-characteristic")]
        if characteristic == "2a9c":
            return self._body.receive(value)  # joins multiple-packet measurements
        return DECODERS[characteristic](value)

    def flush(self) -> list[Event]:
        """The link dropped: a half-received multiple-packet measurement, flagged."""
        return self._body.flush()

    def writes_to_send(self) -> list[GattWrite]:
        return []

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        raise DecoderMisuse(f"notify/indicate profiles have nothing to acknowledge: {message_id!r}")
