"""Is the unit's clock trustworthy? A van that boots offline may run on a wrong RTC.

The kernel knows whether the clock is synchronised (NTP/chrony clear ``STA_UNSYNC``):
``adjtimex(2)`` returns ``TIME_ERROR`` while it is not. Readings stamped while the clock is not
trusted are flagged ``clock-untrusted`` (never silently trusted); central's time in each ack,
or GPS time, later confirms or corrects it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from edge_agent.models import ClockSource

TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): only `modes` must be zero for a read-only call; the rest
    # is room for the kernel to fill (the struct is 208 bytes on 64-bit Linux).
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 252)]


def system_clock_synchronized() -> bool | None:
    """True/False from the kernel; None when it cannot be asked (not Linux, no libc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def confirmed_by_central(offset_s: float, tolerance_s: float = 2.0) -> bool:
    return abs(offset_s) <= tolerance_s


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# No true reading of this software's clocks is older than this: a date before it is a reset RTC
# or a GPS receiver counting from the wrong week era (1024 weeks = 7168 days early).
EARLIEST_PLAUSIBLE: Final = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
GPS_WEEK_ROLLOVER_S: Final = 1024 * 7 * 86400


@dataclass(frozen=True)
class ClockChoice:
    """Which clock stamps the readings: ``source``, and ``correction_s`` to add to the
    system time (0 unless GPS or central's measured offset corrects it). ``disagreement``:
    ``"gps"`` when a GPS time disagrees with the clock chosen (it is then not used),
    ``"gps-implausible"`` when the only other clock, GPS, gives an impossible date."""

    source: ClockSource
    correction_s: float = 0.0
    disagreement: str | None = None


def choose_clock(
    system_utc: float,
    *,
    system_synced: bool,
    gps_offset_s: float | None,
    central_offset_s: float | None,
    tolerance_s: float = 2.0,
    earliest: float = EARLIEST_PLAUSIBLE,
) -> ClockChoice:
    """Cross-check the clocks; pure. ``gps_offset_s``: GPS UTC minus the system clock (None:
    no recent fix); ``central_offset_s``: central's clock minus the system clock as measured
    from acks, once certain (None: not yet); ``system_synced``: NTP (the kernel) or central
    vouches for the system clock.

    Central's measured offset wins (it is measured against a reference, both ways); then a
    synchronised system clock; GPS only when neither speaks and its date is plausible. A GPS
    time is never trusted blindly: a simulator's fixed date or a receiver with a week
    roll-over disagrees with the clock chosen, and that is reported, not used."""

    def gps_against(correction: float) -> str | None:
        if gps_offset_s is not None and abs(gps_offset_s - correction) > tolerance_s:
            return "gps"
        return None

    if central_offset_s is not None:
        if abs(central_offset_s) <= tolerance_s:
            return ClockChoice(ClockSource.SYSTEM, 0.0, gps_against(0.0))
        return ClockChoice(ClockSource.CENTRAL, central_offset_s, gps_against(central_offset_s))
    if system_synced and system_utc >= earliest:
        return ClockChoice(ClockSource.SYSTEM, 0.0, gps_against(0.0))
    if gps_offset_s is None:
        return ClockChoice(ClockSource.UNTRUSTED)
    if system_utc + gps_offset_s < earliest:
        return ClockChoice(ClockSource.UNTRUSTED, 0.0, "gps-implausible")
    if abs(gps_offset_s) <= tolerance_s:
        return ClockChoice(ClockSource.SYSTEM)  # GPS vouches for the system clock
    return ClockChoice(ClockSource.GPS, gps_offset_s)


def parse_time(stamp: str | None) -> datetime | None:
    """An ISO 8601 time as the store writes it (``Z`` or an offset; none read as UTC)."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
