"""NMEA 0183 GPS sentences (GGA, RMC), sans-I/O: the van's position and a GPS time source.

Facts: ``shared/PROTOCOLS.md`` §7. ``$<talker><type>,fields*hh<CR><LF>``, at most 82
characters; the checksum is the XOR of every character between ``$`` and ``*``. Talkers GP,
GN, GL, GA, GB, BD. Fields are read by position, never by count (NMEA 4.1 adds RMC fields).

- Positions only from valid fixes (GGA quality > 0, RMC status A): ``latitude`` and
  ``longitude`` in decimal degrees (negative south/west), ``altitude`` in metres (GGA).
- RMC with a valid fix carries date and time: ``device_time`` in UTC with ``Z`` and
  ``DeviceInfo("gps-time", ...)``, which the agent uses as a clock source. GGA has no date:
  its time goes into ``context`` as ``utc_time``, never into ``device_time``.
- No fix: ``DeviceInfo("gps-fix", "none")`` when the state changes (and "ok" when it is back).
- Bad checksum, over-long or malformed sentences: ``Rejected(raw, reason)``; decoding resumes
  at the next ``$``. Other sentence types (GSV, GSA, VTG, ...) are valid but not used: they
  are ignored, not rejected.
"""

from __future__ import annotations

from typing import Final

from drivers.base import DeviceInfo, Event, PassiveDecoder, Rejected
from edge_agent.models import measurement

MAX_SENTENCE: Final = 82
LIMIT: Final = MAX_SENTENCE + 2  # with CR LF
JUNK: Final = 256  # noise is rejected in pieces of at most this many octets
TALKERS: Final = frozenset({"GP", "GN", "GL", "GA", "GB", "BD"})


def checksum(body: bytes) -> int:
    value = 0
    for octet in body:
        value ^= octet
    return value


def _degrees(value: str, hemisphere: str, width: int) -> float | None:
    """``ddmm.mmmm`` (``dddmm.mmmm`` for longitude) -> signed decimal degrees."""
    if len(value) < width + 2 or hemisphere not in ("N", "S", "E", "W"):
        return None
    try:
        degrees = int(value[:width])
        minutes = float(value[width:])
    except ValueError:
        return None
    if minutes >= 60:
        return None
    result = degrees + minutes / 60.0
    return -result if hemisphere in ("S", "W") else result


def _hhmmss(value: str) -> str | None:
    if len(value) < 6 or not value[:6].isdigit():
        return None
    hh, mm, ss = int(value[0:2]), int(value[2:4]), int(value[4:6])
    if hh > 23 or mm > 59 or ss > 60:
        return None
    return f"{hh:02d}:{mm:02d}:{value[4:]}"


class NmeaDecoder(PassiveDecoder):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._fix = "unknown"

    def receive_data(self, data: bytes) -> list[Event]:
        # Every decision needs at most LIMIT octets past a '$' (or JUNK octets of noise), and
        # waits for them: the same octets give the same events however they were split.
        events: list[Event] = []
        self._buf += data
        eof = not data
        buf = self._buf
        while buf:
            start = buf.find(b"$")
            if start != 0:
                if start == -1 and len(buf) < JUNK and not eof:
                    return events  # maybe the start of a sentence's noise; wait
                cut = len(buf) if start == -1 else start
                cut = min(cut, JUNK)
                junk = bytes(buf[:cut])
                del buf[:cut]
                if junk.strip(b"\r\n"):  # CR/LF between sentences are framing, not noise
                    events.append(Rejected(junk, "no-sentence"))
                continue
            newline = buf.find(b"\n", 0, LIMIT)
            again = buf.find(b"$", 1, LIMIT)
            if again != -1 and (newline == -1 or again < newline):
                events.append(Rejected(bytes(buf[:again]), "truncated"))
                del buf[:again]
                continue
            if newline == -1:
                if len(buf) >= LIMIT:
                    events.append(Rejected(bytes(buf[:LIMIT]), "too-long"))
                    del buf[:LIMIT]
                    continue
                if eof:
                    events.append(Rejected(bytes(buf), "truncated"))
                    buf.clear()
                return events
            line = bytes(buf[: newline + 1])
            del buf[: newline + 1]
            events.extend(self._sentence(line))
        return events

    def _sentence(self, raw: bytes) -> list[Event]:
        text = raw.rstrip(b"\r\n")
        if len(text) > MAX_SENTENCE:
            return [Rejected(raw, "too-long")]
        star = text.rfind(b"*")
        if star == -1 or len(text) - star != 3:
            return [Rejected(raw, "no-checksum")]
        try:
            expected = int(text[star + 1 :], 16)
            body = text[1:star].decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return [Rejected(raw, "malformed")]
        if checksum(text[1:star]) != expected:
            return [Rejected(raw, "checksum")]
        fields = body.split(",")
        address = fields[0]
        if len(address) != 5 or address[:2] not in TALKERS:
            return []  # proprietary ($P...) or other talkers: valid, not ours
        kind = address[2:]
        if kind == "GGA":
            return self._gga(fields, raw)
        if kind == "RMC":
            return self._rmc(fields, raw)
        return []

    def _fix_state(self, events: list[Event], ok: bool) -> None:
        state = "ok" if ok else "none"
        if state != self._fix:
            self._fix = state
            events.append(DeviceInfo("gps-fix", state))

    def _gga(self, f: list[str], raw: bytes) -> list[Event]:
        events: list[Event] = []
        if len(f) < 10:
            return [Rejected(raw, "malformed")]
        quality = int(f[6]) if f[6].isdigit() else 0
        if quality == 0:
            self._fix_state(events, False)
            return events
        lat, lon = _degrees(f[2], f[3], 2), _degrees(f[4], f[5], 3)
        utc = _hhmmss(f[1])
        if lat is None or lon is None:
            return [Rejected(raw, "malformed")]
        self._fix_state(events, True)
        context: tuple[tuple[str, str], ...] = (("fix_quality", str(quality)),)
        if utc:
            context += (("utc_time", utc),)
        if f[7].isdigit():
            context += (("satellites", str(int(f[7]))),)
        events.append(measurement("latitude", lat, raw=raw, context=context))
        events.append(measurement("longitude", lon, raw=raw, context=context))
        try:
            if f[9] and f[10] in ("M", ""):
                events.append(measurement("altitude", float(f[9]), raw=raw, context=context))
        except (ValueError, IndexError):
            pass
        return events

    def _rmc(self, f: list[str], raw: bytes) -> list[Event]:
        events: list[Event] = []
        if len(f) < 10:
            return [Rejected(raw, "malformed")]
        if f[2] != "A" or (len(f) > 12 and f[12] == "N"):
            self._fix_state(events, False)
            return events
        lat, lon = _degrees(f[3], f[4], 2), _degrees(f[5], f[6], 3)
        utc, date = _hhmmss(f[1]), f[9]
        if lat is None or lon is None or utc is None or len(date) != 6 or not date.isdigit():
            return [Rejected(raw, "malformed")]
        day, month, yy = int(date[0:2]), int(date[2:4]), int(date[4:6])
        if not (1 <= day <= 31 and 1 <= month <= 12):
            return [Rejected(raw, "malformed")]
        # Two-digit year: NMEA receivers in service now report 20yy (pivot at 80 for old logs).
        year = 2000 + yy if yy < 80 else 1900 + yy
        stamp = f"{year:04d}-{month:02d}-{day:02d}T{utc}Z"
        self._fix_state(events, True)
        events.append(DeviceInfo("gps-time", stamp))
        events.append(measurement("latitude", lat, device_time=stamp, raw=raw))
        events.append(measurement("longitude", lon, device_time=stamp, raw=raw))
        return events
