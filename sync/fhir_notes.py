"""What a device said beside a value: comments -> ``Observation.note``, the reference range it
printed -> ``Observation.referenceRange`` (pure: store rows in, FHIR elements out).

Both come from the reading's ``context`` (the store's JSON column, as the decoder wrote it):
``comment`` (HL7 NTE after the OBX, ASTM C record after the R; one pair per comment, in
order) and ``reference-range`` (HL7 OBX-7, ASTM R-5). A range is sent as the device wrote it
(``text``), with ``low``/``high`` in the reading's unit when it reads as ``low-high``,
``<high``/``<=high`` or ``>low``/``>=low``; FHIR asks for one of low, high or text
(constraint ref-1), so text is always there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["notes", "reference_range"]

UCUM: Final = "http://unitsofmeasure.org"
_NUMBER: Final = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))"
_BETWEEN: Final = re.compile(rf"\s*{_NUMBER}\s*(?:-|–|\.\.|to)\s*{_NUMBER}\s*")
_BOUND: Final = re.compile(rf"\s*(<=?|>=?|≤|≥)\s*{_NUMBER}\s*")


def pairs(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The row's context as (key, value) pairs, in order, repeated keys kept."""
    raw = row.get("context")
    try:
        items = json.loads(raw) if isinstance(raw, str) else (raw or [])
        return [(str(k), str(v)) for k, v in items]
    except (ValueError, TypeError):
        return []


def notes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``Observation.note``: the comments of the rows, in order, each once."""
    texts = dict.fromkeys(
        v.strip() for row in rows for k, v in pairs(row) if k == "comment" and v.strip()
    )
    return [{"text": text} for text in texts]


def _quantity(number: str, row: Mapping[str, Any], unmapped: bool) -> dict[str, Any]:
    value = float(number)
    out: dict[str, Any] = {
        "value": int(value) if value.is_integer() and "." not in number else value
    }
    unit = row.get("unit")
    if unit:
        out["unit"] = str(unit)
        if not unmapped:  # a unit the device spelt its own way is not a UCUM code
            out.update(system=UCUM, code=str(unit))
    return out


def reference_range(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``Observation.referenceRange`` of one reading (empty when the device gave none)."""
    text = next((v.strip() for k, v in pairs(row) if k == "reference-range" and v.strip()), "")
    if not text:
        return []
    flags = row.get("flags")
    unmapped = "unit-unmapped" in (json.loads(flags) if isinstance(flags, str) else flags or [])
    found: dict[str, Any] = {}
    between = _BETWEEN.fullmatch(text)
    bound = _BOUND.fullmatch(text)
    if between is not None and float(between[1]) <= float(between[2]):
        found["low"] = _quantity(between[1], row, unmapped)
        found["high"] = _quantity(between[2], row, unmapped)
    elif bound is not None:
        side = "high" if bound[1] in ("<", "<=", "≤") else "low"
        found[side] = _quantity(bound[2], row, unmapped)
    found["text"] = text
    return [found]
