"""MSH-10 of the agent's HL7 ACKs: unique across connections, devices and agent restarts.

A monitor (or the gateway's log, or an interface engine between) may index ACKs by their
control id, so no two ACKs of this unit may share one. Every decoder of the process draws from
one counter, behind a prefix made once per process from the start time (seconds, base 36) and
four random base-36 digits (two starts within the same second differ by those): ``EA`` + 6 +
4 + ``.`` + the counter in base 36, within HL7's 20 characters for ST up to 78 billion ACKs.
No state is persisted: a restart draws a new prefix.
"""

from __future__ import annotations

import itertools
import secrets
import string
import time
from typing import Final

__all__ = ["PROCESS_PREFIX", "base36", "next_control_id"]

_DIGITS: Final = string.digits + string.ascii_uppercase


def base36(number: int) -> str:
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = _DIGITS[digit] + out
        if not number:
            return out


def _prefix(now: float, nonce: int) -> str:
    return f"EA{base36(int(now)):0>6}{base36(nonce % 36**4):0>4}."


PROCESS_PREFIX: Final = _prefix(time.time(), secrets.randbelow(36**4))
_counter = itertools.count(1)  # next() on a count is atomic in CPython: safe across threads


def next_control_id() -> str:
    """The next ACK control id of this process."""
    return PROCESS_PREFIX + base36(next(_counter))
