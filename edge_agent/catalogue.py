"""The quantity catalogue: one table (``catalogue.toml``) for decoding, storage, FHIR, display.

Every :class:`~edge_agent.models.Measurement` names a quantity key from this table; the
catalogue gives its LOINC and MDC codes, canonical UCUM unit, names in fr/ar/en and the
plausible/alert ranges used to flag (never drop) values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
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
    ("mmol/L", "mg/dL"): 18.016,  # glucose molar mass 180.16 g/mol
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
        )
    return table


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


def to_canonical(value: float, unit: str, canonical: str) -> float | None:
    """Convert ``value`` from ``unit`` to ``canonical``; None when no conversion is known."""
    if unit == canonical:
        return value
    if unit == "[degF]" and canonical == "Cel":
        return (value - 32.0) * 5.0 / 9.0
    factor = _TO_CANONICAL.get((unit, canonical))
    return None if factor is None else value * factor


def range_flags(key: str, value: float | None, unit: str) -> tuple[str, ...]:
    """Flags for a value: ``implausible`` outside the physical range, ``alert`` outside the
    clinical range, ``unit-unknown`` when the unit cannot be compared. Never raises on values."""
    if value is None:
        return ()
    q = quantity(key)
    canonical = to_canonical(value, unit, q.ucum)
    if canonical is None:
        return ("unit-unknown",)
    flags: list[str] = []
    if q.plausible is not None and not q.plausible[0] <= canonical <= q.plausible[1]:
        flags.append("implausible")
    elif q.alert is not None and not q.alert[0] <= canonical <= q.alert[1]:
        flags.append("alert")
    return tuple(flags)
