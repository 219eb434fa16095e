"""A point-of-care analyser speaking ASTM E1381 + E1394: the sender side, for tests and the demo.

Pure encoders (:func:`encode_records`, :func:`frame`, :func:`frames`) are the inverse of
``drivers.protocols.astm``. :class:`AstmAnalyserModel` is the sender's E1381 state machine as a
:class:`~drivers.simulators.base.DeviceModel`: ENQ, wait for ACK, one frame per ACK, resend the
same frame on NAK (6 tries), EOT. It has no clock: time is counted in ``output()`` calls of
``interval`` seconds each, so a run is reproducible from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

STX: Final = b"\x02"
ETX: Final = b"\x03"
EOT: Final = b"\x04"
ENQ: Final = b"\x05"
ACK: Final = 0x06
NAK: Final = 0x15
ETB: Final = b"\x17"
MAX_TEXT: Final = 240
REPLY_TIMEOUT: Final = 15.0  # E1381: sender waits 15 s for the answer to ENQ or a frame
BUSY_RETRY: Final = 10.0  # ENQ answered NAK: retry after 10 s (Roche)
MAX_TRIES: Final = 6  # transmissions of one frame before the sender aborts


@dataclass(frozen=True, slots=True)
class Result:
    """One R record as the analyser prints it."""

    code: str  # analyser-local test code (R-3 ``^^^code``)
    value: str
    unit: str
    flags: str = ""  # R-7 abnormal flags (H, L, N ...), several separated by "\\"
    status: str = "F"
    completed: str = ""  # R-13 YYYYMMDDHHMMSS
    reference: str = ""


@dataclass(frozen=True, slots=True)
class ResultMessage:
    patient_id: str
    specimen_id: str
    results: tuple[Result, ...]
    sender: tuple[str, str, str] = ("EdgeSim POC", "SIM-0001", "1.0")  # H-5 name^serial^version
    timestamp: str = "20240315083000"  # H-14


def escape(value: str) -> str:
    """E1394 escapes for the default delimiters (the escape character first)."""
    return value.replace("&", "&E&").replace("|", "&F&").replace("\\", "&R&").replace("^", "&S&")


def encode_records(message: ResultMessage) -> list[str]:
    """The message's records (H, P, O, R..., L) without their CR."""
    sender = "^".join(escape(part) for part in message.sender)
    header = ["H", "\\^&", "", "", sender, "", "", "", "", "", "", "P", "1394-97"]
    records = ["|".join([*header, message.timestamp])]
    records.append(f"P|1|{escape(message.patient_id)}")
    tests = "\\".join(f"^^^{escape(r.code)}" for r in message.results)
    records.append(f"O|1|{escape(message.specimen_id)}||{tests}|R")
    for seq, r in enumerate(message.results, start=1):
        flags = "\\".join(escape(f) for f in r.flags.split("\\"))  # repeats stay repeats
        fields = [
            "R", str(seq), f"^^^{escape(r.code)}", escape(r.value), escape(r.unit),
            escape(r.reference), flags, "", r.status, "", "", "", r.completed,
        ]  # fmt: skip
        records.append("|".join(fields))
    records.append("L|1|N")
    return records


def frame(fn: int, text: str, last: bool) -> bytes:
    """One E1381 frame: ``STX FN text ETB|ETX C1 C2 CR LF`` (``fn`` 0..7, text <= 240)."""
    if not 0 <= fn <= 7:
        raise ValueError(f"frame number {fn} is not 0..7")
    if len(text) > MAX_TEXT:
        raise ValueError(f"frame text of {len(text)} characters exceeds {MAX_TEXT}")
    body = str(fn).encode() + text.encode("latin-1") + (ETX if last else ETB)
    return STX + body + f"{sum(body) % 256:02X}".encode() + b"\r\n"


def frames(records: Sequence[str], first_fn: int = 1, *, pack: bool = False) -> list[bytes]:
    """Frames for records (each gets its CR). By default each record starts a frame and ends
    with ETX; ``pack`` sends the records as one text. Text over 240 characters continues in
    ETB frames. Frame numbers run mod 8 from ``first_fn``."""
    texts = ["".join(r + "\r" for r in records)] if pack else [r + "\r" for r in records]
    out: list[bytes] = []
    fn = first_fn
    for text in texts:
        pieces = [text[i : i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)]
        for i, piece in enumerate(pieces):
            out.append(frame(fn, piece, last=i == len(pieces) - 1))
            fn = (fn + 1) % 8
    return out


# Panels the model cycles through: (code, unit, low, high, decimals, reference range).
_PANELS: Final = (
    (
        ("CHOL", "mg/dL", 120.0, 300.0, 0, "<200"),
        ("HDL", "mg/dL", 25.0, 90.0, 0, ">40"),
        ("TRIG", "mg/dl", 50.0, 400.0, 0, "<150"),
        ("LDL", "mg/dL", 50.0, 220.0, 0, "<130"),
    ),
    (("GLU", "mg/dL", 60.0, 300.0, 0, "70-110"),),
    (("HB", "g/dL", 7.0, 18.0, 1, "12.0-17.5"), ("CRP", "mg/L", 0.5, 80.0, 1, "<5.0")),
)


class _State(Enum):
    IDLE = "idle"
    WAIT_ENQ_REPLY = "wait-enq-reply"
    SEND_FRAME = "send-frame"
    WAIT_FRAME_REPLY = "wait-frame-reply"
    SEND_EOT = "send-eot"


@dataclass
class AstmAnalyserModel:
    """Sender-side E1381 state machine producing a result message every ``period`` seconds.

    ``acknowledged`` lists the messages whose last frame was ACKed (delivered). A message whose
    transfer was aborted (NAK six times, no reply in 15 s) is sent again in the next session.
    ``corrupt`` is the probability that a frame is damaged on the wire (one byte flipped).
    """

    seed: int = 0
    interval: float = 0.05
    period: float = 5.0
    corrupt: float = 0.0
    max_messages: int | None = None
    sent: list[ResultMessage] = field(default_factory=list)
    acknowledged: list[ResultMessage] = field(default_factory=list)
    transmissions: int = 0  # frames written, resends included

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._state = _State.IDLE
        self._ticks = 0
        self._next_start = 0  # tick at which to bid for the line
        self._waited = 0  # ticks without a reply
        self._pending: ResultMessage | None = None
        self._frames: list[bytes] = []
        self._index = 0
        self._tries = 0
        self._replies = bytearray()

    def _seconds(self, ticks: int) -> float:
        return ticks * self.interval

    def _ticks_for(self, seconds: float) -> int:
        return max(1, round(seconds / self.interval))

    def output(self) -> bytes:
        self._ticks += 1
        self._handle_replies()
        if self._state is _State.IDLE:
            if self._ticks < self._next_start:
                return b""
            if self._pending is None:
                if self.max_messages is not None and len(self.sent) >= self.max_messages:
                    return b""
                self._pending = self._new_message()
                self.sent.append(self._pending)
            self._state, self._waited = _State.WAIT_ENQ_REPLY, 0
            return ENQ
        if self._state is _State.SEND_FRAME:
            self._state, self._waited = _State.WAIT_FRAME_REPLY, 0
            self.transmissions += 1
            return self._wire(self._frames[self._index])
        if self._state is _State.SEND_EOT:
            self._state = _State.IDLE
            return EOT
        self._waited += 1
        if self._seconds(self._waited) >= REPLY_TIMEOUT:
            return self._abort(retry_after=self.interval)
        return b""

    def receive(self, data: bytes) -> None:
        self._replies += data

    def _handle_replies(self) -> None:
        # Replies are read at the next tick, like a UART the firmware polls.
        replies, self._replies = bytes(self._replies), bytearray()
        for byte in replies:
            if self._state is _State.WAIT_ENQ_REPLY:
                if byte == ACK:
                    assert self._pending is not None
                    self._frames = frames(encode_records(self._pending))
                    self._state, self._index, self._tries = _State.SEND_FRAME, 0, 1
                elif byte == NAK:  # receiver busy
                    self._state = _State.IDLE
                    self._next_start = self._ticks + self._ticks_for(BUSY_RETRY)
            elif self._state is _State.WAIT_FRAME_REPLY:
                if byte == ACK:
                    self._index += 1
                    self._tries = 1
                    if self._index == len(self._frames):
                        assert self._pending is not None
                        self.acknowledged.append(self._pending)
                        self._pending = None
                        self._state = _State.SEND_EOT
                        self._next_start = self._ticks + self._ticks_for(self.period)
                    else:
                        self._state = _State.SEND_FRAME
                elif byte == NAK:
                    if self._tries >= MAX_TRIES:
                        self._abort(retry_after=self.period)
                    else:
                        self._tries += 1
                        self._state = _State.SEND_FRAME
            # Anything else (or a reply we did not wait for) is ignored, as E1381 asks.

    def _abort(self, retry_after: float) -> bytes:
        """Give up this transfer: EOT now, resend the message in a later session."""
        self._state = _State.IDLE
        self._next_start = self._ticks + self._ticks_for(retry_after)
        return EOT

    def _wire(self, data: bytes) -> bytes:
        if self.corrupt and self._rng.random() < self.corrupt:
            damaged = bytearray(data)
            pos = self._rng.randrange(1, len(damaged) - 2)  # keep STX and CR LF: a bit error
            damaged[pos] ^= 1 << self._rng.randrange(7)
            return bytes(damaged)
        return data

    def _new_message(self) -> ResultMessage:
        n = len(self.sent)
        panel = _PANELS[n % len(_PANELS)]
        base = datetime(2024, 3, 15, 8, 30) + timedelta(seconds=self._seconds(self._ticks))
        stamp = base.strftime("%Y%m%d%H%M%S")
        results = []
        for code, unit, low, high, decimals, reference in panel:
            value = round(self._rng.uniform(low, high), decimals)
            text = f"{value:.{decimals}f}"
            flag = _flag(value, reference)
            results.append(Result(code, text, unit, flag, "F", stamp, reference))
        return ResultMessage(
            patient_id=f"PAT{self._rng.randrange(10000, 99999)}",
            specimen_id=f"S{n + 1:06d}",
            results=tuple(results),
            timestamp=stamp,
        )


def _flag(value: float, reference: str) -> str:
    """R-7 for a reference range written ``<x``, ``>x`` or ``low-high``."""
    if reference.startswith("<"):
        return "H" if value >= float(reference[1:]) else "N"
    if reference.startswith(">"):
        return "L" if value <= float(reference[1:]) else "N"
    low, high = (float(part) for part in reference.split("-"))
    return "L" if value < low else "H" if value > high else "N"
