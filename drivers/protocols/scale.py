"""ASCII weighing indicators and balances, sans-I/O.

Facts: ``docs/protocols.md`` §8. Lines end with CR, LF or CR LF. :data:`GRAMMARS`: ``auto``
(the default) tells the two formats below apart per line by their shape (the indicator's second
field is ``GS``/``NT``/``TR``, the balance's is the signed value; the two never overlap), so a
technician need not pick one; ``indicator`` or ``balance`` forces one format and rejects the
other's lines as ``malformed`` (a scale whose lines could be misread).

- ``indicator`` (Selleton SL-7516, Tiger TI-02-P, A&D AD-4404): ``H1,H2,±value unit``, e.g.
  ``ST,GS,+  72.45kg``. H1 ``ST`` stable, ``US`` unstable, ``OL``/``LO`` out of range; H2
  ``GS`` gross, ``NT`` net, ``TR`` tare; a 7-character value (leading spaces or zeros; other
  widths are tolerated); unit ``kg``, ``lb`` or ``g``.
- ``balance`` (A&D EK-L/EJ/GC): ``H1,±value unit``, e.g. ``ST,+00123.45  g``. H1 ``ST``
  stable, ``QT`` piece count, ``US`` unstable, ``OL`` out of range; a signed 9-character value
  and a 3-character unit.

One reading per weighing. Only stable gross or net weights are readings (``body_weight`` in
UCUM ``kg``, ``g`` or ``[lb_av]``, ``context`` ``mode`` = ``gross``/``net``). A scale streams
the same stable weight ~10 times a second, so a stable weight is emitted only when it differs
from the last one emitted, or when the scale was unstable, out of range or back to zero (or
below) in between: the next person, or the same person weighed again. Tare frames and piece
counts are not weights and change nothing.

States are reported on change: ``DeviceInfo("scale", "stable"|"unstable"|"overload")``. A line
that does not parse is ``Rejected(raw, reason)`` with reason ``malformed``, ``unknown-unit``,
``not-ascii``, ``too-long`` or ``truncated`` (an unterminated line at end of stream).
"""

from __future__ import annotations

import re
from typing import Final

from drivers.base import DecoderMisuse, DeviceInfo, Event, PassiveDecoder, Rejected
from drivers.protocols.policy import checked
from edge_agent.models import measurement

GRAMMARS: Final = ("auto", "indicator", "balance")
MAX_LINE: Final = 64  # both formats are under 20 characters; anything this long is noise
UNITS: Final = {"kg": "kg", "g": "g", "lb": "[lb_av]"}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_INDICATOR = re.compile(rf"(ST|US),(GS|NT|TR),([+\- ]?) *{_NUMBER} *([A-Za-z]{{1,3}}) *")
_BALANCE = re.compile(rf"(ST|QT|US),([+\- ]?) *{_NUMBER} *([A-Za-z%]{{1,3}}) *")
_OVERLOAD = {
    "indicator": re.compile(r"(OL|LO),.*"),
    "balance": re.compile(r"OL,.*"),
    "auto": re.compile(r"(OL|LO),.*"),
}


class ScaleDecoder(PassiveDecoder):
    def __init__(self, grammar: str = "auto") -> None:
        if grammar not in GRAMMARS:
            raise DecoderMisuse(f"scale grammar must be one of {GRAMMARS}, not {grammar!r}")
        self.grammar = grammar
        self._buf = bytearray()
        self._long = False  # inside an over-long line: its rest is rejected too
        self._last: tuple[float, str] | None = None
        self._armed = True  # the next stable weight is a new weighing
        self._state = "unknown"

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        buf = self._buf
        while buf:
            end = next((i for i, b in enumerate(buf[: MAX_LINE + 1]) if b in b"\r\n"), -1)
            if end == -1:
                if len(buf) > MAX_LINE:
                    events.append(Rejected(bytes(buf[:MAX_LINE]), "too-long"))
                    del buf[:MAX_LINE]
                    self._long = True
                    continue
                if not data:
                    events.append(Rejected(bytes(buf), "too-long" if self._long else "truncated"))
                    buf.clear()
                return events
            if end + 1 == len(buf) and buf[end] == 0x0D and data:
                # A CR at the very end: wait to see whether an LF follows, so the raw bytes
                # of a line do not depend on how the stream was split.
                return events
            size = end + (2 if buf[end : end + 2] == b"\r\n" else 1)
            line, raw = bytes(buf[:end]), bytes(buf[:size])
            del buf[:size]
            if self._long:
                self._long = False
                if line:
                    events.append(Rejected(raw, "too-long"))
            elif line:  # an empty line is the LF of an LF CR pair or a blank: framing only
                events.extend(self._line(line, raw))
        return events

    def _set_state(self, events: list[Event], state: str) -> None:
        if state != self._state:
            self._state = state
            events.append(DeviceInfo("scale", state))

    def _line(self, line: bytes, raw: bytes) -> list[Event]:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return [Rejected(raw, "not-ascii")]
        events: list[Event] = []
        if _OVERLOAD[self.grammar].fullmatch(text):
            self._armed = True
            self._set_state(events, "overload")
            return events
        indicator = _INDICATOR.fullmatch(text) if self.grammar != "balance" else None
        balance = _BALANCE.fullmatch(text) if self.grammar != "indicator" else None
        if indicator is not None:
            header, mode, sign, number, unit_text = indicator.groups()
        elif balance is not None:
            header, sign, number, unit_text = balance.groups()
            mode = "GS"  # balances send the gross weight
        else:
            return [Rejected(raw, "malformed")]
        if header == "QT":
            self._set_state(events, "stable")
            return events  # a piece count, not a weight
        unit = UNITS.get(unit_text.lower())
        if unit is None:
            return [Rejected(raw, "unknown-unit")]
        if header == "US":
            self._armed = True
            self._set_state(events, "unstable")
            return events
        self._set_state(events, "stable")
        if mode == "TR":
            return events  # the tare in use, not a weight on the platform
        value = -float(number) if sign == "-" else float(number)
        if value <= 0:
            self._armed = True  # empty platform: the next stable weight is a new weighing
            return events
        if self._armed or self._last != (value, unit):
            self._armed = False
            self._last = (value, unit)
            context = (("mode", "net" if mode == "NT" else "gross"),)
            m = measurement("body_weight", value, unit, raw=raw, context=context)
            events.append(checked(m))
        return events
