"""The nurses' words in French, Arabic and English: gettext catalogues, read with Babel.

The messages are data: ``edge_agent/locales/<lang>/LC_MESSAGES/edge_agent.po``, one per
language, maintained with Babel's tools (``pybabel update``/``compile`` work on them as they
are). Each message is found by a key (``check.disk``) and may hold ``{name}`` placeholders,
the same in every language (tests/console/test_i18n.py checks both). The ``.po`` files are
read at run time with Babel and turned into a :class:`gettext.GNUTranslations` in memory, so
a fresh ``pip install -e .`` needs no build step and gettext's plural forms (Arabic has six)
apply as written in each file's header.

Quantity names come from the quantity catalogue (``catalogue.toml``), which already has them
in the three languages.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final, Literal

Lang = Literal["fr", "ar", "en"]
LANGS: Final[tuple[Lang, ...]] = ("fr", "ar", "en")
DOMAIN: Final = "edge_agent"


def po_text(lang: str) -> str:
    path = resources.files("edge_agent").joinpath(f"locales/{lang}/LC_MESSAGES/{DOMAIN}.po")
    return path.read_text(encoding="utf-8")


@cache
def _translations(lang: str) -> gettext.GNUTranslations:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.StringIO(po_text(lang)), locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def parse_lang(value: str | None, default: Lang = "fr") -> Lang:
    """A language code as the nurse's browser or option gives it ("ar-MA", "FR"), or default."""
    code = (value or "").strip().lower()[:2]
    for lang in LANGS:
        if code == lang:
            return lang
    return default


@dataclass(frozen=True)
class Translator:
    lang: Lang

    @property
    def direction(self) -> Literal["rtl", "ltr"]:
        return "rtl" if self.lang == "ar" else "ltr"

    def __call__(self, key: str, **values: object) -> str:
        return _translations(self.lang).gettext(key).format(**values)

    def plural(self, key: str, n: int, **values: object) -> str:
        return _translations(self.lang).ngettext(key, key, n).format(n=n, **values)

    def has(self, key: str) -> bool:
        return _translations(self.lang).gettext(key) != key

    def age(self, seconds: float | None) -> str:
        """How long ago, in words: "il y a 3 minutes", "منذ دقيقتين"."""
        if seconds is None:
            return "-"
        s = max(0, int(seconds))
        if s < 60:
            return self("age.now")
        if s < 3600:
            return self.plural("age.minutes", s // 60)
        if s < 86400:
            return self.plural("age.hours", s // 3600)
        return self.plural("age.days", s // 86400)

    def size(self, n_bytes: int) -> str:
        if n_bytes >= 10 * 2**30:
            return self("size.gb", n=n_bytes // 2**30)
        if n_bytes >= 2**30:
            return self("size.gb", n=f"{n_bytes / 2**30:.1f}")
        return self("size.mb", n=n_bytes // 2**20)

    def quantity(self, key: str) -> str:
        from edge_agent.catalogue import catalogue

        found = catalogue().get(key)
        return found.name(self.lang) if found is not None else key

    def device_noun(self, kind: str) -> str:
        key = f"device.noun.{kind}"
        return self(key) if self.has(key) else kind


def translator(lang: str | None, default: Lang = "fr") -> Translator:
    return Translator(parse_lang(lang, default))
