"""HL7 v2.x messages from vital-signs monitors: parsing, ORU^R01 -> events, the ACK message.

Pure: bytes in, values out (no clock, no I/O, no logging). Framing (MLLP) lives in
``drivers.protocols.mllp``. Facts: ``docs/protocols.md`` §5 and the code table §9.

Separators and text
    Every message brings its own separators: MSH-1 is the character after ``MSH``, MSH-2 the
    encoding characters (component, repetition, escape, subcomponent, v2.7 truncation); nothing
    is hard-coded. Field numbers follow the standard, so MSH-1 is the field separator itself and
    ``Segment.fields[n]`` is MSH-n (the classic off-by-one). Escapes are decoded at the leaf,
    after splitting: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\``, ``\\Xhh..\\`` (bytes in the message
    charset), ``\\.br\\`` and ``\\.sp\\`` (a line break); highlighting ``\\H\\ \\N\\`` is dropped;
    any other sequence is kept verbatim (it is data we do not understand, not noise).
    The charset is MSH-18 (``UNICODE UTF-8``, ``8859/n``); undeclared or undecodable text is read
    as UTF-8, else Latin-1, so no byte makes the parser fail.

Segments (pitfall: LF)
    Segments end with CR. A message containing any CR is split on CR alone (a CR LF pair counts
    as one terminator, a lone LF stays inside the field data); a message with no CR at all was
    written with LF terminators and is split on LF.

ORU^R01 -> events
    OBX-3 (``code^text^system``, then the alternate triplet) is looked up by LOINC (system
    ``LN``) and by MDC code or reference id (system ``MDC``); only these known codes become
    measurements. OBX-6 becomes UCUM (UCUM passthrough, MDC unit codes/reference ids, common
    text spellings); a unit we cannot map is kept as sent and flagged ``unit-unmapped``.
    Values (our choice, documented): ``NM`` is the only numeric type. A numeric with a
    comparator (``<5``, ``>=300``; also SN ``<^5``) keeps the number and is flagged
    ``below-measuring-range``/``above-measuring-range`` with the comparator in the context, as
    the ASTM decoder does. Other value types (ST, SN ranges/ratios, TX, CWE...) of a known
    quantity give ``value=None, absent_reason="as-text"`` and the text in the context. OBX-11
    ``X`` or an empty OBX-5 gives no value (``error`` / ``unknown``). OBX-11 (upper case) is the
    measurement's ``status`` (F, P, C, X, R...; None when empty); P and C are also flagged
    ``preliminary`` / ``corrected``.
    Site-local OBX-3 codes: the device's code map (option ``code_map``, see
    :mod:`~drivers.protocols.sitecodes`) is consulted first, by OBX-3 code (first triplet, then
    the alternate); a mapped code may be a catalogue quantity or one the site defines (LOINC +
    UCUM + names). The device's own coding is kept in the context as ``device-code``
    (``code^text^system``).
    Time is OBX-14, else OBR-7, as ISO 8601 keeping the sender's ``+ZZZZ`` offset; a time with
    no zone stays without zone (never read as UTC: the unit may be on UTC+1 or UTC+0).
    Unknown codes are never turned into a quantity: an OBX with a value is kept whole as
    ``Rejected(segment, "unknown-observation")`` (the store keeps rejects); an OBX without value
    or value type (IHE PCD-01 MDS/VMD/channel rows) is ``DeviceInfo("device-component", ...)``.
    A message that is not ORU^R01 is ``Rejected(message, "unsupported-message-type")``.

Source keys (exactly once)
    Each measurement's ``source_key`` names the OBX it came from: sending application and
    facility (MSH-3, MSH-4), message time (MSH-7) and control id (MSH-10), then the OBX's set
    id (OBX-1), observation identifier (OBX-3 code and coding system), sub-id (OBX-4) and its
    position among the message's OBX. A monitor that resends a message (same MSH-10: our AA was
    lost) produces the same keys, and the store keeps the readings once. MSH-7 is included
    because monitors restart their control-id counter when they reboot; the position because
    some senders leave OBX-1 empty. Keys hold no patient data (no PID field).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Final

from drivers.base import DeviceFacts, DeviceInfo, Event, Rejected, fact, source_key
from drivers.protocols.policy import checked
from drivers.protocols.sitecodes import CodeMapping, mapped_measurement, unit_refused
from edge_agent.models import Measurement, measurement

__all__ = [
    "AckError",
    "Header",
    "Hl7Error",
    "Message",
    "Segment",
    "Separators",
    "build_ack",
    "decode_oru",
    "format_hl7_time",
    "hl7_time_to_iso",
    "hl7_version",
    "iso_to_hl7_time",
    "parse_header",
    "parse_message",
    "split_segments",
    "unknown_observations",
]

CR: Final = b"\r"
LF: Final = b"\n"

# -- code tables (PROTOCOLS.md §9) -------------------------------------------------------------

# LOINC -> (quantity, body site). 8867-4 is "Heart rate"; 8889-8 is the pulse oximeter's rate.
LOINC: Final[Mapping[str, tuple[str, str | None]]] = {
    "59408-5": ("spo2", None),
    "2708-6": ("spo2", None),
    "8867-4": ("heart_rate", None),
    "8889-8": ("pulse_rate", None),
    "8480-6": ("systolic_bp", None),
    "8462-4": ("diastolic_bp", None),
    "8478-0": ("mean_arterial_pressure", None),
    "9279-1": ("respiratory_rate", None),
    "8310-5": ("body_temperature", None),
    "8331-1": ("body_temperature", "oral"),  # site LOINCs: from memory (PROTOCOLS.md §9)
    "8328-7": ("body_temperature", "axillary"),
    "8332-9": ("body_temperature", "rectal"),
    "8333-7": ("body_temperature", "tympanic"),
    "29463-7": ("body_weight", None),
    "8302-2": ("body_height", None),
    "39156-5": ("bmi", None),
    "41982-0": ("body_fat_percentage", None),
    "2339-0": ("glucose", None),
    "41653-7": ("glucose", None),
    "2345-7": ("glucose", None),
    "15074-8": ("glucose", None),
    "14743-9": ("glucose", None),
    "14749-6": ("glucose", None),
    "4548-4": ("hba1c", None),
}

# MDC code -> (quantity, reference id, body site).
MDC: Final[Mapping[int, tuple[str, str, str | None]]] = {
    150456: ("spo2", "MDC_PULS_OXIM_SAT_O2", None),
    149530: ("pulse_rate", "MDC_PULS_OXIM_PULS_RATE", None),
    149546: ("pulse_rate", "MDC_PULS_RATE_NON_INV", None),
    147842: ("heart_rate", "MDC_ECG_HEART_RATE", None),
    150021: ("systolic_bp", "MDC_PRESS_BLD_NONINV_SYS", None),
    150022: ("diastolic_bp", "MDC_PRESS_BLD_NONINV_DIA", None),
    150023: ("mean_arterial_pressure", "MDC_PRESS_BLD_NONINV_MEAN", None),
    150052: ("cuff_pressure", "MDC_PRESS_CUFF", None),  # code not verified (§11.5)
    151562: ("respiratory_rate", "MDC_RESP_RATE", None),
    150344: ("body_temperature", "MDC_TEMP", None),
    150364: ("body_temperature", "MDC_TEMP_BODY", None),
    150392: ("body_temperature", "MDC_TEMP_TYMP", "tympanic"),
    188420: ("body_temperature", "MDC_TEMP_RECT", "rectal"),
    188424: ("body_temperature", "MDC_TEMP_ORAL", "oral"),
    188428: ("body_temperature", "MDC_TEMP_EAR", "ear"),
    188432: ("body_temperature", "MDC_TEMP_FINGER", "finger"),
    188448: ("body_temperature", "MDC_TEMP_TOE", "toe"),
    188452: ("body_temperature", "MDC_TEMP_AXILLA", "axillary"),
    188456: ("body_temperature", "MDC_TEMP_GIT", "gastro-intestinal"),
    150448: ("pulse_amplitude_index", "MDC_PULS_OXIM_PERF_REL", None),
    147240: ("rr_interval", "MDC_ECG_TIME_PD_RR_GL", None),
    188736: ("body_weight", "MDC_MASS_BODY_ACTUAL", None),
    188740: ("body_height", "MDC_LEN_BODY_ACTUAL", None),
    188752: ("bmi", "MDC_RATIO_MASS_BODY_LEN_SQ", None),
    188748: ("body_fat_percentage", "MDC_BODY_FAT", None),
    160184: ("glucose", "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", None),
    160188: ("glucose", "MDC_CONC_GLU_CAPILLARY_PLASMA", None),
    160192: ("glucose", "MDC_CONC_GLU_VENOUS_WHOLEBLOOD", None),
    160196: ("glucose", "MDC_CONC_GLU_VENOUS_PLASMA", None),
    160200: ("glucose", "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD", None),
    160204: ("glucose", "MDC_CONC_GLU_ARTERIAL_PLASMA", None),
    160220: ("hba1c", "MDC_CONC_HBA1C", None),
}
MDC_BY_REFID: Final[Mapping[str, int]] = {refid: code for code, (_, refid, _) in MDC.items()}

# MDC unit (partition 4) code -> (reference id, UCUM).
MDC_UNITS: Final[Mapping[int, tuple[str, str]]] = {
    266016: ("MDC_DIM_MMHG", "mm[Hg]"),
    265987: ("MDC_DIM_KILO_PASCAL", "kPa"),
    264864: ("MDC_DIM_BEAT_PER_MIN", "/min"),
    264928: ("MDC_DIM_RESP_PER_MIN", "/min"),
    262688: ("MDC_DIM_PERCENT", "%"),
    268192: ("MDC_DIM_DEGC", "Cel"),
    266560: ("MDC_DIM_FAHR", "[degF]"),
    263875: ("MDC_DIM_KILO_G", "kg"),
    263904: ("MDC_DIM_LB", "[lb_av]"),
    263441: ("MDC_DIM_CENTI_M", "cm"),
    263520: ("MDC_DIM_INCH", "[in_i]"),
    264096: ("MDC_DIM_KG_PER_M_SQ", "kg/m2"),
    264274: ("MDC_DIM_MILLI_G_PER_DL", "mg/dL"),
    266866: ("MDC_DIM_MILLI_MOLE_PER_L", "mmol/L"),
    264320: ("MDC_DIM_SEC", "s"),
    264338: ("MDC_DIM_MILLI_SEC", "ms"),
}
_UNIT_BY_REFID: Final[Mapping[str, str]] = {refid: ucum for refid, ucum in MDC_UNITS.values()}
# The MDC unit code an encoder should send for a UCUM unit (first entry wins: bpm for /min).
MDC_UNIT_FOR_UCUM: Final[Mapping[str, int]] = {
    ucum: code for code, (_, ucum) in reversed(list(MDC_UNITS.items()))
}

# Unit text as monitors print it (lower-case key) -> UCUM.
_UNIT_TEXT: Final[Mapping[str, str]] = {
    "mmhg": "mm[Hg]", "mm hg": "mm[Hg]", "mm(hg)": "mm[Hg]", "mm[hg]": "mm[Hg]",
    "kpa": "kPa", "bpm": "/min", "/min": "/min", "1/min": "/min", "min-1": "/min",
    "beats/min": "/min", "breaths/min": "/min", "br/min": "/min", "rpm": "/min",
    "{beats}/min": "/min", "{breaths}/min": "/min", "%": "%", "percent": "%",
    "cel": "Cel", "degc": "Cel", "deg c": "Cel", "\u00b0c": "Cel", "c": "Cel",
    "[degf]": "[degF]", "degf": "[degF]", "deg f": "[degF]", "\u00b0f": "[degF]", "f": "[degF]",
    "kg": "kg", "g": "g", "lb": "[lb_av]", "lbs": "[lb_av]", "[lb_av]": "[lb_av]",
    "cm": "cm", "m": "m", "in": "[in_i]", "[in_i]": "[in_i]", "kg/m2": "kg/m2",
    "kg/m^2": "kg/m2", "mg/dl": "mg/dL", "mmol/l": "mmol/L", "s": "s", "sec": "s", "ms": "ms",
}  # fmt: skip
_LOINC_SYSTEMS: Final = frozenset({"LN", "LOINC", "HTTP://LOINC.ORG"})
_MDC_SYSTEMS: Final = frozenset(
    {"MDC", "ISO11073-10101", "URN:ISO:STD:ISO:11073:10101", "ISO/IEEE 11073-10101"}
)
_STATUS_FLAGS: Final[Mapping[str, str]] = {"P": "preliminary", "C": "corrected"}
_COMPARATORS: Final[Mapping[str, str]] = {
    "<": "below-measuring-range",
    "<=": "below-measuring-range",
    ">": "above-measuring-range",
    ">=": "above-measuring-range",
}
_NM: Final = re.compile(r"\s*([<>]=?)?\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*")
_TS: Final = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?"
)
_SEGMENT_ID: Final = re.compile(r"[A-Z][A-Z0-9]{2}")
_CHARSETS: Final[Mapping[str, str]] = {
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "ASCII": "utf-8",  # lenient: devices declare ASCII and send UTF-8
    "8859/1": "latin-1",
    **{f"8859/{n}": f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 15)},
}


class Hl7Error(ValueError):
    """A message that cannot be read at all (no usable MSH). ``reason`` is stable text."""

    def __init__(self, reason: str, detail: str = "", header: Header | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.header = header  # when the MSH was readable enough to answer in its own terms


# -- separators and escapes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7 only

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it is written."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def unescape(self, text: str, charset: str = "utf-8") -> str:
        e = self.escape
        if not e or e not in text:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            end = text.find(e, i + 1) if char == e else -1
            if end < 0:
                out.append(char)
                i += 1
                continue
            out.append(self._sequence(text[i + 1 : end], text[i : end + 1], charset))
            i = end + 1
        return "".join(out)

    def _sequence(self, body: str, whole: str, charset: str) -> str:
        simple = {
            "F": self.field, "S": self.component, "T": self.subcomponent, "R": self.repetition,
            "E": self.escape, "P": self.truncation, ".br": "\n", ".sp": "\n", "H": "", "N": "",
        }  # fmt: skip
        if body in simple and (body != "P" or self.truncation):
            return simple[body]
        if body[:1] == "X" and len(body) > 1 and len(body) % 2 == 1:
            try:
                return _decode(bytes.fromhex(body[1:]), charset)
            except ValueError:
                pass
        return whole  # not understood: keep it as sent

    def escape_text(self, text: str) -> str:
        """Escape a leaf value for writing (the escape character first)."""
        e = self.escape
        pairs = [(e, "E"), (self.field, "F"), (self.component, "S"), (self.subcomponent, "T"),
                 (self.repetition, "R")]  # fmt: skip
        if self.truncation:
            pairs.append((self.truncation, "P"))
        table = {char: f"{e}{code}{e}" for char, code in pairs if char}
        text = "".join(table.get(c, c) for c in text)
        return text.replace("\r", f"{e}X0D{e}").replace("\n", f"{e}.br{e}")


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


# -- segments and messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment; ``fields[n]`` is field n still escaped (``fields[0]`` is the segment id)."""

    name: str
    fields: tuple[str, ...]
    raw: bytes
    separators: Separators
    charset: str = "utf-8"

    def field(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        value = self.field(n)
        rep = self.separators.repetition
        if not rep or (self.name == "MSH" and n <= 2):
            return [value]  # MSH-1 and MSH-2 hold the separators themselves
        return value.split(rep)

    def components(self, n: int, rep: int = 0) -> list[str]:
        """Field n, repetition ``rep``, as unescaped components (subcomponents kept joined)."""
        reps = self.repetitions(n)
        if rep >= len(reps):
            return []
        s = self.separators
        return [s.unescape(c, self.charset) for c in reps[rep].split(s.component)]

    def get(self, n: int, component: int = 1, rep: int = 0) -> str:
        parts = self.components(n, rep)
        return parts[component - 1].strip() if component <= len(parts) else ""

    def text(self, n: int) -> str:
        """The whole field unescaped, for display (separators inside kept as written)."""
        return self.separators.unescape(self.field(n), self.charset).strip()

    def texts(self, n: int) -> list[str]:
        """Field n's repetitions, each unescaped whole: split first, so an escaped repetition
        separator (``\\R\\``) stays a character of its repetition."""
        return [self.separators.unescape(r, self.charset) for r in self.repetitions(n)]

    def display(self, n: int) -> str:
        """Field n for a person: its repetitions unescaped and joined by a space."""
        return " ".join(t.strip() for t in self.texts(n) if t.strip())


@dataclass(frozen=True, slots=True)
class Header:
    """What an ACK needs from MSH, plus the separators and charset of the message."""

    separators: Separators
    charset: str
    segment: Segment

    @property
    def control_id(self) -> str:
        return self.segment.get(10)

    @property
    def message_type(self) -> tuple[str, str]:
        return self.segment.get(9, 1).upper(), self.segment.get(9, 2).upper()

    @property
    def version(self) -> str:
        return self.segment.get(12)

    @property
    def processing_id(self) -> str:
        return self.segment.get(11)


@dataclass(frozen=True, slots=True)
class Message:
    header: Header
    segments: tuple[Segment, ...]  # MSH first
    raw: bytes
    bad_segments: tuple[bytes, ...] = ()  # lines with no valid segment id

    @property
    def control_id(self) -> str:
        return self.header.control_id

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)


def split_segments(data: bytes) -> list[bytes]:
    """Segments without terminators, empty ones dropped (see the module docstring for LF)."""
    parts = data.replace(b"\r\n", CR).split(CR) if CR in data else data.split(LF)
    return [p for p in (part.lstrip(b"\n") for part in parts) if p.strip()]


def parse_header(first: bytes) -> Header:
    """The MSH segment (bytes up to its terminator): separators, charset and fields."""
    if not first.startswith(b"MSH") or len(first) < 5:
        raise Hl7Error("no-msh")
    head = first.decode("latin-1")  # separators are ASCII; MSH-18 is read before decoding
    fs = head[3]
    enc_end = head.find(fs, 4)
    enc = head[4:] if enc_end < 0 else head[4:enc_end]
    chars = [fs, *enc]
    if (
        not 1 <= len(enc) <= 5
        or len(set(chars)) != len(chars)
        or any(c.isalnum() or c.isspace() for c in chars)
    ):
        raise Hl7Error("bad-separators", repr(head[3:9]))
    padded = [*enc, "", "", "", ""]
    seps = Separators(fs, padded[0], padded[1], padded[2], padded[3], padded[4])
    latin = _segment(first, seps, "latin-1")
    charset_name = latin.repetitions(18)[0].split(seps.component)[0].strip().upper()
    charset = _CHARSETS.get(charset_name, "utf-8")
    segment = _segment(first, seps, charset)
    header = Header(seps, charset, segment)
    if not header.control_id:
        raise Hl7Error("no-control-id", header=header)
    return header


def _segment(raw: bytes, seps: Separators, charset: str) -> Segment:
    text = _decode(raw, charset)
    fields = text.split(seps.field)
    if fields[0] == "MSH":
        fields.insert(1, seps.field)  # MSH-1 is the separator itself: keep HL7 numbering
    return Segment(fields[0], tuple(fields), raw, seps, charset)


def parse_message(data: bytes) -> Message:
    """Parse one message (the bytes inside an MLLP frame). Raises :class:`Hl7Error` only when
    there is no usable MSH; odd segments are kept in ``bad_segments``."""
    lines = split_segments(data)
    if not lines:
        raise Hl7Error("empty")
    header = parse_header(lines[0])
    segments = [header.segment]
    bad: list[bytes] = []
    for line in lines[1:]:
        segment = _segment(line, header.separators, header.charset)
        if _SEGMENT_ID.fullmatch(segment.name) and segment.name != "MSH":
            segments.append(segment)
        else:
            bad.append(line)  # a second MSH means two messages in one frame: not ours to guess
    return Message(header, tuple(segments), data, tuple(bad))


# -- time --------------------------------------------------------------------------------------


def hl7_time_to_iso(text: str) -> str | None:
    """HL7 TS/DTM -> ISO 8601 at the precision sent, keeping ``+ZZZZ``; None when malformed.

    Minutes are padded when the sender gave only the hour (ISO times need minutes); a date
    alone stays a date and drops a zone (a date has none)."""
    m = _TS.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, zh, zm = m.groups()
    if (fraction and second is None) or (zm is not None and int(zm) >= 60):
        return None
    try:
        stamp = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
            int(second or 0),
        )  # fmt: skip
        zone = None
        if sign:
            offset = timedelta(hours=int(zh), minutes=int(zm))
            zone = timezone(-offset if sign == "-" else offset)
    except ValueError:
        return None
    if hour is None:
        return stamp.strftime("%Y" if month is None else "%Y-%m" if day is None else "%Y-%m-%d")
    iso = stamp.strftime("%Y-%m-%dT%H:%M")
    if second is not None:
        iso += stamp.strftime(":%S") + (f".{fraction}" if fraction else "")
    if zone is not None:
        iso += f"{sign}{zh}:{zm}"
    return iso


def iso_to_hl7_time(iso: str) -> str:
    """ISO 8601 (as :func:`hl7_time_to_iso` writes it) -> HL7 TS."""
    date, _, time = iso.partition("T")
    zone = ""
    for sign in "+-":
        if sign in time:
            time, _, offset = time.partition(sign)
            zone = sign + offset.replace(":", "")
    if time.endswith("Z"):
        time, zone = time[:-1], "+0000"
    return date.replace("-", "") + time.replace(":", "") + zone


def format_hl7_time(moment: datetime) -> str:
    """An aware or naive datetime as HL7 TS to the second (``+ZZZZ`` when aware)."""
    text = moment.strftime("%Y%m%d%H%M%S")
    offset = moment.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text


# -- ORU^R01 -----------------------------------------------------------------------------------


def decode_oru(message: Message, code_map: Mapping[str, CodeMapping] | None = None) -> list[Event]:
    """The events of one ORU^R01 message, in segment order (see the module docstring).
    ``code_map``: the device's site code map (OBX-3 code -> quantity), consulted first."""
    events: list[Event] = []
    msh = message.header.segment
    if message.header.message_type[:2] != ("ORU", "R01"):
        return [Rejected(message.raw, "unsupported-message-type")]
    app = msh.get(3)
    if app:
        events.append(DeviceInfo("sending-application", app))
    clock = hl7_time_to_iso(msh.get(7))
    if clock is not None:
        events.append(DeviceInfo("device-clock", clock))
    events.extend(Rejected(line, "bad-segment") for line in message.bad_segments)
    facts = device_facts(message)
    if facts.any():
        events.append(facts)
    patient = ""
    obr_time = ""
    equipment_seen: set[str] = set()
    last: int | None = None  # index of the last measurement, for NTE comments
    origin = (msh.text(3), msh.text(4), msh.get(7), message.control_id)
    position = 0
    for seg in message.segments[1:]:
        previous, last = last, None
        if seg.name == "PID":
            patient = seg.get(3)
        elif seg.name == "OBR":
            obr_time = seg.get(7)
        elif seg.name == "OBX":
            position += 1
            event = _observation(seg, patient, obr_time, code_map or {})
            if isinstance(event, Measurement):
                key = source_key("hl7", *origin, *_obx_identity(seg), position)
                event = replace(event, source_key=key)
            equipment = seg.get(18)
            if equipment and equipment not in equipment_seen:
                equipment_seen.add(equipment)
                events.append(DeviceInfo("equipment-id", equipment))
            if isinstance(event, Measurement):
                last = len(events)
            events.append(event)
        elif seg.name == "NTE" and previous is not None:
            m = events[previous]
            assert isinstance(m, Measurement)
            comment = seg.display(3)
            if comment:
                events[previous] = replace(m, context=(*m.context, ("comment", comment)))
            last = previous  # several NTE may follow one OBX
    return events


def unknown_observations(message: Message, events: Sequence[Event]) -> list[AckError]:
    """The message's OBX that :func:`decode_oru` rejected as ``unknown-observation``, as ACK
    errors naming their code (table 0357 ``103``: table value not found; location OBX-3 of
    that OBX, by set id, else by its position among the OBX)."""
    rejected = {
        e.raw for e in events if isinstance(e, Rejected) and e.reason == "unknown-observation"
    }
    out: list[AckError] = []
    position = 0
    for seg in message.segments[1:]:
        if seg.name != "OBX":
            continue
        position += 1
        if seg.raw not in rejected:
            continue
        code, text, system = ([*seg.components(3), "", "", ""])[:3]
        named = " ".join(p for p in (code.strip(), text.strip()) if p) or "(none)"
        if system.strip():
            named += f" ({system.strip()})"
        set_id = seg.get(1)
        sequence = int(set_id) if set_id.isdigit() and len(set_id) < 9 else position
        out.append(AckError("103", f"unknown observation code {named}", "OBX", sequence, 3))
    return out


def _eui64(text: str) -> str | None:
    """16 hex digits (HL7's EI ``...^EUI-64``, IHE PCD) as "FE-ED-AB-EE-DE-AD-77-C3"."""
    digits = text.replace("-", "").replace(":", "").strip()
    if not re.fullmatch(r"[0-9A-Fa-f]{16}", digits) or not int(digits, 16):
        return None
    return "-".join(digits[i : i + 2].upper() for i in range(0, 16, 2))


def device_facts(message: Message) -> DeviceFacts:
    """What an ORU says about the device that sent it: the sending application (MSH-3.1: the
    device or its gateway's name for itself) as the model; the equipment instance identifier
    (OBX-18, IHE PCD) as the EUI-64 system id when it says ``EUI-64``, else as the serial
    number; an MSH-3 EUI-64 when no OBX names one. MSH-4, the sending facility, is an
    organisation, not a fact about the device: it stays in the source keys only."""
    msh = message.header.segment
    system_id = serial = None
    for seg in message.segments[1:]:
        if seg.name != "OBX" or not seg.get(18):
            continue
        if seg.get(18, 2).upper() == "EUI-64" or seg.get(18, 3).upper() == "EUI-64":
            system_id = system_id or _eui64(seg.get(18))
        else:
            serial = serial or fact(seg.get(18))
    if system_id is None and "EUI-64" in (msh.get(3, 3).upper(), msh.get(3, 2).upper()):
        system_id = _eui64(msh.get(3, 2)) or _eui64(msh.get(3, 1))
    return DeviceFacts(serial=serial, system_id=system_id, model=fact(msh.get(3)))


def _obx_identity(seg: Segment) -> tuple[str, str, str, str]:
    """OBX-1 set id, OBX-3 code and coding system, OBX-4 sub-id (for the source key)."""
    return seg.get(1), seg.get(3, 1), seg.get(3, 3).upper(), seg.get(4)


def identify(seg: Segment) -> tuple[str, str | None, int | None, str | None] | None:
    """OBX-3 -> (quantity, LOINC sent, MDC code sent, body site), or None when unknown."""
    parts = seg.components(3)
    for start in (0, 3):
        code, text, system = ([*parts[start : start + 3], "", "", ""])[:3]
        code, text, system = code.strip(), text.strip(), system.strip().upper()
        if system in _LOINC_SYSTEMS and code in LOINC:
            key, site = LOINC[code]
            return key, code, None, site
        if system in _MDC_SYSTEMS:
            mdc = int(code) if code.isdigit() else MDC_BY_REFID.get(code or text)
            if mdc is not None and mdc not in MDC:
                mdc = MDC_BY_REFID.get(text)  # a code we lack, but a reference id we know
            if mdc is not None and mdc in MDC:
                key, _, site = MDC[mdc]
                return key, None, mdc, site
    return None


def map_unit(seg: Segment) -> str | None:
    """OBX-6 -> UCUM; None when it cannot be mapped."""
    code, text, system = ([p.strip() for p in seg.components(6)] + ["", "", ""])[:3]
    system = system.upper()
    if system == "UCUM" and code:
        return code
    if system in _MDC_SYSTEMS or system == "":
        if code.isdigit() and int(code) in MDC_UNITS:
            return MDC_UNITS[int(code)][1]
        for ref in (code, text):
            if ref in _UNIT_BY_REFID:
                return _UNIT_BY_REFID[ref]
    for spelled in (code, text):
        if spelled.lower() in _UNIT_TEXT:
            return _UNIT_TEXT[spelled.lower()]
    return None


def _site_code(seg: Segment, code_map: Mapping[str, CodeMapping]) -> CodeMapping | None:
    """OBX-3 code (the first triplet, then the alternate) in the site's code map."""
    parts = seg.components(3)
    for start in (0, 3):
        code = parts[start].strip() if start < len(parts) else ""
        if code and code in code_map:
            return code_map[code]
    return None


def _observation(
    seg: Segment, patient: str, obr_time: str, code_map: Mapping[str, CodeMapping]
) -> Event:
    mapped = _site_code(seg, code_map)
    found = identify(seg) if mapped is None else (mapped.quantity, None, None, None)
    value_type = seg.get(2).upper()
    value_text = seg.text(5)  # repetitions shown as sent (value-text "97~98")
    if found is None:
        if not value_type and not value_text:
            parts = seg.components(3)
            shown = " ".join(p.strip() for p in (seg.get(4), *parts[:2]) if p.strip())
            return DeviceInfo("device-component", shown)
        return Rejected(seg.raw, "unknown-observation")
    key, loinc, mdc, site = found
    flags: list[str] = []
    context: list[tuple[str, str]] = []
    if patient:
        context.append(("patient-id", patient))
    if site:
        context.append(("site", site))
    for name, n in (("sub-id", 4), ("equipment-id", 18)):
        if seg.get(n):
            context.append((name, seg.get(n)))
    status = seg.get(11).upper()
    if status:
        context.append(("result-status", status))
        if status in _STATUS_FLAGS:
            flags.append(_STATUS_FLAGS[status])
    if seg.text(7):
        context.append(("reference-range", seg.text(7)))

    value, absent = _value(seg, value_type, value_text, flags, context)
    if status == "X":
        value, absent = None, "error"  # cannot be obtained, whatever OBX-5 holds

    unit: str | None = None
    if seg.field(6).strip():
        unit = map_unit(seg)
        if unit is None:
            unit = seg.get(6) or seg.get(6, 2)
            flags.append("unit-unmapped")
    elif value is not None:
        flags.append("unit-missing")  # catalogue unit assumed; the monitor did not say

    for rep in range(len(seg.repetitions(8))):
        flag = seg.get(8, 1, rep)
        if flag:
            flags.append(f"abnormal:{flag}")

    time_text = seg.get(14) or obr_time
    device_time = hl7_time_to_iso(time_text) if time_text else None
    if time_text and device_time is None:
        flags.append("bad-device-time")

    if mapped is not None:
        refused = unit_refused(mapped, unit)
        if refused:
            return Rejected(seg.raw, refused)
        code, text, system = ([p.strip() for p in seg.components(3)] + ["", "", ""])[:3]
        context.append(("device-code", "^".join((code, text, system)).rstrip("^")))
        return mapped_measurement(
            mapped, value, unit, device_time=device_time, flags=tuple(flags),
            absent_reason=absent, raw=seg.raw, context=tuple(context), status=status or None,
        )  # fmt: skip
    m = checked(measurement(
        key, value, unit, loinc=loinc, device_time=device_time, flags=tuple(flags),
        absent_reason=absent, raw=seg.raw, context=tuple(context), status=status or None,
    ))  # fmt: skip
    return m if mdc is None else replace(m, mdc=mdc)  # keep the code the monitor sent


def _value(
    seg: Segment,
    value_type: str,
    text: str,
    flags: list[str],
    context: list[tuple[str, str]],
) -> tuple[float | None, str | None]:
    """OBX-2/OBX-5 -> (value, dataAbsentReason); comparators go to flags and context."""
    if not text:
        return None, "unknown"
    single = len(seg.repetitions(5)) == 1
    numeric: re.Match[str] | None = None
    if value_type == "NM" and single:
        numeric = _NM.fullmatch(text)
    elif value_type == "SN" and single:
        comparator, number, separator, second = ([*seg.components(5), "", "", "", ""])[:4]
        if not separator.strip() and not second.strip():
            op = "" if comparator.strip() == "=" else comparator.strip()
            numeric = _NM.fullmatch(op + number)
    if numeric is None:
        context.append(("value-text", text))
        if value_type:
            context.append(("value-type", value_type))
        return None, "as-text"
    op, number = numeric.groups()
    if op:
        flags.append(_COMPARATORS[op])
        context.append(("comparator", op))
    return float(number), None


# -- acknowledgement ---------------------------------------------------------------------------

# HL7 table 0357 message error condition codes used in ERR-3.
ERROR_CODES: Final[Mapping[str, str]] = {
    "no-msh": "100",  # segment sequence error
    "no-control-id": "101",  # required field missing
    "bad-separators": "102",  # data type error
    "unsupported-message-type": "200",
    "commit-failed": "207",  # application internal error
}


@dataclass(frozen=True, slots=True)
class AckError:
    """One error an ACK reports: its HL7 table 0357 condition code, a text, where it was
    (segment id, that segment's sequence number among segments of its id, field number; 0
    when unknown) and its severity (``E`` error, ``W`` warning: the message was accepted)."""

    code: str
    text: str
    segment: str = ""
    sequence: int = 0
    field: int = 0
    severity: str = "E"


def build_ack(
    header: Header | None,
    code: str,
    control_id: str,
    *,
    text: str = "",
    timestamp: str = "",
    application: str = "EDGE-AGENT",
    error_code: str = "",
    errors: Sequence[AckError] = (),
) -> bytes:
    """The ACK message (no MLLP framing): MSH with sender and receiver swapped and a new control
    id, ``MSA|code|<MSH-10>[|text]``, and ERR for ``errors`` (for an AE/AR without any: one
    from ``error_code`` and ``text``). Written with the separators of the message it answers
    (defaults when its MSH was unreadable), in the structure of its version (MSH-12):

    - MSH-9 ``ACK^<trigger>^ACK`` from v2.3.1 (the message structure component), ``ACK^<trigger>``
      in v2.2 and v2.3 (a third component is invalid there), ``ACK`` in v2.1;
    - ERR from v2.5: one segment per error, ERR-2 location, ERR-3 code, ERR-4 severity; v2.2
      to v2.4: one ERR whose ERR-1 repeats (segment^sequence^field^code&text&HL70357); none in
      v2.1 (MSA-3 says it);
    - MSA-3 (the text) up to v2.6 (withdrawn in v2.7).
    """
    seps = header.separators if header is not None else Separators()
    fs, cs = seps.field, seps.component
    if header is not None:
        msh = header.segment
        receiving_app = msh.field(3)
        receiving_facility = msh.field(4)
        sending_app = msh.field(5) or seps.escape_text(application)
        sending_facility = msh.field(6)
        trigger = msh.get(9, 2)
        processing = msh.field(11) or "P"
        version = msh.field(12) or "2.6"
        answered = header.control_id
        charset = msh.field(18)
    else:
        receiving_app = receiving_facility = sending_facility = trigger = charset = answered = ""
        sending_app, processing, version = seps.escape_text(application), "P", "2.6"
    release = hl7_version(msh.get(12) if header is not None else "") or (2, 6, 0)
    if release < (2, 2, 0) or not trigger:
        message_type = "ACK"
    elif release < (2, 3, 1):
        message_type = cs.join(["ACK", trigger])
    else:
        message_type = cs.join(["ACK", trigger, "ACK"])
    fields = [
        "MSH", seps.encoding_characters, sending_app, sending_facility, receiving_app,
        receiving_facility, timestamp, "", message_type, seps.escape_text(control_id),
        processing, version,
    ]  # fmt: skip
    if charset:
        fields += [""] * 5 + [charset]  # MSH-13..17 empty, MSH-18 echoed
    segments = [fs.join(fields)]
    msa = ["MSA", code, seps.escape_text(answered)]
    if text and release < (2, 7, 0):
        msa.append(seps.escape_text(text))
    segments.append(fs.join(msa))
    if not errors and code != "AA":
        errors = [AckError(error_code or "207", text or "error")]
    segments.extend(_err_segments(errors, seps, release))
    encoding = header.charset if header is not None else "utf-8"
    return "".join(s + "\r" for s in segments).encode(encoding, "replace")


def _err_segments(
    errors: Sequence[AckError], seps: Separators, release: tuple[int, int, int]
) -> list[str]:
    fs, cs, ss = seps.field, seps.component, seps.subcomponent
    if not errors or release < (2, 2, 0):
        return []
    if release < (2, 5, 0):  # ERR-1, ELD: segment^sequence^field^code&text&HL70357, repeating
        eld = [cs.join([
            e.segment, str(e.sequence or ""), str(e.field or ""),
            ss.join([e.code, seps.escape_text(e.text), "HL70357"]),
        ]) for e in errors]  # fmt: skip
        return [fs.join(["ERR", seps.repetition.join(eld)])]
    out = []
    for e in errors:
        where = cs.join([e.segment, str(e.sequence or ""), str(e.field or "")]).rstrip(cs)
        condition = cs.join([e.code, seps.escape_text(e.text), "HL70357"])
        out.append(fs.join(["ERR", "", where, condition, e.severity]))
    return out


def hl7_version(text: str) -> tuple[int, int, int] | None:
    """MSH-12 ``2.3.1`` -> (2, 3, 1); None when it is not a version number."""
    parts = re.findall(r"\d+", text)
    if len(parts) < 2:
        return None
    return int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
