"""The nurses' messages are data: every key in fr, ar and en, with the same placeholders, and
every key the code and the templates use is in the catalogues."""

from __future__ import annotations

import io
import re
import string
from pathlib import Path

from babel.messages.pofile import read_po

from drivers.registry import DRIVERS
from edge_agent.i18n import LANGS, po_text, translator

ROOT = Path(__file__).resolve().parents[2]
KEY = re.compile(
    r"""["']((?:check|config|store|disk|size|backlog|age|device|fix|bluetooth|clock|
    link|agent|summary|label|status|patient|watch|col|reading|web|action)\.[a-z0-9_.-]+)["']""",
    re.X,
)


def _catalog(lang: str) -> dict[str, tuple[str, ...]]:
    catalog = read_po(io.StringIO(po_text(lang)), locale=lang)
    out = {}
    for m in catalog:
        if not m.id:
            continue
        key = m.id[0] if isinstance(m.id, tuple | list) else m.id
        forms = m.string if isinstance(m.string, tuple | list) else (m.string,)
        out[str(key)] = tuple(str(f) for f in forms)
    return out


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    catalogs = {lang: _catalog(lang) for lang in LANGS}
    reference = catalogs["en"]
    assert len(reference) > 100
    for lang, catalog in catalogs.items():
        assert catalog.keys() == reference.keys(), (
            f"{lang}: missing {sorted(reference.keys() - catalog.keys())}, "
            f"extra {sorted(catalog.keys() - reference.keys())}"
        )
        for key, forms in catalog.items():
            assert all(f.strip() for f in forms), f"{lang}: {key} is empty"
            wanted = set().union(*(_fields(f) for f in reference[key]))
            found = set().union(*(_fields(f) for f in forms))
            # A plural form may leave the number out ("قراءة واحدة": one reading).
            assert found - {"n"} == wanted - {"n"} and all(_fields(f) <= wanted for f in forms), (
                f"{lang}: {key} has placeholders {sorted(found)}, en has {sorted(wanted)}"
            )


def test_arabic_has_its_six_plural_forms() -> None:
    ar = translator("ar")
    assert [ar.plural("backlog.count", n) for n in (1, 2, 5, 11)] == [
        "قراءة واحدة بانتظار الإرسال",
        "قراءتان بانتظار الإرسال",
        "5 قراءات بانتظار الإرسال",
        "11 قراءة بانتظار الإرسال",
    ]
    assert translator("fr").plural("age.minutes", 1) == "il y a 1 minute"
    assert translator("fr").plural("age.minutes", 2) == "il y a 2 minutes"


def test_every_key_the_code_and_templates_use_is_in_the_catalogue() -> None:
    keys = set(_catalog("en"))
    used: set[str] = set()
    sources = [
        *(ROOT / "edge_agent" / "console").rglob("*.py"),
        *(ROOT / "edge_agent" / "console" / "templates").glob("*.html"),
        ROOT / "edge_agent" / "cli" / "nurse.py",
    ]
    for path in sources:
        used |= set(KEY.findall(path.read_text(encoding="utf-8")))
    used = {k for k in used if not k.endswith(".")}
    assert len(used) > 60
    dynamic = {k for k in used if k.startswith("device.noun")}
    missing = sorted(used - keys - dynamic)
    assert not missing, f"used but not in the catalogue: {missing}"
    for kind in DRIVERS:  # device nouns are looked up by kind
        assert f"device.noun.{kind}" in keys, kind


def test_quantity_names_come_from_the_catalogue() -> None:
    assert translator("ar").quantity("spo2") == "تشبع الأكسجين"
    assert translator("fr").quantity("spo2") == "Saturation en oxygène"
    assert translator("en").direction == "ltr" and translator("ar").direction == "rtl"
