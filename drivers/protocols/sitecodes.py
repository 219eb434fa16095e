"""A site's code map: device-local test or observation codes -> quantities, checked at load.

Used by the ASTM test map (R-3 local test codes) and the HL7 code map (OBX-3 codes the
built-in LOINC/MDC tables do not know). The JSON form, one entry per local code::

    {"CHOL": {"quantity": "cholesterol"},
     "GLU":  {"quantity": "glucose", "loinc": "2345-7"},
     "NA":   {"quantity": "sodium", "loinc": "2951-2", "ucum": "mmol/L",
              "names": {"en": "Sodium", "fr": "Sodium", "ar": "الصوديوم"},
              "plausible": [100, 180], "alert": [125, 155]}}

- A catalogue quantity takes only ``quantity``, and optionally ``sample`` (one the catalogue
  codes for that quantity, e.g. ``serum-or-plasma`` for glucose) or a fixed ``loinc``; without
  ``loinc`` the LOINC follows the unit each result comes in (mass or moles per volume) and the
  sample: :func:`edge_agent.catalogue.loinc_for`.
- Otherwise the LOINC is the identity, and the ``quantity`` only the site's name for it. A
  LOINC the catalogue has (``{"CHOL": {"quantity": "chol", "loinc": "2093-3"}}``) needs
  nothing more: the readings are the catalogue's quantity (``cholesterol``), with that LOINC.
- A LOINC the catalogue lacks (a well-formed code with a good check digit) is a quantity the
  site *defines*: optional ``ucum`` (a unit in UCUM syntax, built from the atoms this module
  knows; without it each result's own unit is used, and a result whose unit is not UCUM is
  rejected ``unit-not-ucum``, raw bytes kept), optional ``names`` (``en`` required when
  given; ``fr``, ``ar`` optional; default: the key), optional ``plausible`` and ``alert``
  ranges (in ``ucum``, which they need). Several codes may name one site quantity if their
  definitions agree. A definition that reuses a catalogue key is refused (the catalogue's
  meaning wins).

Readings of a site quantity carry the site's LOINC and unit, the names in ``context``
(``name:en``...) and ``("quantity-source", "site")``; range flags are computed here against
the site's ranges (the store's catalogue check does not know the quantity).

Everything is checked when the config is loaded (:mod:`drivers.options`), so a bad map stops
the agent with a one-line message naming the code, never at the first result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from drivers.protocols.policy import checked
from edge_agent.catalogue import LANGUAGES, catalogue, loinc_for
from edge_agent.models import Measurement, measurement

__all__ = [
    "CodeMapError",
    "CodeMapping",
    "SiteQuantity",
    "catalogue_loinc",
    "load_code_map",
    "loinc_ok",
    "mapped_measurement",
    "ucum_ok",
    "unit_refused",
]

_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_LOINC: Final = re.compile(r"(\d{1,7})-(\d)")
# UCUM (unitsofmeasure.org) atoms a point-of-care result may use, and the metric prefixes.
_ATOMS: Final = frozenset(
    {
        "g",
        "L",
        "l",
        "mol",
        "eq",
        "U",
        "[IU]",
        "[iU]",
        "%",
        "m",
        "s",
        "min",
        "h",
        "d",
        "wk",
        "mo",
        "a",
        "Cel",
        "[degF]",
        "mm[Hg]",
        "Pa",
        "bar",
        "kat",
        "1",
        "10",
        "[ppm]",
        "[ppb]",
        "Ohm",
        "J",
        "cal",
        "[lb_av]",
        "[in_i]",
        "deg",
        "osm",
        "[pH]",
        "cells",
        "[arb'U]",
        "[HPF]",
        "[LPF]",
        "[CFU]",
    }
)
_PREFIXES: Final = (
    "da",
    "Y",
    "Z",
    "E",
    "P",
    "T",
    "G",
    "M",
    "k",
    "h",
    "d",
    "c",
    "m",
    "u",
    "n",
    "p",
    "f",
    "a",
)
_POWER: Final = re.compile(r"10[*^][+-]?\d{1,2}")
_TERM: Final = re.compile(r"(?P<unit>[A-Za-z%\[\]'_0-9]*?)(?P<exp>[+-]?\d+)?(?P<ann>\{[^{}]*\})?")


class CodeMapError(ValueError):
    """The site's code map is invalid; the message names the code at fault."""


@dataclass(frozen=True, slots=True)
class SiteQuantity:
    """A quantity defined by the site, not in the catalogue."""

    key: str
    loinc: str
    ucum: str
    names: Mapping[str, str]
    plausible: tuple[float, float] | None = None
    alert: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class CodeMapping:
    """Where one device-local code goes: a catalogue quantity (with an optional LOINC) or a
    site-defined quantity (``site`` set)."""

    quantity: str
    loinc: str | None = None
    site: SiteQuantity | None = field(default=None)
    sample: str | None = None


def loinc_ok(code: str) -> bool:
    """``NNNNN-C`` with the LOINC mod-10 check digit (Luhn over the digits before the hyphen)."""
    match = _LOINC.fullmatch(code)
    if match is None:
        return False
    total = 0
    for i, digit in enumerate(int(c) for c in reversed(match[1])):
        if i % 2 == 0:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return (10 - total % 10) % 10 == int(match[2])


def _atom_ok(unit: str) -> bool:
    if unit in _ATOMS:
        return True
    return any(unit.startswith(p) and unit[len(p) :] in _ATOMS for p in _PREFIXES)


def ucum_ok(unit: str) -> bool:
    """A unit in UCUM's case-sensitive syntax built from known atoms: terms joined by ``.``
    and ``/``, each an atom with an optional metric prefix and exponent, or a number, or an
    annotation (``{INR}``, ``/{HPF}``). A pragmatic subset, not the whole grammar."""
    if not unit or unit.strip() != unit or " " in unit:
        return False
    body = unit[1:] if unit.startswith("/") else unit
    for term in re.split(r"[./]", body):
        if _POWER.fullmatch(term):
            continue  # 10*3, 10^9: a power of ten
        match = _TERM.fullmatch(term)
        if match is None or not term:
            return False
        atom, annotation = match["unit"], match["ann"]
        if not atom:
            if annotation is None and match["exp"] is None:
                return False
            continue
        if not (_atom_ok(atom) or atom.isdigit()):
            return False
    return True


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (small strings: quantity keys)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _nearest(key: str, known: Mapping[str, object]) -> str | None:
    """The catalogue key one or two edits away from a misspelt ``key``, if any."""
    best = min(known, key=lambda k: _distance(key, k))
    return best if _distance(key, best) <= 2 else None


def _pair(code: str, name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or value[0] > value[1]
    ):
        raise CodeMapError(f"code {code!r}: {name} must be [low, high] numbers, low <= high")
    return (float(value[0]), float(value[1]))


def catalogue_loinc(loinc: str) -> str | None:
    """The catalogue quantity whose LOINC (or one of its unit/sample LOINCs) this is."""
    for key, q in catalogue().items():
        if loinc == q.loinc or loinc in q.loinc_by.values():
            return key
    return None


def _define(code: str, key: str, entry: Mapping[str, Any]) -> SiteQuantity:
    loinc, ucum, names = entry.get("loinc"), entry.get("ucum", ""), entry.get("names")
    if not isinstance(loinc, str):
        near = _nearest(key, catalogue())
        hint = f"did you mean {near!r}? or " if near else ""
        raise CodeMapError(
            f"code {code!r}: unknown quantity {key!r} (not in the catalogue): {hint}give its "
            "loinc (a LOINC the catalogue knows needs nothing more; another may add ucum and "
            "names)"
        )
    if not loinc_ok(loinc):
        raise CodeMapError(f"code {code!r}: {loinc!r} is not a LOINC code (NNNN-C, check digit)")
    if not isinstance(ucum, str) or (ucum and not ucum_ok(ucum)):
        raise CodeMapError(f"code {code!r}: {ucum!r} is not a UCUM unit this agent knows")
    if names is None:
        names = {"en": key}
    if (
        not isinstance(names, Mapping)
        or "en" not in names
        or set(names) - set(LANGUAGES)
        or (not all(isinstance(v, str) and v.strip() for v in names.values()))
    ):
        raise CodeMapError(
            f"code {code!r}: names must give en (and may give fr, ar) as non-empty text"
        )
    plausible = _pair(code, "plausible", entry.get("plausible"))
    alert = _pair(code, "alert", entry.get("alert"))
    if (plausible or alert) and not ucum:
        raise CodeMapError(
            f"code {code!r}: plausible and alert ranges need the ucum unit they are in"
        )
    return SiteQuantity(key, loinc, ucum, dict(names), plausible, alert)


def load_code_map(obj: Any) -> dict[str, CodeMapping]:
    """Parse and check the JSON form (see the module docstring); raises :class:`CodeMapError`."""
    if not isinstance(obj, Mapping):
        raise CodeMapError("expected an object of code -> mapping")
    known = catalogue()
    result: dict[str, CodeMapping] = {}
    defined: dict[str, SiteQuantity] = {}
    for code, entry in obj.items():
        if not isinstance(code, str) or not code.strip():
            raise CodeMapError(f"invalid code {code!r}")
        if not isinstance(entry, Mapping):
            raise CodeMapError(f"code {code!r}: expected an object with 'quantity'")
        key = entry.get("quantity")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise CodeMapError(f"code {code!r}: quantity must be a lower-case key, not {key!r}")
        loinc = entry.get("loinc")
        if key in known:
            extra = set(entry) - {"quantity", "loinc", "sample"}
            if extra:
                raise CodeMapError(
                    f"code {code!r}: {key!r} is a catalogue quantity; remove {sorted(extra)} "
                    "(or define a quantity under a new key)"
                )
            if loinc is not None and (not isinstance(loinc, str) or not loinc_ok(loinc)):
                raise CodeMapError(f"code {code!r}: {loinc!r} is not a LOINC code")
            sample = entry.get("sample")
            samples = {k.split(" ")[0] for k in known[key].loinc_by if " " in k}
            if sample is not None and sample not in samples:
                listed = ", ".join(sorted(samples)) or "none for this quantity"
                raise CodeMapError(f"code {code!r}: sample {sample!r} is not one of: {listed}")
            result[code] = CodeMapping(key, loinc, sample=sample)
            continue
        extra = set(entry) - {"quantity", "loinc", "ucum", "names", "plausible", "alert"}
        if extra:
            raise CodeMapError(f"code {code!r}: unknown keys {sorted(extra)}")
        known_as = catalogue_loinc(loinc) if isinstance(loinc, str) else None
        if known_as is not None:  # the LOINC is the identity: the catalogue's quantity
            defined_too = sorted(set(entry) - {"quantity", "loinc"})
            if defined_too:
                raise CodeMapError(
                    f"code {code!r}: LOINC {loinc} is the catalogue's {known_as!r}: remove "
                    f"{defined_too} (its unit, names and ranges are the catalogue's)"
                )
            result[code] = CodeMapping(known_as, loinc)
            continue
        site = _define(code, key, entry)
        if defined.setdefault(key, site) != site:
            raise CodeMapError(f"code {code!r}: quantity {key!r} is defined twice, differently")
        result[code] = CodeMapping(key, site.loinc, site)
    return result


def unit_refused(mapping: CodeMapping, unit: str | None) -> str | None:
    """Why a result cannot be stored under this mapping (None: it can): a site quantity that
    takes its unit from each result needs a UCUM one (``unit-not-ucum``)."""
    site = mapping.site
    if site is None or site.ucum:
        return None
    return None if unit and ucum_ok(unit) else "unit-not-ucum"


def _site_flags(
    site: SiteQuantity, value: float | None, unit: str, control: bool
) -> tuple[str, ...]:
    if value is None:
        return ()
    if unit != site.ucum:
        return ("unit-unknown",) if site.plausible or site.alert else ()
    if site.plausible and not site.plausible[0] <= value <= site.plausible[1]:
        return ("implausible",)
    if not control and site.alert and not site.alert[0] <= value <= site.alert[1]:
        return ("alert",)
    return ()


def mapped_measurement(
    mapping: CodeMapping,
    value: float | None,
    unit: str | None,
    *,
    device_time: str | None = None,
    flags: tuple[str, ...] = (),
    absent_reason: str | None = None,
    raw: bytes = b"",
    context: tuple[tuple[str, str], ...] = (),
    source_key: str | None = None,
    status: str | None = None,
) -> Measurement:
    """The measurement of a mapped code: catalogue codes and unit defaults, or the site's."""
    site = mapping.site
    if site is None:
        loinc = mapping.loinc
        if loinc is None:
            loinc = loinc_for(
                mapping.quantity, unit or catalogue()[mapping.quantity].ucum, mapping.sample
            )
        return checked(
            measurement(
                mapping.quantity,
                value,
                unit,
                loinc=loinc,
                device_time=device_time,
                flags=flags,
                absent_reason=absent_reason,
                raw=raw,
                context=context,
                source_key=source_key,
                status=status,
            )
        )  # impossible values withheld (policy.py)
    if not site.ucum:  # the result's own unit, UCUM-checked by the caller (unit_refused)
        flags = tuple(f for f in flags if f != "unit-unmapped")
    unit = unit or site.ucum
    names = tuple((f"name:{lang}", text) for lang, text in site.names.items())
    return Measurement(
        quantity=site.key,
        value=value,
        unit=unit,
        loinc=site.loinc,
        device_time=device_time,
        flags=(*flags, *_site_flags(site, value, unit, "control" in flags)),
        absent_reason=absent_reason,
        raw=raw,
        context=(*context, ("quantity-source", "site"), *names),
        source_key=source_key,
        status=status,
    )
