"""ASCII weighing indicators and balances, sans-I/O.

Facts: ``shared/PROTOCOLS.md`` §8. Two line grammars, each line ended by CR or CR LF:
- ``indicator``: ``H1,H2,±value unit`` e.g. ``ST,GS,+  72.45kg`` (H1 ``ST`` stable, ``US``
  unstable, ``OL``/``LO`` out of range; H2 ``GS`` gross, ``NT`` net, ``TR`` tare).
- ``balance`` (A&D): ``H1,±value unit`` e.g. ``ST,+00123.45  g`` (H1 ``ST``, ``QT``, ``US``,
  ``OL``).
The grammar is recognised per line (2 or 3 comma fields), so one decoder reads both.

Only stable gross or net weights are readings, and a scale streaming the same stable weight
at 10 Hz is ONE reading: a stable weight is emitted when it differs from the last one emitted,
or when the scale went unstable or back to zero in between (the next person). Unstable and
overload states are reported as ``DeviceInfo("scale", ...)`` when they change. Units: ``kg``,
``g``, ``lb`` -> UCUM ``kg``, ``g``, ``[lb_av]``. A line that does not parse is rejected.
"""

from __future__ import annotations

import re
from typing import Final

from drivers.base import DeviceInfo, Event, PassiveDecoder, Rejected
from edge_agent.models import measurement

MAX_LINE: Final = 64
UNITS: Final = {"kg": "kg", "g": "g", "lb": "[lb_av]", "lbs": "[lb_av]"}
_VALUE = re.compile(r"^\s*([+-]?)\s*(\d[\d ]*(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")


class ScaleDecoder(PassiveDecoder):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._last: tuple[float, str] | None = None
        self._armed = True
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
                    continue
                if not data:
                    events.append(Rejected(bytes(buf), "truncated"))
                    buf.clear()
                return events
            if end == 0:
                del buf[:1]  # CR, LF, or the LF of a CR LF
                continue
            line = bytes(buf[:end])
            terminator = 2 if buf[end : end + 2] == b"\r\n" else 1
            if end + 1 == len(buf) and buf[end] == 0x0D and data:
                # CR at the very end: keep it until we know whether an LF follows, so the
                # raw bytes of a line do not depend on how the stream was split.
                return events
            raw = bytes(buf[: end + terminator])
            del buf[: end + terminator]
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
        fields = text.split(",")
        if len(fields) == 3:
            header, mode, body = fields
        elif len(fields) == 2:
            header, body = fields
            mode = "GS"
        else:
            return [Rejected(raw, "malformed")]
        header, mode = header.strip(), mode.strip()
        events: list[Event] = []
        if header in ("OL", "LO"):
            self._armed = True
            self._set_state(events, "overload")
            return events
        if header not in ("ST", "US", "QT") or mode not in ("GS", "NT", "TR"):
            return [Rejected(raw, "malformed")]
        match = _VALUE.match(body)
        if match is None:
            return [Rejected(raw, "malformed")]
        sign, digits, unit_text = match.groups()
        unit = UNITS.get(unit_text.lower())
        if unit is None:
            return [Rejected(raw, "unknown-unit")]
        value = float(digits.replace(" ", "")) * (-1 if sign == "-" else 1)
        if header == "US":
            self._armed = True
            self._set_state(events, "unstable")
            return events
        self._set_state(events, "stable")
        if mode == "TR" or header == "QT":
            return events  # a tare or a piece count is not a body weight
        if value <= 0:
            self._armed = True  # empty platform: the next stable weight is a new person
            return events
        if self._armed or self._last != (value, unit):
            self._armed = False
            self._last = (value, unit)
            context = (("mode", "net" if mode == "NT" else "gross"),)
            events.append(measurement("body_weight", value, unit, raw=raw, context=context))
        return events
