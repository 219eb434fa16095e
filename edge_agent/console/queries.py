"""Every store query of the nurses' views (start, status, watch, the web console), in one place.

The store is only read, through :func:`edge_agent.store.read.reading` (``mode=ro``: it reads
while the agent writes, never migrates, never writes). The patient/encounter model belongs to
another part of the agent: it is read here only if its ``encounters`` table exists, by the
obvious column names below (:data:`ENCOUNTER_COLUMNS`), so that this module is the one place
to adapt when that model changes. Without the table the views say "patient records are not
available" and the actions (:mod:`edge_agent.console.actions`) refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlite_utils import Database

from edge_agent.store.agent_lock import is_running, pid_alive
from edge_agent.store.disk_status import read_status
from edge_agent.store.read import reading

NEEDS: Final = "m004_identity_membership"  # readings.refused, agent_state
RECENT: Final = 30  # readings shown when no patient is open
ENCOUNTER_LIMIT: Final = 200  # readings shown for the open patient
# The encounters table's columns, each by the names it may have (first found wins).
ENCOUNTER_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "id": ("id", "encounter_id"),
    "identifier": ("patient_value", "patient_identifier", "identifier", "patient_id"),
    "system": ("identifier_system", "patient_system", "system"),
    "opened_at": ("opened_at", "started_at", "start"),
    "closed_at": ("closed_at", "ended_at", "end"),
}
_READING_COLUMNS: Final = (
    "seq, id, device_id, quantity, value, unit, received_at, flags, sent_at, encounter_id, refused"
)


@dataclass(frozen=True)
class Reading:
    seq: int
    id: str
    device_id: str
    quantity: str
    value: float | None
    unit: str
    received_at: str
    flags: tuple[str, ...]
    sent: bool  # central has stored it (readings.sent_at: its batch was acknowledged)
    encounter_id: str | None
    refused: bool = False

    @property
    def alert(self) -> bool:
        return "alert" in self.flags


@dataclass(frozen=True)
class Encounter:
    id: str
    identifier: str
    system: str | None
    opened_at: str | None


@dataclass(frozen=True)
class UnitView:
    """What the nurses' screens show, read in one short read transaction."""

    last_by_device: dict[str, Reading] = field(default_factory=dict)
    backlog: int = 0
    oldest_unsent_at: str | None = None
    sync: dict[str, Any] | None = None  # the agent's sync snapshot (agent_state 'sync')
    clock: dict[str, Any] | None = None  # the reception clock chosen (agent_state 'clock')
    device_states: dict[str, Any] = field(default_factory=dict)  # agent_state 'devices'
    agent_pid: int | None = None
    patients_available: bool = False  # the encounters table exists
    encounter: Encounter | None = None
    encounter_readings: tuple[Reading, ...] = ()
    recent: tuple[Reading, ...] = ()
    last_seq: int = 0

    @property
    def agent_running(self) -> bool:
        return self.agent_pid is not None

    @property
    def connected(self) -> bool:
        return bool(self.agent_running and self.sync and self.sync.get("connected"))


def _reading(row: tuple[Any, ...]) -> Reading:
    try:
        flags = tuple(str(f) for f in json.loads(row[7] or "[]"))
    except ValueError:
        flags = ()
    return Reading(
        seq=int(row[0]),
        id=str(row[1]),
        device_id=str(row[2]),
        quantity=str(row[3]),
        value=row[4],
        unit=str(row[5]),
        received_at=str(row[6]),
        flags=flags,
        sent=row[8] is not None,
        encounter_id=row[9],
        refused=row[10] is not None,
    )


def _state(db: Database, key: str) -> Any:
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except ValueError:
        return None


def agent_pid(path: Path, sync: dict[str, Any] | None) -> int | None:
    """The running agent's pid: from the disk status file (written by every running agent)
    or the sync snapshot; None when neither names a live process."""
    disk = read_status(path)
    if disk is not None and disk.get("agent_running"):
        pid = disk.get("pid")
        return pid if isinstance(pid, int) and pid_alive(pid) else None
    if sync is not None and not sync.get("stopped"):
        pid = sync.get("pid")
        return pid if isinstance(pid, int) and pid_alive(pid) and is_running(path, pid) else None
    return None


def encounter_columns(db: Database) -> dict[str, str] | None:
    """The encounters table's columns by role, or None when the table (or a needed column)
    is not there."""
    if (
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'encounters'"
        ).fetchone()
        is None
    ):
        return None
    names = {row[1] for row in db.execute("PRAGMA table_info(encounters)")}
    found: dict[str, str] = {}
    for role, candidates in ENCOUNTER_COLUMNS.items():
        name = next((c for c in candidates if c in names), None)
        if name is not None:
            found[role] = name
    if not {"id", "identifier", "closed_at"} <= found.keys():
        return None
    return found


def _column(cols: dict[str, str], role: str) -> str:
    return f'"{cols[role]}"' if role in cols else "NULL"


def open_encounter(db: Database, cols: dict[str, str]) -> Encounter | None:
    order = f"{_column(cols, 'opened_at')} DESC, " if "opened_at" in cols else ""
    row = db.execute(
        f"SELECT {_column(cols, 'id')}, {_column(cols, 'identifier')}, "
        f"{_column(cols, 'system')}, {_column(cols, 'opened_at')} FROM encounters "
        f"WHERE {_column(cols, 'closed_at')} IS NULL ORDER BY {order}rowid DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return Encounter(id=str(row[0]), identifier=str(row[1]), system=row[2], opened_at=row[3])


def unit_view(path: Path, device_ids: list[str] | None = None) -> UnitView:
    """Everything the screens show. ``device_ids``: the configured devices (their last
    reading); None: every device that has readings."""
    with reading(path, needs=NEEDS) as db:
        sync = _state(db, "sync")
        sync = sync if isinstance(sync, dict) else None
        states = _state(db, "devices")
        clock = _state(db, "clock")
        backlog, oldest = db.execute(
            "SELECT count(*), min(received_at) FROM readings WHERE sent_at IS NULL "
            "AND refused IS NULL"
        ).fetchone()
        if device_ids is None:
            device_ids = [r[0] for r in db.execute("SELECT DISTINCT device_id FROM readings")]
        last: dict[str, Reading] = {}
        for dev in device_ids:
            row = db.execute(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE device_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                [dev],
            ).fetchone()
            if row is not None:
                last[dev] = _reading(row)
        cols = encounter_columns(db)
        encounter = open_encounter(db, cols) if cols is not None else None
        of_encounter: tuple[Reading, ...] = ()
        if encounter is not None:
            of_encounter = tuple(
                _reading(r)
                for r in db.execute(
                    f"SELECT {_READING_COLUMNS} FROM readings WHERE encounter_id = ? "
                    "ORDER BY seq DESC LIMIT ?",
                    [encounter.id, ENCOUNTER_LIMIT],
                )
            )
        recent = tuple(
            _reading(r)
            for r in db.execute(
                f"SELECT {_READING_COLUMNS} FROM readings ORDER BY seq DESC LIMIT ?", [RECENT]
            )
        )
        last_seq = db.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()[0]
    return UnitView(
        last_by_device=last,
        backlog=int(backlog),
        oldest_unsent_at=oldest,
        sync=sync,
        clock=clock if isinstance(clock, dict) else None,
        device_states=states if isinstance(states, dict) else {},
        agent_pid=agent_pid(path, sync),
        patients_available=cols is not None,
        encounter=encounter,
        encounter_readings=of_encounter,
        recent=recent,
        last_seq=int(last_seq),
    )


def readings_after(path: Path, seq: int, limit: int = 200) -> list[Reading]:
    """Readings stored after ``seq``, oldest first (``edge-agent watch``)."""
    with reading(path, needs=NEEDS) as db:
        return [
            _reading(r)
            for r in db.execute(
                f"SELECT {_READING_COLUMNS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                [seq, limit],
            )
        ]


def sent_marks(path: Path, seqs: list[int]) -> dict[int, bool]:
    """Whether central has stored each of these readings (watch updates its marks)."""
    if not seqs:
        return {}
    with reading(path, needs=NEEDS) as db:
        marks = ", ".join("?" for _ in seqs)
        return {
            int(s): sent is not None
            for s, sent in db.execute(
                f"SELECT seq, sent_at FROM readings WHERE seq IN ({marks})", seqs
            )
        }
