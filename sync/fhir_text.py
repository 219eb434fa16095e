"""The Bundle of :func:`sync.fhir.bundle` as JSON text, without building most of it (pure).

Most readings of a batch are lone Observations that differ only in their *leaves* (reading id,
source key, times, value: :meth:`sync.fhir._Builder.plan`). For each *shape* of such an
Observation, the entry is built once with placeholder leaves and serialized; the text around
the placeholders is the template, and every reading of that shape is its template with its
own leaves put in, each serialized as ``json.dumps`` serializes it inside the document. A
template is checked against ``json.dumps`` of the real entry on its first use; a shape whose
template does not match (a placeholder that could not be told apart) is serialized entry by
entry. Everything else (Devices, Patients, Encounters, BP panels, GPS fixes) is
``json.dumps`` of :mod:`sync.fhir`'s entries. :func:`bundle_json` equals
``json.dumps(fhir.bundle(...), separators=(",", ":"), ensure_ascii=False)``, character for
character (tests/sync/test_fhir_text.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sync import fhir

ID_SLOT: Final = "\x00r\x00"  # the reading id: also inside strings (request URLs, fullUrl)
# In the text: the id's placeholder, or a whole leaf token "\u0000<slot>\u0000" (quotes too).
_PLACEHOLDER: Final = re.compile(r'\\u0000r\\u0000|"\\u0000(\d)\\u0000"')
_escape = json.encoder.encode_basestring  # the C encoder's own (ensure_ascii=False)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def token(value: Any) -> str:
    """``value`` as ``json.dumps`` writes it inside a document."""
    kind = type(value)
    if kind is str:
        return _escape(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    return dumps(value)


Template = tuple[list[str], list[int]] | None  # (texts around the leaves, leaf per gap; -1: id)


class _TextBuilder(fhir._Builder):
    """Lone Observations become text (a ``str`` entry); everything else stays a dict."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._templates: dict[fhir.Shape, Template] = {}

    def single(self, shape: fhir.Shape, leaves: fhir.Leaves) -> Any:
        if shape not in self._templates:
            self._templates[shape] = self._template(shape, leaves)
        template = self._templates[shape]
        if template is None:
            return dumps(super().single(shape, leaves))
        texts, slots = template
        rid = _escape(leaves[0])[1:-1]
        out = [texts[0]]
        for slot, text in zip(slots, texts[1:], strict=True):
            out.append(rid if slot < 0 else token(leaves[slot]))
            out.append(text)
        return "".join(out)

    def _template(self, shape: fhir.Shape, leaves: fhir.Leaves) -> Template:
        probe = (ID_SLOT, "\x001\x00", "\x002\x00", "\x003\x00", "\x004\x00", "\x005\x00")
        text = dumps(super().single(shape, probe))
        texts, slots, at = [], [], 0
        for found in _PLACEHOLDER.finditer(text):
            texts.append(text[at : found.start()])
            slots.append(-1 if found[1] is None else int(found[1]))
            at = found.end()
        texts.append(text[at:])
        template: Template = (texts, slots)
        self._templates[shape] = template
        if self.single(shape, leaves) != dumps(super().single(shape, leaves)):
            return None
        return template


def bundle_json(
    unit: str, epoch: str, batch_id: str, rows: Sequence[Mapping[str, Any]], created_at: str
) -> str:
    """``json.dumps`` of :func:`sync.fhir.bundle` (compact, not ASCII-escaped)."""
    build = fhir.build_entries(_TextBuilder, unit, epoch, rows)
    around = dumps(fhir.document(unit, epoch, batch_id, build.seqs, created_at, []))
    entries = [dumps(e) for e in build.head.values()]
    entries += [e if isinstance(e, str) else dumps(e) for e in build.entries]
    return f"{around[:-2]}{','.join(entries)}]}}"
