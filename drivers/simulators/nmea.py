"""GPS simulator: NMEA encoders (inverse of ``drivers.protocols.nmea``) and a moving van."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drivers.protocols.nmea import checksum


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body.encode('ascii')):02X}\r\n".encode("ascii")


def _lat(value: float) -> tuple[str, str]:
    hemi = "S" if value < 0 else "N"
    value = abs(value)
    degrees = int(value)
    return f"{degrees:02d}{(value - degrees) * 60:07.4f}", hemi


def _lon(value: float) -> tuple[str, str]:
    hemi = "W" if value < 0 else "E"
    value = abs(value)
    degrees = int(value)
    return f"{degrees:03d}{(value - degrees) * 60:07.4f}", hemi


def encode_gga(
    lat: float, lon: float, altitude: float, when: datetime, *, quality: int = 1,
    satellites: int = 8, talker: str = "GP",
) -> bytes:
    la, ns = _lat(lat)
    lo, ew = _lon(lon)
    t = when.strftime("%H%M%S") + ".00"
    return sentence(f"{talker}GGA,{t},{la},{ns},{lo},{ew},{quality},{satellites:02d},0.9,"
                    f"{altitude:.1f},M,46.9,M,,")


def encode_rmc(
    lat: float, lon: float, when: datetime, *, valid: bool = True, speed_knots: float = 0.0,
    talker: str = "GP",
) -> bytes:
    la, ns = _lat(lat)
    lo, ew = _lon(lon)
    status, mode = ("A", "A") if valid else ("V", "N")
    return sentence(
        f"{talker}RMC,{when.strftime('%H%M%S')}.00,{status},{la},{ns},{lo},{ew},"
        f"{speed_knots:.1f},0.0,{when.strftime('%d%m%y')},,,{mode}"
    )


@dataclass
class GpsModel:
    """A van driving slowly through rural Morocco (default start near Azilal)."""

    seed: int = 0
    start: tuple[float, float] = (31.9616, -6.5718)
    altitude: float = 1360.0
    interval: float = 1.0
    sent: list[tuple[float, float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lat, self._lon = self.start
        self._when = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)

    def receive(self, data: bytes) -> None:
        pass  # a GPS receiver ignores what the host sends it here

    def output(self) -> bytes:
        self._when += timedelta(seconds=1)
        self._lat += self._rng.uniform(-0.0002, 0.0003)
        self._lon += self._rng.uniform(-0.0002, 0.0003)
        self.sent.append((self._lat, self._lon, self._when.strftime("%Y-%m-%dT%H:%M:%SZ")))
        return encode_rmc(self._lat, self._lon, self._when, speed_knots=12.0) + encode_gga(
            self._lat, self._lon, self.altitude, self._when
        )
