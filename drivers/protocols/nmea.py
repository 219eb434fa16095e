"""NMEA 0183 GPS sentences (GGA, RMC), sans-I/O: the van's position and a GPS time source.

Facts: ``docs/protocols.md`` §7. ``$<talker><type>,fields*hh<CR><LF>``; the checksum is the
XOR of every character between ``$`` and ``*``. Every GNSS talker is read (:data:`TALKERS`: GP
GPS, GL GLONASS, GA Galileo, GB/BD BeiDou, GI NavIC, GQ/QZ QZSS, GN multi-GNSS). Fields are
read by position and missing trailing fields are tolerated: NMEA 2.3 adds the RMC mode and 4.1
the navigational status, so field counts vary between receivers.

Events:
- Positions only from valid fixes (GGA quality > 0, RMC status ``A`` and mode not ``N``):
  ``latitude`` and ``longitude`` in decimal degrees (negative south/west), and ``altitude`` in
  metres above mean sea level (GGA only).
- RMC carries date and time: its positions get ``device_time`` (ISO 8601 UTC, ``Z``, the
  receiver's fraction of a second kept) and ``DeviceInfo("gps-time", ...)`` is emitted, which
  the agent uses as a clock source. GGA has no date: its time goes into ``context`` as
  ``utc_time`` (``hh:mm:ss[.ss]``), never into ``device_time``. A leap second (``60``) gives no
  device time (most date libraries cannot represent it).
- Fix state: ``DeviceInfo("gps-fix", "none")`` when fixes become invalid, ``"ok"`` when they
  are back (on change only, not every second).
- Flags: ``estimated`` (dead reckoning: GGA quality 6, RMC mode E), ``manual`` (7, M) and
  ``simulated`` (8, S); ``context`` has ``fix_quality`` and ``satellites`` from GGA.

Length: NMEA 0183 bounds a sentence to 82 characters with its CR LF (80 without). RTK and
survey receivers in high-precision mode send longer GGA/RMC (7 decimals of minutes for
latitude/longitude, millimetre altitude: a GGA with every field at its widest is ~100
characters), so GGA and RMC are accepted up to :data:`MAX_POSITION` (120) characters without the
CR LF; any other sentence over :data:`MAX_SENTENCE` (80), and anything over 120, is ``too-long``.

Bad input: a bad checksum, a sentence without checksum, over-long or cut short (a new ``$``
before the end) lines, and noise between sentences become ``Rejected(raw, reason)`` and
decoding resumes at the next ``$``. Reasons: ``checksum``, ``no-checksum``, ``too-long``,
``truncated``, ``malformed``, ``no-sentence``. Other sentences (GSV, GSA, VTG, proprietary
``$P...``) are valid but not used: they are ignored, not rejected, and counted in
:attr:`NmeaDecoder.ignored` per address. Every octet received ends up in one sentence, one
``Rejected`` or is a CR/LF between sentences; how the stream was split never matters.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Final

from drivers.base import DeviceInfo, Event, PassiveDecoder, Rejected
from edge_agent.models import measurement

MAX_SENTENCE: Final = 82  # spec: 82 with CR LF; 2 octets of slack for chatty receivers
MAX_POSITION: Final = 120  # high-precision GGA/RMC (RTK, survey units); see the docstring
LIMIT: Final = MAX_POSITION + 2  # a sentence and its CR LF
JUNK: Final = 256  # noise is rejected in pieces of at most this many octets
TALKERS: Final = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GI", "GQ", "QZ"})
GGA_FLAGS: Final = {6: "estimated", 7: "manual", 8: "simulated"}
RMC_FLAGS: Final = {"E": "estimated", "M": "manual", "S": "simulated"}

_LAT = re.compile(r"(\d{2})(\d{2}(?:\.\d*)?)")
_LON = re.compile(r"(\d{3})(\d{2}(?:\.\d*)?)")
_TIME = re.compile(r"(\d{2})(\d{2})(\d{2}(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d*)?")

Context = tuple[tuple[str, str], ...]


def checksum(body: bytes) -> int:
    """XOR of the octets between ``$`` and ``*``."""
    value = 0
    for octet in body:
        value ^= octet
    return value


def degrees(value: str, hemisphere: str, *, longitude: bool) -> float | None:
    """``ddmm.mmmm`` (``dddmm.mmmm`` for longitude) and N/S/E/W -> signed decimal degrees."""
    match = (_LON if longitude else _LAT).fullmatch(value)
    if match is None or hemisphere not in (("E", "W") if longitude else ("N", "S")):
        return None
    whole, minutes = int(match[1]), float(match[2])
    result = whole + minutes / 60.0
    if minutes >= 60 or result > (180 if longitude else 90):
        return None
    return -result if hemisphere in ("S", "W") else result


def time_of_day(value: str) -> str | None:
    """``hhmmss[.ss]`` -> ``hh:mm:ss[.ss]``; None when it is not a time of day."""
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    hh, mm, ss = match.groups()
    if int(hh) > 23 or int(mm) > 59 or float(ss) >= 61:
        return None
    return f"{hh}:{mm}:{ss}"


def utc_stamp(date: str, time: str) -> str | None:
    """RMC ``ddmmyy`` and ``hh:mm:ss[.ss]`` -> ISO 8601 UTC with ``Z``; None if not a date."""
    if len(date) != 6 or not date.isdigit():
        return None
    day, month, yy = int(date[0:2]), int(date[2:4]), int(date[4:6])
    # Two-digit year: receivers in service report 20yy; the pivot keeps 1990s logs readable.
    year = 2000 + yy if yy < 80 else 1900 + yy
    stamp = f"{year:04d}-{month:02d}-{day:02d}T{time}"
    try:
        datetime.fromisoformat(stamp)  # rejects 31 February and leap second 60
    except ValueError:
        return None
    return stamp + "Z"


class NmeaDecoder(PassiveDecoder):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._fix = "unknown"
        self.ignored: Counter[str] = Counter()  # valid sentences not used, per address

    def receive_data(self, data: bytes) -> list[Event]:
        # Every decision looks at most LIMIT + JUNK octets ahead and waits for them (or for
        # EOF), so the same octets give the same events however they were split.
        events: list[Event] = []
        self._buf += data
        eof = not data
        buf = self._buf
        while buf:
            start = buf.find(b"$")
            if start != 0:
                if start == -1 and len(buf) < JUNK and not eof:
                    return events  # noise so far; wait for a '$' or enough noise
                cut = min(len(buf) if start == -1 else start, JUNK)
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
                    # Over-long: reject up to the end of the line or the next '$', so one
                    # long line is one Rejected, bounded by LIMIT + JUNK octets.
                    bound = LIMIT + JUNK
                    lf, dollar = buf.find(b"\n", LIMIT, bound), buf.find(b"$", LIMIT, bound)
                    if lf != -1 and (dollar == -1 or lf < dollar):
                        end = lf + 1
                    elif dollar != -1:
                        end = dollar
                    elif len(buf) < bound and not eof:
                        return events
                    else:
                        end = min(len(buf), bound)
                    events.append(Rejected(bytes(buf[:end]), "too-long"))
                    del buf[:end]
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
        position = text[3:7] in (b"GGA,", b"RMC,")
        if len(text) > (MAX_POSITION if position else MAX_SENTENCE):
            return [Rejected(raw, "too-long")]
        star = text.rfind(b"*")
        if star == -1 or len(text) - star != 3:
            return [Rejected(raw, "no-checksum")]
        try:
            expected = int(text[star + 1 :].decode("ascii"), 16)
            body = text[1:star].decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return [Rejected(raw, "malformed")]
        if checksum(text[1:star]) != expected:
            return [Rejected(raw, "checksum")]
        fields = body.split(",")
        address = fields[0]
        if len(address) == 5 and address[:2] in TALKERS and address[2:] == "GGA":
            return self._gga(fields, raw)
        if len(address) == 5 and address[:2] in TALKERS and address[2:] == "RMC":
            return self._rmc(fields, raw)
        self.ignored[address] += 1
        return []

    def _fix_state(self, events: list[Event], ok: bool) -> None:
        state = "ok" if ok else "none"
        if state != self._fix:
            self._fix = state
            events.append(DeviceInfo("gps-fix", state))

    def _gga(self, f: list[str], raw: bytes) -> list[Event]:
        f += [""] * (15 - len(f))  # trailing empty fields may be left out
        events: list[Event] = []
        quality = int(f[6]) if f[6].isdigit() else 0
        if quality == 0:
            self._fix_state(events, False)
            return events
        lat = degrees(f[2], f[3], longitude=False)
        lon = degrees(f[4], f[5], longitude=True)
        if lat is None or lon is None:
            return [Rejected(raw, "malformed")]
        context: Context = (("fix_quality", str(quality)),)
        utc = time_of_day(f[1])
        if utc is not None:
            context += (("utc_time", utc),)
        if f[7].isdigit():
            context += (("satellites", str(int(f[7]))),)
        flags = (GGA_FLAGS[quality],) if quality in GGA_FLAGS else ()
        self._fix_state(events, True)
        for key, value in (("latitude", lat), ("longitude", lon)):
            events.append(measurement(key, value, flags=flags, raw=raw, context=context))
        if _NUMBER.fullmatch(f[9]) and f[10] in ("M", ""):
            events.append(
                measurement("altitude", float(f[9]), flags=flags, raw=raw, context=context)
            )
        return events

    def _rmc(self, f: list[str], raw: bytes) -> list[Event]:
        f += [""] * (14 - len(f))
        events: list[Event] = []
        mode = f[12]
        if f[2] != "A" or mode == "N":
            self._fix_state(events, False)
            return events
        lat = degrees(f[3], f[4], longitude=False)
        lon = degrees(f[5], f[6], longitude=True)
        utc = time_of_day(f[1])
        if lat is None or lon is None:
            return [Rejected(raw, "malformed")]
        stamp = None
        if f[9]:
            if utc is None or utc_stamp(f[9], "00:00:00") is None:
                return [Rejected(raw, "malformed")]
            stamp = utc_stamp(f[9], utc)  # None only for a leap second
        context: Context = ()
        if stamp is None and utc is not None:
            context = (("utc_time", utc),)  # no date (or a leap second): time of day only
        flags = (RMC_FLAGS[mode],) if mode in RMC_FLAGS else ()
        self._fix_state(events, True)
        if stamp is not None:
            events.append(DeviceInfo("gps-time", stamp))
        for key, value in (("latitude", lat), ("longitude", lon)):
            events.append(
                measurement(key, value, device_time=stamp, flags=flags, raw=raw, context=context)
            )
        return events
