"""GPS simulator: NMEA encoders (inverse of ``drivers.protocols.nmea``) and a moving van."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from drivers.protocols.nmea import checksum

MINUTE_DIGITS = 5  # ddmm.mmmmm, as u-blox receivers send (about 2 cm)
METRES_PER_DEGREE = 111_320.0
KNOTS_PER_MS = 1.943844


def sentence(body: str) -> bytes:
    """``$body*hh\\r\\n`` with the checksum of ``body``."""
    return f"${body}*{checksum(body.encode('ascii')):02X}\r\n".encode("ascii")


def _angle(value: float, width: int, hemispheres: str) -> tuple[str, str]:
    # Round in integer units of the last digit, so 59.999999' never prints as "60.00000".
    scale = 10**MINUTE_DIGITS
    whole, rest = divmod(round(abs(value) * 60 * scale), 60 * scale)
    text = f"{whole:0{width}d}{rest // scale:02d}.{rest % scale:0{MINUTE_DIGITS}d}"
    return text, hemispheres[1] if value < 0 else hemispheres[0]


def _time(when: datetime) -> str:
    return when.strftime("%H%M%S.") + f"{when.microsecond // 10_000:02d}"


def encode_gga(
    lat: float,
    lon: float,
    altitude: float,
    when: datetime,
    *,
    quality: int = 1,
    satellites: int = 8,
    talker: str = "GP",
) -> bytes:
    """A GGA sentence; ``quality`` 0 leaves the position fields empty, as receivers do."""
    if quality == 0:
        return sentence(f"{talker}GGA,{_time(when)},,,,,0,00,99.99,,,,,,")
    la, ns = _angle(lat, 2, "NS")
    lo, ew = _angle(lon, 3, "EW")
    return sentence(
        f"{talker}GGA,{_time(when)},{la},{ns},{lo},{ew},{quality},{satellites:02d},0.9,"
        f"{altitude:.1f},M,-1.2,M,,"
    )


def encode_rmc(
    lat: float,
    lon: float,
    when: datetime,
    *,
    valid: bool = True,
    speed_knots: float = 0.0,
    course: float = 0.0,
    mode: str = "A",
    talker: str = "GP",
    nmea41: bool = False,
) -> bytes:
    """An RMC sentence (NMEA 2.3 fields; ``nmea41`` adds the navigational status field)."""
    date = when.strftime("%d%m%y")
    if valid:
        la, ns = _angle(lat, 2, "NS")
        lo, ew = _angle(lon, 3, "EW")
        fields = f"A,{la},{ns},{lo},{ew},{speed_knots:.3f},{course:.2f},{date},,,{mode}"
    else:
        fields = f"V,,,,,,,{date},,,N"
    return sentence(f"{talker}RMC,{_time(when)},{fields}" + (",V" if nmea41 else ""))


class GpsFix(NamedTuple):
    """What the van's receiver reported in one second."""

    latitude: float
    longitude: float
    altitude: float
    time: str  # ISO 8601 UTC with Z, as the decoder gives it


@dataclass
class GpsModel:
    """A van driving slowly on rural roads (default start: Azilal, Middle Atlas, Morocco).

    One RMC + GGA pair a second, u-blox M8 style (``GN`` talker, NMEA 4.1 RMC). Speed and
    heading wander (0-14 m/s); ``cold_start`` seconds without a fix come first. ``sent``
    lists every fix reported, for end-to-end checks.
    """

    seed: int = 0
    start: tuple[float, float] = (31.9616, -6.5718)
    altitude: float = 1360.0
    cold_start: int = 0
    talker: str = "GN"
    # The first fix's time; None: now (a simulator with a fixed date would be a GPS whose
    # date is wrong, and the agent rightly refuses to trust it).
    start_time: datetime | None = None
    sent: list[GpsFix] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lat, self._lon = self.start
        self._alt = self.altitude
        self._speed = 8.0  # m/s
        self._heading = self._rng.uniform(0.0, 360.0)
        self._when = self.start_time or datetime.now(UTC).replace(microsecond=0)
        self._seconds = 0

    @property
    def interval(self) -> float:
        return 1.0

    def receive(self, data: bytes) -> None:
        pass  # configuration commands are not simulated

    def output(self) -> bytes:
        self._when += timedelta(seconds=1)
        self._seconds += 1
        if self._seconds <= self.cold_start:
            return encode_rmc(
                0.0, 0.0, self._when, valid=False, talker=self.talker, nmea41=True
            ) + encode_gga(0.0, 0.0, 0.0, self._when, quality=0, talker=self.talker)
        rng = self._rng
        self._speed = min(14.0, max(0.0, self._speed + rng.uniform(-1.0, 1.0)))
        self._heading = (self._heading + rng.uniform(-8.0, 8.0)) % 360.0
        north = self._speed * math.cos(math.radians(self._heading))
        east = self._speed * math.sin(math.radians(self._heading))
        self._lat += north / METRES_PER_DEGREE
        self._lon += east / (METRES_PER_DEGREE * math.cos(math.radians(self._lat)))
        self._alt = round(self._alt + rng.uniform(-0.5, 0.5), 1)
        stamp = self._when.strftime("%Y-%m-%dT%H:%M:%S.00Z")
        self.sent.append(GpsFix(self._lat, self._lon, self._alt, stamp))
        rmc = encode_rmc(
            self._lat,
            self._lon,
            self._when,
            speed_knots=self._speed * KNOTS_PER_MS,
            course=self._heading,
            talker=self.talker,
            nmea41=True,
        )
        return rmc + encode_gga(self._lat, self._lon, self._alt, self._when, talker=self.talker)
