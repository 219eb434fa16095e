"""The nurse's actions on the patient: open, close, give readings to the open patient.

They write the patient/encounter model's ``encounters`` table, which this module does not
own: its columns are found by :func:`edge_agent.console.queries.encounter_columns`, and when
the table is absent (an agent without the patient model) every action answers
``action.unavailable`` and changes nothing. Each action is one short transaction through
:func:`edge_agent.store_read.requesting` (never creates or migrates the store), beside the
running agent's writer. The patient's identifier is never logged.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from edge_agent.console.queries import NEEDS, encounter_columns
from edge_agent.errors import EdgeAgentError
from edge_agent.store import utc_now
from edge_agent.store_read import requesting


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str  # a message key (edge_agent/locales): action.opened, action.unavailable...
    count: int = 0  # readings assigned


UNAVAILABLE = ActionResult(False, "action.unavailable")
FAILED = ActionResult(False, "action.failed")


def open_encounter(store_path: Path, identifier: str, system: str | None) -> ActionResult:
    """Open a patient (closing the one open, if any)."""
    identifier = identifier.strip()
    if not identifier:
        return ActionResult(False, "action.no_identifier")
    try:
        with requesting(store_path, NEEDS) as db:
            cols = encounter_columns(db)
            if cols is None:
                return UNAVAILABLE
            now = utc_now()
            db.execute(f'UPDATE encounters SET "{cols["closed_at"]}" = ? '
                       f'WHERE "{cols["closed_at"]}" IS NULL', [now])
            row: dict[str, str | None] = {cols["id"]: str(uuid.uuid4()),
                                          cols["identifier"]: identifier}
            if "system" in cols:
                row[cols["system"]] = (system or "").strip() or None
            if "opened_at" in cols:
                row[cols["opened_at"]] = now
            names = ", ".join(f'"{c}"' for c in row)
            marks = ", ".join("?" for _ in row)
            db.execute(f"INSERT INTO encounters ({names}) VALUES ({marks})", list(row.values()))
    except (EdgeAgentError, sqlite3.Error):
        return FAILED
    return ActionResult(True, "action.opened")


def close_encounter(store_path: Path) -> ActionResult:
    try:
        with requesting(store_path, NEEDS) as db:
            cols = encounter_columns(db)
            if cols is None:
                return UNAVAILABLE
            closed = db.execute(f'UPDATE encounters SET "{cols["closed_at"]}" = ? '
                                f'WHERE "{cols["closed_at"]}" IS NULL', [utc_now()]).rowcount
    except (EdgeAgentError, sqlite3.Error):
        return FAILED
    return ActionResult(True, "action.closed") if closed else ActionResult(False,
                                                                             "action.no_patient")


def assign(store_path: Path, reading_ids: list[str]) -> ActionResult:
    """Give readings to the open patient: only readings of no patient yet and not yet on
    their way to central (central files a reading once, as it was sent)."""
    try:
        with requesting(store_path, NEEDS) as db:
            cols = encounter_columns(db)
            if cols is None:
                return UNAVAILABLE
            row = db.execute(f'SELECT "{cols["id"]}" FROM encounters WHERE '
                             f'"{cols["closed_at"]}" IS NULL ORDER BY rowid DESC LIMIT 1'
                             ).fetchone()
            if row is None:
                return ActionResult(False, "action.no_patient")
            ids = [str(i) for i in reading_ids][:500]
            if not ids:
                return ActionResult(True, "action.assigned", 0)
            marks = ", ".join("?" for _ in ids)
            count = db.execute(
                f"UPDATE readings SET encounter_id = ? WHERE id IN ({marks}) AND encounter_id "
                "IS NULL AND sent_at IS NULL AND batch_id IS NULL", [row[0], *ids]).rowcount
    except (EdgeAgentError, sqlite3.Error):
        return FAILED
    return ActionResult(True, "action.assigned", count)
