"""A vital-signs monitor sending HL7 v2 ORU^R01 over MLLP: the sender side, for tests and demo.

:func:`encode_oru` is the pure inverse of ``drivers.protocols.hl7v2.decode_oru`` (IHE PCD-01
style: OBX-3 in MDC or LOINC, OBX-6 in MDC or UCUM). :class:`Hl7MonitorModel` is a
:class:`~drivers.simulators.base.DeviceModel`: every ``period`` seconds it sends one framed
message and waits for the ACK, as original-mode HL7 senders do; without an AA it sends the
same message (same MSH-10) once more, then gives up on it. It has no clock: time is counted in
``output()`` calls of ``interval`` seconds, so a run is reproducible from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Final, Literal

from drivers.protocols.hl7v2 import (
    LOINC,
    MDC,
    MDC_UNIT_FOR_UCUM,
    MDC_UNITS,
    Hl7Error,
    Separators,
    iso_to_hl7_time,
    parse_message,
)
from drivers.protocols.mllp import frame, unframe
from edge_agent.models import Measurement, measurement

__all__ = ["AckRecord", "Hl7MonitorModel", "encode_oru", "format_nm"]

MDS: Final = (69965, "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS")
PCD_01: Final = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
RESP_PER_MIN: Final = 264928  # MDC_DIM_RESP_PER_MIN
MOROCCO: Final = timezone(timedelta(hours=1))  # UTC+1 outside Ramadan (PROTOCOLS.md §5)


def format_nm(value: float) -> str:
    """A float as HL7 NM: plain decimal notation (no exponent), no trailing zeros."""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def encode_oru(
    measurements: Sequence[Measurement],
    control_id: str,
    *,
    separators: Separators | None = None,
    timestamp: str | None = None,
    observed: str | None = None,
    sending_application: str = "EDGESIM",
    equipment: str = "",
    patient_id: str = "",
    version: str = "2.6",
    coding: Literal["mdc", "loinc"] = "mdc",
    units: Literal["mdc", "ucum"] = "mdc",
    mds: bool = False,
) -> bytes:
    """One ORU^R01 message (CR-terminated segments, no MLLP framing).

    ``timestamp`` (ISO) is MSH-7, ``observed`` (ISO) OBR-7; a measurement's ``device_time``
    goes to OBX-14 unless it equals ``observed``. Absent values: ``error`` -> OBX-11 X,
    ``as-text`` -> ST with the ``value-text`` context, otherwise an empty NM. A ``comment``
    context becomes an NTE. ``sending_application`` is an HD written as given (components in
    the message's separators). Measurements whose code we cannot write raise ValueError."""
    s = separators or Separators()
    c, esc = s.component, s.escape_text
    msh = [
        "MSH", s.encoding_characters, sending_application, "", "EDGE-AGENT", "",
        iso_to_hl7_time(timestamp) if timestamp else "", "", c.join(["ORU", "R01", "ORU_R01"]),
        esc(control_id), "P", version, "", "", "", "", "", "UNICODE UTF-8", "", "",
        PCD_01.replace("^", c),
    ]  # fmt: skip
    segments = [s.field.join(msh)]  # MSH-1 is the separator written between MSH and MSH-2
    segments.append(s.field.join(["PID", "", "", c.join([esc(patient_id), "", "", "EDGE", "MR"])
                                  if patient_id else ""]))  # fmt: skip
    obr_time = iso_to_hl7_time(observed) if observed else ""
    monitoring = c.join(["182777000", "monitoring of patient", "SNOMED-CT"])
    segments.append(s.field.join(["OBR", "1", "", "", monitoring, "", "", obr_time]))
    set_id = 0
    if mds:
        set_id += 1
        mds_id = c.join([str(MDS[0]), MDS[1], "MDC"])
        row = ["OBX", str(set_id), "", mds_id, "1.0.0.0", "", "", "", "", "", "", "X"]
        segments.append(s.field.join([*row, "", "", "", "", "", "", esc(equipment)]))
    for m in measurements:
        set_id += 1
        segments.extend(_obx(m, set_id, s, obr_time, equipment, coding, units))
    return "".join(seg + "\r" for seg in segments).encode("utf-8")


def _obx(
    m: Measurement,
    set_id: int,
    s: Separators,
    obr_time: str,
    equipment: str,
    coding: str,
    units: str,
) -> list[str]:
    c, esc = s.component, s.escape_text
    if coding == "mdc" and m.mdc is not None and m.mdc in MDC:
        identifier = c.join([str(m.mdc), MDC[m.mdc][1], "MDC"])
    elif m.loinc is not None and m.loinc in LOINC:
        identifier = c.join([m.loinc, "", "LN"])
    else:
        raise ValueError(f"cannot code {m.quantity} (mdc={m.mdc}, loinc={m.loinc}) in OBX-3")
    context = dict(m.context)
    status = "F"
    if m.value is not None:
        value_type, value = "NM", format_nm(m.value)
    elif m.absent_reason == "as-text":
        value_type, value = "ST", esc(context.get("value-text", ""))
    else:
        value_type, value = "NM", ""
        status = "X" if m.absent_reason == "error" else "F"
    code = MDC_UNIT_FOR_UCUM.get(m.unit)
    if m.quantity == "respiratory_rate" and m.unit == "/min":
        code = RESP_PER_MIN  # breaths, not beats, per minute
    if units == "mdc" and code is not None:
        unit = c.join([str(code), MDC_UNITS[code][0], "MDC"])
    else:
        unit = c.join([esc(m.unit), esc(m.unit), "UCUM"])
    time = iso_to_hl7_time(m.device_time) if m.device_time else ""
    fields = [
        "OBX", str(set_id), value_type, identifier, f"1.1.1.{set_id}", value, unit, "", "", "",
        "", status, "", "", "" if time == obr_time else time, "", "", "", esc(equipment),
    ]  # fmt: skip
    out = [s.field.join(fields).rstrip(s.field)]
    if "comment" in context:
        out.append(s.field.join(["NTE", "1", "", esc(context["comment"])]))
    return out


@dataclass(frozen=True, slots=True)
class AckRecord:
    tick: int  # output() calls made when the ACK was read
    code: str  # MSA-1: AA, AE, AR
    control_id: str  # MSA-2: the message it answers


@dataclass
class Hl7MonitorModel:
    """A bedside monitor pushing vital signs; see the module docstring.

    ``sent`` maps each new message's control id to the measurements it carried (what the
    receiver should decode); ``acks`` lists every ACK read, in order; ``delivered`` the ids
    answered AA, ``resent`` those sent twice, ``failed`` those given up."""

    seed: int = 0
    interval: float = 0.05
    period: float = 5.0
    ack_timeout: float = 10.0
    max_messages: int | None = None
    equipment: str = "0012345678ABCDEF"
    sent: dict[str, list[Measurement]] = field(default_factory=dict)
    acks: list[AckRecord] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    transmissions: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ticks = 0
        self._next_at = 0
        self._pending: tuple[str, bytes] | None = None  # control id, framed message
        self._tries = 0
        self._waited = 0
        self._inbox = bytearray()
        self._start = datetime(2024, 6, 11, 9, 0, tzinfo=MOROCCO)
        self._vitals = {"spo2": 97.0, "pulse_rate": 72.0, "systolic_bp": 120.0,
                        "diastolic_bp": 78.0, "body_temperature": 36.8,
                        "respiratory_rate": 16.0}  # fmt: skip

    def output(self) -> bytes:
        self._ticks += 1
        self._read_acks()
        if self._pending is not None:
            self._waited += 1
            if self._waited * self.interval < self.ack_timeout:
                return b""
            return self._retry_or_give_up()
        if self._ticks < self._next_at:
            return b""
        if self.max_messages is not None and len(self.sent) >= self.max_messages:
            return b""
        control_id = f"MON{self.seed}-{len(self.sent) + 1:05d}"
        now = self._start + timedelta(seconds=round(self._ticks * self.interval))
        stamp = now.isoformat(timespec="seconds")
        cuff = (now - timedelta(seconds=30)).isoformat(timespec="seconds")
        measurements = self._measure(stamp, cuff)
        self.sent[control_id] = measurements
        message = encode_oru(
            measurements, control_id, timestamp=stamp, observed=stamp,
            sending_application=f"EDGESIM^{self.equipment}^EUI-64", equipment=self.equipment,
            patient_id=f"PAT{self._rng.randrange(10000, 99999)}", mds=True,
        )  # fmt: skip
        self._pending = (control_id, frame(message))
        self._tries, self._waited = 1, 0
        self._next_at = self._ticks + max(1, round(self.period / self.interval))
        self.transmissions += 1
        return self._pending[1]

    def receive(self, data: bytes) -> None:
        self._inbox += data

    def _retry_or_give_up(self) -> bytes:
        assert self._pending is not None
        control_id, wire = self._pending
        if self._tries >= 2:
            self.failed.append(control_id)
            self._pending = None
            return b""
        self._tries, self._waited = self._tries + 1, 0
        self.resent.append(control_id)
        self.transmissions += 1
        return wire

    def _read_acks(self) -> None:
        # Replies are read at the next tick, like firmware polling its socket.
        end = self._inbox.rfind(b"\x1c")
        if end < 0:
            return
        complete, self._inbox = bytes(self._inbox[: end + 1]), self._inbox[end + 1 :]
        for body in unframe(complete):
            try:
                message = parse_message(body)
            except Hl7Error:
                continue  # a sender ignores what it cannot read and waits for its timer
            msa = next((seg for seg in message if seg.name == "MSA"), None)
            if msa is None:
                continue
            record = AckRecord(self._ticks, msa.get(1), msa.get(2))
            self.acks.append(record)
            self._on_ack(record)

    def _on_ack(self, ack: AckRecord) -> None:
        if self._pending is None or ack.control_id != self._pending[0]:
            return  # late answer to a message already given up
        if ack.code in ("AA", "CA"):
            self.delivered.append(ack.control_id)
            self._pending = None
        elif ack.code in ("AR", "CR"):
            self.failed.append(ack.control_id)  # refused: resending would not help
            self._pending = None
        else:
            self._waited = round(self.ack_timeout / self.interval)  # AE: resend at once

    def _measure(self, stamp: str, cuff: str) -> list[Measurement]:
        """One round of vitals; the NIBP was taken 30 s before the others (its own OBX-14)."""
        v, rng = self._vitals, self._rng

        def walk(key: str, step: float, low: float, high: float) -> float:
            v[key] = min(high, max(low, v[key] + rng.uniform(-step, step)))
            return v[key]

        spo2 = round(walk("spo2", 1.0, 90, 100))
        pulse = round(walk("pulse_rate", 4.0, 50, 130))
        sys_ = round(walk("systolic_bp", 5.0, 95, 170))
        dia = round(min(walk("diastolic_bp", 4.0, 55, 105), sys_ - 20))
        temp = round(walk("body_temperature", 0.1, 36.0, 38.5), 1)
        resp = round(walk("respiratory_rate", 1.0, 10, 28))
        mean = float(round((sys_ + 2 * dia) / 3))
        return [
            measurement("spo2", float(spo2), device_time=stamp),
            measurement("pulse_rate", float(pulse), device_time=stamp),
            measurement("systolic_bp", float(sys_), device_time=cuff),
            measurement("diastolic_bp", float(dia), device_time=cuff),
            measurement("mean_arterial_pressure", mean, device_time=cuff),
            measurement("body_temperature", temp, device_time=stamp),
            measurement("respiratory_rate", float(resp), device_time=stamp),
        ]
