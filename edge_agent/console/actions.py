"""The nurse's actions on the patient: open, close, give readings to the open patient.

They are the patient CLI's operations (:mod:`edge_agent.store.encounters`: ``patient open``,
``close``, ``assign``), each one short transaction. Inside the running agent (its console) they
go through the agent's own writer (``writer``: the :class:`~edge_agent.store.writer.Store`),
like every other write of the agent; without one (``edge-agent console`` with no agent) through a
connection of their own, tried again while the store is locked. A store without the encounter
model (older than ``m005_encounters``) answers ``action.unavailable`` and changes nothing. The
patient's identifier is never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import EdgeAgentError
from edge_agent.store import connect as store_connect

if TYPE_CHECKING:
    from sqlite_utils import Database

    from edge_agent.store.writer import Store


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str  # a message key (edge_agent/locales): action.opened, action.unavailable...
    count: int = 0  # readings assigned


UNAVAILABLE = ActionResult(False, "action.unavailable")
FAILED = ActionResult(False, "action.failed")
DEFAULT_SYSTEMS: Mapping[str, str] = {"national-id": "urn:mmu:patient:national-id"}
Action = Callable[["Database"], ActionResult]


def _failed() -> tuple[type[Exception], ...]:
    return (EdgeAgentError, *store_connect.errors())


def _has_model(path: Path) -> bool:
    from edge_agent.console.queries import NEEDS, encounter_columns
    from edge_agent.store.read import reading

    with reading(path, needs=NEEDS) as db:
        return encounter_columns(db) is not None


def _apply(store_path: Path, action: Action, writer: Store | None) -> ActionResult:
    """Run ``action`` in one write transaction: the agent's writer when there is one."""
    from edge_agent.console.queries import encounter_columns
    from edge_agent.store import encounters

    def op(db: Database) -> ActionResult:
        if encounter_columns(db) is None:
            return UNAVAILABLE
        return action(db)

    try:
        if writer is None:
            if not _has_model(store_path):  # checked read-only: an old store is not migrated
                return UNAVAILABLE
            return encounters.write_beside(store_path, op)

        def through_writer(db: Database) -> ActionResult:
            writer.encounters.invalidate()  # its own commits do not move data_version
            return op(db)

        result = writer.call(through_writer)
    except _failed():
        return FAILED
    if result.ok:  # an assign or a close queued readings again: the sync loop looks now
        writer.outbox_changed(max(1, result.count or 0))
    return result


def open_encounter(
    store_path: Path,
    identifier: str,
    system: str | None,
    systems: Mapping[str, str] = DEFAULT_SYSTEMS,
    default: str | None = None,
    practitioner_role: str | None = None,
    *,
    writer: Store | None = None,
) -> ActionResult:
    """Open a patient (closing the one open, if any). ``system``: a name from ``[patients]
    systems`` (or its URI); empty: the configured default."""
    from edge_agent.store import encounters

    identifier = identifier.strip()
    if not identifier:
        return ActionResult(False, "action.no_identifier")
    name = (system or "").strip() or default or next(iter(systems))
    # a configured name, or an identifier system URI typed as such (urn:oid:..., http...)
    uri = systems.get(name) or (name if name in systems.values() or ":" in name else None)
    if uri is None:
        return ActionResult(False, "action.failed")

    def action(db: Database) -> ActionResult:
        if encounters.current(db) is not None:
            encounters.close_encounter(db)
        encounters.open_encounter(db, uri, identifier, practitioner_role=practitioner_role)
        return ActionResult(True, "action.opened")

    return _apply(store_path, action, writer)


def close_encounter(store_path: Path, *, writer: Store | None = None) -> ActionResult:
    from edge_agent.store import encounters

    def action(db: Database) -> ActionResult:
        if encounters.current(db) is None:
            return ActionResult(False, "action.no_patient")
        encounters.close_encounter(db)
        return ActionResult(True, "action.closed")

    return _apply(store_path, action, writer)


def assign(
    store_path: Path, reading_ids: list[str], *, writer: Store | None = None
) -> ActionResult:
    """Give readings of no patient yet to the open patient (``patient assign``): a reading
    central already holds goes again as an update that names the patient."""
    from edge_agent.store import encounters

    ids = [str(i) for i in reading_ids][:500]

    def action(db: Database) -> ActionResult:
        if encounters.current(db) is None:
            return ActionResult(False, "action.no_patient")
        if not ids:
            return ActionResult(True, "action.assigned", 0)
        marks = ", ".join("?" for _ in ids)
        seqs = [
            int(r[0])
            for r in db.execute(f"SELECT seq FROM readings WHERE id IN ({marks})", ids).fetchall()
        ]
        return ActionResult(True, "action.assigned", encounters.assign(db, seqs))

    return _apply(store_path, action, writer)


@dataclass(frozen=True)
class Revealed:
    result: ActionResult
    identifier: str | None = None


def reveal(store_path: Path) -> Revealed:
    """The open patient's whole identifier, for the nurse who asked to see it."""
    from edge_agent.console.queries import NEEDS
    from edge_agent.store import encounters
    from edge_agent.store.read import reading

    try:
        if not _has_model(store_path):
            return Revealed(UNAVAILABLE)
        with reading(store_path, needs=NEEDS) as db:
            found = encounters.current(db)
    except _failed():
        return Revealed(FAILED)
    if found is None:
        return Revealed(ActionResult(False, "action.no_patient"))
    return Revealed(ActionResult(True, "action.revealed"), found.patient_value)
