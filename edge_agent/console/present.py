"""Readings as the nurse reads them: quantity name in her language, value, unit, age, marks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from edge_agent.clock import parse_time
from edge_agent.console.queries import Encounter, Reading, UnitView
from edge_agent.i18n import Translator

UNIT_LABELS: Final = {
    "mm[Hg]": "mmHg",
    "Cel": "°C",
    "[degF]": "°F",
    "[lb_av]": "lb",
    "[in_i]": "in",
    "{beats}/min": "/min",
    "1": "",
}


def age_s(stamp: str | None, now: datetime) -> float | None:
    when = parse_time(stamp)
    return None if when is None else (now - when).total_seconds()


def value_text(tr: Translator, r: Reading) -> str:
    if r.value is None:
        return tr("reading.no_value")
    number = f"{r.value:.2f}".rstrip("0").rstrip(".")
    unit = UNIT_LABELS.get(r.unit, r.unit)
    return f"{number} {unit}".strip()


def clock_text(stamp: str) -> str:
    """The reading's time of day, local time (the nurse's clock)."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%H:%M:%S")


def hour_minute(stamp: str) -> str:
    """A time of day as HH:MM, local time ("silent since 10:42")."""
    return clock_text(stamp)[:5] if ":" in clock_text(stamp) else stamp


def reading_dict(tr: Translator, r: Reading, now: datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "seq": r.seq,
        "device": r.device_id,
        "quantity": tr.quantity(r.quantity),
        "value": value_text(tr, r),
        "time": clock_text(r.received_at),
        "age": tr.age(age_s(r.received_at, now)),
        "alert": r.alert,
        "sent": r.sent,
        "mark": tr("reading.received") if r.sent else tr("reading.pending"),
        "patient": r.encounter_id is not None,
    }


def patient_text(tr: Translator, view: UnitView, now: datetime, *, reveal: bool = False) -> str:
    if not view.patients_available:
        return tr("patient.unavailable")
    if view.encounter is None:
        return tr("patient.none")
    return encounter_text(tr, view.encounter, now, reveal=reveal)


def encounter_text(tr: Translator, e: Encounter, now: datetime, *, reveal: bool = False) -> str:
    """The open patient: the identifier masked (its last 3 characters, as ``patient current``)
    unless the nurse asked to see it (``reveal``)."""
    from edge_agent.store.encounters import masked

    shown = e.identifier if reveal else masked(e.identifier)
    return tr("patient.open", identifier=shown, age=tr.age(age_s(e.opened_at, now)))


def loop_text(tr: Translator, loop: dict[str, Any]) -> str:
    """The agent's event-loop figures in the nurse's words (milliseconds)."""
    text = tr(
        "status.loop_figures",
        p99=loop.get("p99_ms", "-"),
        max=loop.get("max_ms", "-"),
        stalls=loop.get("stalls", 0),
    )
    return text + (" — " + tr("status.loop_stalled") if loop.get("stalled") else "")
