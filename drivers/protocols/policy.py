"""One policy for what a device should not be able to send. Every decoder applies it.

A number that cannot be true must never be stored as a clinical reading: it could raise an
alert that is not real, or stand in the chart where a real value (and its alert) belongs. So:

1. **RFU flag bits that change a record's layout** (Bluetooth flags octets, glucose context
   extended flags): the fields that follow cannot be located, so the record is rejected
   (``Rejected(raw, "rfu-flags")``; the raw bytes are kept in the store's rejects).
2. **RFU bits in status words** (BP measurement status, PLX status, glucose annunciations,
   Nonin status): ignored; the named bits are flags and the raw bytes stay on the reading.
3. **Reserved enumeration values** are named ``reserved-<n>`` in the context. When the field
   only describes circumstances (temperature site, meal, tester, medication), the reading
   keeps its value. When it decides *what the number is* (the glucose sample type and
   location decide patient sample or control solution, and which LOINC), the number is
   withheld (below) with the flag ``reserved-value``.
4. **Impossible dates and times** (month 13, day 32, hour 24, 30 February, an invalid BCD
   digit, an HL7/ASTM time that does not parse): the record is kept without ``device_time``
   and flagged ``bad-device-time`` (BLE, Nonin DF13, HL7, ASTM). A date-time that is "not
   known" (zeros) just gives no ``device_time``. Exception: for GPS the date-time *is* the
   datum (it sets the clock), so an NMEA RMC with an impossible date is rejected
   (``malformed``).
5. **Physically impossible values** (outside the catalogue's ``limits``: SpO2 above 100 %, a
   negative concentration, weight or rate, a percentage above 100) and **values the device
   itself says are not measurements** (a heart rate with the sensor reporting no skin contact,
   or 0 without contact detection): the number is withheld: ``value=None``,
   ``absent_reason="error"``, the flag (``impossible-value``, ``no-sensor-contact``,
   ``reserved-value``) and the number as sent in ``context`` (``reported-value``), so a
   technician can still see it. Values merely outside ``plausible`` (possible but unlikely for
   a working device) keep their number and are flagged ``implausible`` by the store.

IEEE 11073 special values (NaN, NRes, ±INF) and devices' "missing" codes (Nonin 127/511,
CMS50 0/127/255) were already never numbers; they keep their own absent reasons.
"""

from __future__ import annotations

from dataclasses import replace

from edge_agent.catalogue import known, quantity, to_canonical
from edge_agent.models import Measurement

__all__ = ["checked", "withheld"]


def withheld(m: Measurement, flag: str) -> Measurement:
    """``m`` without its number: absent ``error``, ``flag``, the number kept in the context."""
    if m.value is None:
        return m if flag in m.flags else replace(m, flags=(*m.flags, flag))
    return replace(
        m, value=None, absent_reason="error", flags=(*m.flags, flag),
        context=(*m.context, ("reported-value", format(m.value, "g"))),
    )  # fmt: skip


def checked(m: Measurement) -> Measurement:
    """Rule 5 for one measurement: withheld when outside its quantity's physical ``limits``."""
    if m.value is None or not known(m.quantity):
        return m
    q = quantity(m.quantity)
    if q.limits is None:
        return m
    value = to_canonical(m.value, m.unit, q.ucum, m.quantity)
    if value is None or q.limits[0] <= value <= q.limits[1]:
        return m
    return withheld(m, "impossible-value")
