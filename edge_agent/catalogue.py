"""The quantity catalogue: one table (``catalogue.toml``) for decoding, storage, FHIR, display.

Every :class:`~edge_agent.models.Measurement` names a quantity key from this table; the
catalogue gives its LOINC and MDC codes, canonical UCUM unit, names in fr/ar/en and the
plausible/alert ranges used to flag (never drop) values.

LOINC follows the property and the sample: a quantity's ``loinc`` is the code for its canonical
unit; ``loinc_by`` gives the code for another property (``"mmol/L"``: moles/volume instead of
mass/volume) or sample (``"venous-whole-blood mg/dL"``). :func:`loinc_for` picks it. ``convert``
gives the quantity's own factor (and offset) from another unit to the canonical one, for the
range check only: the stored value keeps the device's unit.

A site may define quantities the catalogue lacks (an analyser's test map, an HL7 code map:
``drivers.protocols.sitecodes``); their readings carry their own LOINC, unit and names, and
:func:`range_flags` does not know them (the decoder flags them against the site's ranges).

Quality-control readings (flag ``control``: control solution, an analyser's QC run) are never
flagged ``alert``: a control value outside the patient range is the point of the test.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Final

LANGUAGES: Final = ("en", "fr", "ar")


@dataclass(frozen=True, slots=True)
class Quantity:
    key: str
    ucum: str
    names: Mapping[str, str]
    loinc: str | None = None
    mdc: int | None = None
    plausible: tuple[float, float] | None = None
    alert: tuple[float, float] | None = None
    loinc_by: Mapping[str, str] = field(default_factory=dict)  # "unit" / "sample unit" -> LOINC
    convert: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # unit -> (k, b)
    limits: tuple[float, float] | None = None  # physically possible (policy.py)

    def name(self, lang: str = "en") -> str:
        return self.names.get(lang) or self.names["en"]


# Factors to the canonical unit, for range checks only (stored values keep the device's unit).
# Affine conversions (temperature) are functions.
_TO_CANONICAL: Final[Mapping[tuple[str, str], float]] = {
    ("kPa", "mm[Hg]"): 7.500615758,
    ("[lb_av]", "kg"): 0.45359237,
    ("g", "kg"): 0.001,
    ("[in_i]", "cm"): 2.54,
    ("m", "cm"): 100.0,
    ("ms", "s"): 0.001,
}


class UnknownQuantity(KeyError):
    """A decoder or config named a quantity the catalogue does not have (a caller bug)."""


@cache
def catalogue() -> Mapping[str, Quantity]:
    text = resources.files("edge_agent").joinpath("catalogue.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    table: dict[str, Quantity] = {}
    for key, entry in raw.items():
        table[key] = Quantity(
            key=key,
            ucum=entry["ucum"],
            names=dict(entry["names"]),
            loinc=entry.get("loinc"),
            mdc=entry.get("mdc"),
            plausible=_pair(entry.get("plausible")),
            alert=_pair(entry.get("alert")),
            loinc_by=dict(entry.get("loinc_by", {})),
            convert={unit: _affine(v) for unit, v in entry.get("convert", {}).items()},
            limits=_pair(entry.get("limits")),
        )
    return table


def _affine(value: float | list[float]) -> tuple[float, float]:
    """``factor`` or ``[factor, offset]``: canonical = value × factor + offset."""
    if isinstance(value, list):
        factor, offset = value
        return (float(factor), float(offset))
    return (float(value), 0.0)


def _pair(value: list[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    low, high = value
    return (float(low), float(high))


def quantity(key: str) -> Quantity:
    try:
        return catalogue()[key]
    except KeyError:
        raise UnknownQuantity(key) from None


def known(key: str) -> bool:
    return key in catalogue()


def loinc_for(key: str, unit: str, sample: str | None = None) -> str | None:
    """The LOINC of quantity ``key`` measured in ``unit`` (its property) on ``sample``: the
    sample-and-unit code, else the unit's code, else the quantity's own code."""
    q = quantity(key)
    if sample is not None and f"{sample} {unit}" in q.loinc_by:
        return q.loinc_by[f"{sample} {unit}"]
    return q.loinc_by.get(unit, q.loinc)


def to_canonical(value: float, unit: str, canonical: str, key: str | None = None) -> float | None:
    """Convert ``value`` from ``unit`` to ``canonical`` (with quantity ``key``'s own factors
    when given); None when no conversion is known."""
    if unit == canonical:
        return value
    if key is not None and known(key) and unit in quantity(key).convert:
        k, b = quantity(key).convert[unit]
        return value * k + b
    if unit == "[degF]" and canonical == "Cel":
        return (value - 32.0) * 5.0 / 9.0
    factor = _TO_CANONICAL.get((unit, canonical))
    return None if factor is None else value * factor


def range_flags(
    key: str, value: float | None, unit: str, *, control: bool = False
) -> tuple[str, ...]:
    """Flags for a value: ``implausible`` outside the physical range, ``alert`` outside the
    clinical range (never for a ``control`` reading), ``unit-unknown`` when the unit cannot be
    compared. A site-defined quantity (not in the catalogue) gets none here: its decoder flagged
    it against the site's ranges. Never raises on values."""
    if value is None or not known(key):
        return ()
    q = quantity(key)
    canonical = to_canonical(value, unit, q.ucum, key)
    if canonical is None:
        return ("unit-unknown",)
    flags: list[str] = []
    if q.plausible is not None and not q.plausible[0] <= canonical <= q.plausible[1]:
        flags.append("implausible")
    elif not control and q.alert is not None and not q.alert[0] <= canonical <= q.alert[1]:
        flags.append("alert")
    return tuple(flags)
