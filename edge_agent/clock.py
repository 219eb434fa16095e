"""Is the unit's clock trustworthy? A van that boots offline may run on a wrong RTC.

The kernel knows whether the clock is synchronised (NTP/chrony clear ``STA_UNSYNC``):
``adjtimex(2)`` returns ``TIME_ERROR`` while it is not. Readings stamped while the clock is not
trusted are flagged ``clock-untrusted`` (never silently trusted); central's time in each ack,
or GPS time, later confirms or corrects it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from datetime import UTC, datetime

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
