"""Record Access Control Point 0x2A52: requests and responses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from drivers.base import (
    Rejected,
)


# --- Record Access Control Point 0x2A52 ------------------------------------------------------
class RacpOp(IntEnum):
    REPORT_RECORDS = 1
    DELETE_RECORDS = 2
    ABORT = 3
    REPORT_COUNT = 4
    COUNT_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(IntEnum):
    NULL = 0
    ALL = 1
    LESS_OR_EQUAL = 2
    GREATER_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST = 5
    LAST = 6


RACP_FILTER_SEQUENCE: Final = 0x01  # GLS filter type: sequence number (uint16)
RACP_RESPONSES: Final = {
    1: "success",
    2: "op-code-not-supported",
    3: "invalid-operator",
    4: "operator-not-supported",
    5: "invalid-operand",
    6: "no-records-found",
    7: "abort-unsuccessful",
    8: "procedure-not-completed",
    9: "operand-not-supported",
}


def _seq(seq: int) -> bytes:
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"a glucose sequence number is uint16, got {seq}")
    return bytes([RACP_FILTER_SEQUENCE]) + seq.to_bytes(2, "little")


def racp_report_all() -> bytes:
    return bytes([RacpOp.REPORT_RECORDS, RacpOperator.ALL])


def racp_report_from(seq: int) -> bytes:
    """Report stored records with sequence number >= ``seq``."""
    return bytes([RacpOp.REPORT_RECORDS, RacpOperator.GREATER_OR_EQUAL]) + _seq(seq)


def racp_count_all() -> bytes:
    return bytes([RacpOp.REPORT_COUNT, RacpOperator.ALL])


def racp_count_from(seq: int) -> bytes:
    """Report the number of stored records with sequence number >= ``seq``."""
    return bytes([RacpOp.REPORT_COUNT, RacpOperator.GREATER_OR_EQUAL]) + _seq(seq)


def racp_abort() -> bytes:
    return bytes([RacpOp.ABORT, RacpOperator.NULL])


@dataclass(frozen=True, slots=True)
class RacpCount:
    """Number of Stored Records Response (op code 5)."""

    count: int


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Response Code (op code 6) to the request with op code ``request``."""

    request: int
    code: int

    @property
    def name(self) -> str:
        return RACP_RESPONSES.get(self.code, f"reserved-{self.code}")

    @property
    def finished(self) -> bool:
        """The procedure ran to its end; "no records found" is not an error."""
        return self.code in (1, 6)


def decode_racp(value: bytes) -> RacpCount | RacpResponse | Rejected:
    """A RACP indication from the server: count or response code; anything else is
    ``Rejected`` (the collector never receives requests)."""
    data = bytes(value)
    if not data:
        return Rejected(data, "truncated")
    if data[0] not in (RacpOp.COUNT_RESPONSE, RacpOp.RESPONSE_CODE):
        return Rejected(data, "racp-op-code")
    if len(data) != 4:  # both: op code, operator, uint16 (GLS count / request + code)
        return Rejected(data, "truncated" if len(data) < 4 else "too-long")
    if data[1] != RacpOperator.NULL:
        return Rejected(data, "racp-operator")
    if data[0] == RacpOp.COUNT_RESPONSE:
        return RacpCount(int.from_bytes(data[2:4], "little"))
    return RacpResponse(data[2], data[3])
