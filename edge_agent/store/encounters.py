"""Patients' encounters with the unit, kept offline in the store (SQL over a Database; no I/O
of its own).

An encounter is opened by `edge-agent patient open ID` (the patient's identifier in a
configured system: national identity card, the platform's patient id, the appointment slip's
barcode) and closed by `patient close`; at most one is open. Readings the agent stores while it
is open are bound to it: the store's writer asks :class:`OpenEncounter` on each append, which
reads the table again only when another connection has committed since (``PRAGMA
data_version`` of the writer's own connection: the CLI runs in another process), so binding
costs no query per reading. `patient assign` binds readings taken shortly before (the cuff
measured first); a reading central already has goes to it again as a conditional update.

The patient's identifier lives only here (the 0600 store) and in the uplink (inside TLS): it is
never logged; what the CLI shows is :func:`masked`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from edge_agent.backoff import Backoff
from edge_agent.errors import EdgeAgentError

T = TypeVar("T")
BESIDE_ATTEMPTS = 6  # a CLI write meeting a lock: tried this often (busy timeout 30 s each)

POSITION_MAX_AGE_S = 600.0  # a GPS fix older than this is not the encounter's place


class EncounterError(EdgeAgentError):
    """An encounter operation that cannot be done (one already open, none open): exit 1."""

    def __init__(self, message: str) -> None:
        super().__init__("encounter.state", message)


@dataclass(frozen=True)
class Encounter:
    id: str
    patient_system: str
    patient_value: str
    opened_at: str
    closed_at: str | None = None
    practitioner_role: str | None = None
    position: tuple[float, float, float | None] | None = None


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Database]:
    """The store, for one short write transaction beside a running agent: BEGIN IMMEDIATE (a
    deferred transaction that reads first could not become a writer once the agent has
    committed: SQLITE_BUSY at once, no busy wait)."""
    from edge_agent.store.database import open_database

    db = open_database(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


def write_beside(
    path: Path,
    op: Callable[[Database], T],
    *,
    attempts: int = BESIDE_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``op`` in one :func:`writing` transaction from another process than the agent (the
    CLI), tried again (bounded, with backoff) when the store is locked: the agent's writer
    holds the write lock for a commit at a time, and waits for this one as it would. Inside
    the agent, write through its :class:`~edge_agent.store.writer.Store` instead (a second
    connection in the agent's own process is what the agent must never have)."""
    from edge_agent.store import connect as store_connect

    backoff = Backoff(base=0.05, cap=1.0)
    while True:
        try:
            with writing(path) as db:
                return op(db)
        except store_connect.operational_errors() as exc:
            if not store_connect.is_busy(exc) or backoff.attempt + 1 >= attempts:
                raise
            sleep(backoff.next_delay())


def masked(value: str) -> str:
    """An identifier as the CLI shows it: its last 3 characters only."""
    return "*" * max(0, len(value) - 3) + value[-3:] if len(value) > 3 else "*" * len(value)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encounter(row: Sequence[Any]) -> Encounter:
    position = (
        None
        if row[6] is None or row[7] is None
        else (float(row[6]), float(row[7]), None if row[8] is None else float(row[8]))
    )
    return Encounter(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        None if row[4] is None else str(row[4]),
        None if row[5] is None else str(row[5]),
        position,
    )


_COLUMNS = (
    "id, patient_system, patient_value, opened_at, closed_at, practitioner_role, "
    "latitude, longitude, altitude"
)


def current(db: Database) -> Encounter | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM encounters WHERE closed_at IS NULL").fetchone()
    return None if row is None else _encounter(row)


def last_fix(db: Database) -> tuple[float, float, float | None] | None:
    """The van's latest GPS fix, if it is at most :data:`POSITION_MAX_AGE_S` older than the
    store's latest reading (both stamped by the agent's reception clock, which may be GPS
    time: not compared with this process's clock)."""
    newest = db.execute("SELECT received_at FROM readings ORDER BY seq DESC LIMIT 1").fetchone()
    if newest is None:
        return None
    try:
        since = _stamp(
            datetime.fromisoformat(str(newest[0]).replace("Z", "+00:00"))
            - timedelta(seconds=POSITION_MAX_AGE_S)
        )
    except ValueError:
        return None
    found: dict[str, float] = {}
    for quantity in ("latitude", "longitude", "altitude"):
        row = db.execute(
            "SELECT value FROM readings WHERE quantity = ? AND value IS NOT NULL "
            "AND received_at >= ? ORDER BY seq DESC LIMIT 1",
            [quantity, since],
        ).fetchone()
        if row is not None:
            found[quantity] = float(row[0])
    if "latitude" not in found or "longitude" not in found:
        return None
    return (found["latitude"], found["longitude"], found.get("altitude"))


def open_encounter(
    db: Database,
    system: str,
    value: str,
    *,
    at: datetime | None = None,
    practitioner_role: str | None = None,
) -> Encounter:
    if current(db) is not None:
        raise EncounterError(
            "an encounter is open already: close it first (edge-agent patient close)"
        )
    when = at or datetime.now(UTC)
    fix = last_fix(db)
    encounter = Encounter(
        str(uuid.uuid4()), system, value, _stamp(when), None, practitioner_role, fix
    )
    db.execute(
        f"INSERT INTO encounters ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
        [
            encounter.id,
            system,
            value,
            encounter.opened_at,
            practitioner_role,
            *(fix or (None, None, None)),
        ],
    )
    return encounter


def close_encounter(db: Database, *, at: datetime | None = None) -> Encounter:
    """Close the open encounter. The close travels on its own: a reading of the encounter
    still waiting for a batch carries the end; when none waits, the encounter's last reading
    central holds (or has in flight) is queued again as a conditional update
    (``attributed_at``), so its batch brings the finished Encounter without waiting for
    another reading."""
    found = current(db)
    if found is None:
        raise EncounterError("no encounter is open (edge-agent patient open ID)")
    closed = _stamp(at or datetime.now(UTC))
    db.execute("UPDATE encounters SET closed_at = ? WHERE id = ?", [closed, found.id])
    waiting = db.execute(
        "SELECT 1 FROM readings WHERE encounter_id = ? AND sent_at IS NULL AND batch_id IS NULL "
        "AND refused IS NULL LIMIT 1",
        [found.id],
    ).fetchone()
    if waiting is None:
        db.execute(
            "UPDATE readings SET attributed_at = ?, sent_at = NULL, "
            "batch_id = CASE WHEN sent_at IS NULL THEN batch_id END WHERE seq = (SELECT "
            "max(seq) FROM readings WHERE encounter_id = ? AND refused IS NULL)",
            [closed, found.id],
        )
    return Encounter(
        found.id,
        found.patient_system,
        found.patient_value,
        found.opened_at,
        closed,
        found.practitioner_role,
        found.position,
    )


@dataclass(frozen=True)
class Unattributed:
    seq: int
    device_id: str
    quantity: str
    value: float | None
    unit: str
    received_at: str


def unattributed(db: Database, minutes: float, *, at: datetime | None = None) -> list[Unattributed]:
    """Readings of the last ``minutes`` bound to no encounter (the van's position apart)."""
    since = _stamp((at or datetime.now(UTC)) - timedelta(minutes=minutes))
    rows = db.execute(
        "SELECT seq, device_id, quantity, value, unit, received_at FROM readings "
        "WHERE encounter_id IS NULL AND received_at >= ? "
        "AND quantity NOT IN ('latitude', 'longitude', 'altitude') ORDER BY seq",
        [since],
    ).fetchall()
    return [Unattributed(int(r[0]), str(r[1]), str(r[2]), r[3], str(r[4]), str(r[5])) for r in rows]


def assign(db: Database, seqs: Sequence[int], *, at: datetime | None = None) -> int:
    """Bind readings (still unattributed) to the open encounter. A reading central already
    holds is queued again; it goes as a conditional update (``attributed_at``). Returns how
    many were bound."""
    found = current(db)
    if found is None:
        raise EncounterError("no encounter is open (edge-agent patient open ID)")
    stamp = _stamp(at or datetime.now(UTC))
    bound = 0
    for start in range(0, len(seqs), 500):
        chunk = list(seqs[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        bound += int(
            db.execute(
                "UPDATE readings SET encounter_id = ?, attributed_at = ?, "
                "batch_id = CASE WHEN sent_at IS NULL THEN batch_id END, sent_at = NULL "
                f"WHERE seq IN ({marks}) AND encounter_id IS NULL AND refused IS NULL",
                [found.id, stamp, *chunk],
            ).rowcount
        )
    return bound


class OpenEncounter:
    """The store writer's view of the open encounter, read again only when another
    connection committed (``PRAGMA data_version``). Writer thread only. Encounters are written
    by another connection (the CLI, the demo); code that writes one through the store's own
    writer must call :meth:`invalidate` (the writer's own commits do not move
    ``data_version``)."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._open: str | None = None  # the open encounter's id
        self.reloads = 0

    def invalidate(self) -> None:
        self._version = None

    def at(self, db: Database) -> str | None:
        """The encounter open now (at this commit), if any. Not compared with the readings'
        reception time: that may come from another clock (GPS) than the CLI's."""
        version = int(db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            row = db.execute("SELECT id FROM encounters WHERE closed_at IS NULL").fetchone()
            self._open = None if row is None else str(row[0])
            self._version = version
            self.reloads += 1
        return self._open
