"""Where the reference receiver keeps what central received: SQLite (one file, the default)
or PostgreSQL (a central deployment: several receivers side by side write one database).

Both run the same SQL (``?`` placeholders, ``ON CONFLICT``), several batches in one
transaction if asked. The rules (:func:`record_batch`):

- a reading id central already holds is held: counted as stored, whatever its epoch or seq;
- a new id takes its (unit, epoch, seq) in ``sequences``; if another id holds that seq, the
  reading is **refused** (not stored, not acknowledged as held), recorded in ``conflicts`` and
  logged (ids and seq only: no patient data);
- each (unit, epoch) keeps its last contiguous seq and highest seq: a gap is the difference.

Errors are told apart (:func:`transient`): a transient one (connection lost,
serialization failure, database locked or full) is retried later, anything else refuses the
message for good (dead letters).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from sync import codec, fhir
from sync.central.schema import POSTGRES, sqlite_migrations
from sync.central.sqlite_file import open_sqlite

log = logging.getLogger(__name__)

Execute = Callable[[str, list[Any]], Any]

# SQLite primary result codes that say "try again later" (the data is not at fault).
SQLITE_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
MIGRATION_LOCK = 0x6D6D7563  # PostgreSQL advisory lock key held while the schema migrates
CONFLICT = "seq-conflict"  # the reason given to the unit for a refused reading
CONTIGUITY_WINDOW = 1000  # seqs read per query while advancing last_contiguous_seq


@dataclass(frozen=True)
class Refusal:
    id: str
    seq: int
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What one batch left at central once its transaction commits."""

    batch: codec.Batch
    new: int  # readings stored by this batch
    held: int  # readings of the batch central holds (new or already there)
    refused: tuple[Refusal, ...]
    last_contiguous_seq: int  # of the batch's (unit, epoch)


@dataclass(frozen=True)
class Gap:
    unit: str
    epoch: str
    last_contiguous_seq: int
    max_seq: int
    current: bool  # the unit's most recent epoch: the only one worth asking to resend


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    received_at: str
    unit: str | None = None
    epoch: str | None = None
    batch_id: str | None = None


class CentralStore(Protocol):
    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        """All in one transaction, committed when this returns."""
        ...

    def dead_letter(self, letter: DeadLetter) -> None: ...

    def gaps(self) -> list[Gap]: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


def transient(exc: BaseException) -> bool:
    """True: try again later, the data is not at fault (connection lost, serialization
    failure, database locked, disk full); False: this message will never be stored."""
    if isinstance(exc, sqlite3.OperationalError):
        return exc.sqlite_errorcode & 0xFF in SQLITE_TRANSIENT
    try:
        import psycopg
    except ImportError:  # the optional [central] extra is not installed: SQLite only
        return False
    # Class 54 (a row or statement over a server limit) will not get better by waiting.
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.ProgramLimitExceeded
    )


GAPS = (
    "SELECT e.unit, e.epoch, e.last_contiguous_seq, e.max_seq, NOT EXISTS (SELECT 1 FROM "
    "epochs n WHERE n.unit = e.unit AND (n.first_seen > e.first_seen OR (n.first_seen = "
    "e.first_seen AND n.epoch > e.epoch))) FROM epochs e WHERE e.max_seq > e.last_contiguous_seq"
)


def _get(obj: Any, *path: str | int) -> Any:
    """A nested field of an untrusted resource, or None when any level is missing or of
    another shape (the codec checks the envelope, not every Observation field)."""
    for key in path:
        if isinstance(key, int) and isinstance(obj, list) and len(obj) > key:
            obj = obj[key]
        elif isinstance(key, str) and isinstance(obj, dict):
            obj = obj.get(key)
        else:
            return None
    return obj


def _scalar(value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:  # SQL's 64-bit integers
        return None
    return value


def _columns(obs: dict[str, Any], part: int = 0) -> list[Any]:
    """code, value, UCUM, effective time of one reading of ``obs``: the ``part``-th component
    of a panel, the ``part``-th coordinate of a GPS fix, else the Observation's own."""
    plain = _plain_columns(obs)
    return plain if plain is not None else _general_columns(obs, part)


def _general_columns(obs: dict[str, Any], part: int = 0) -> list[Any]:
    when = _get(obs, "effectiveDateTime")
    if when is None:  # a GPS fix (Location): its time is in the device-time extension
        when = next(
            (
                _get(e, "valueString")
                for e in _get(obs, "extension") or []
                if _get(e, "url") in (fhir.EXT_DEVICE_TIME, fhir.LEGACY_EXT_DEVICE_TIME)
            ),
            None,
        )
    position = _get(obs, "position")
    if isinstance(position, dict) and len(position) > part:
        axis, value = list(position.items())[part]
        return [_scalar(axis, str), _scalar(value, (int, float)), None, _scalar(when, str)]
    component = _get(obs, "component", part)
    if isinstance(component, dict):
        obs = {**component, "effectiveDateTime": when}
    coded = _get(obs, "code", "coding")
    codes = (
        {_get(c, "system"): _get(c, "code") for c in coded or [] if isinstance(c, dict)}
        if isinstance(coded, list)
        else {}
    )
    code = codes.get(codec.LOINC) or codes.get(codec.MDC)
    return [
        _scalar(code, str),
        _scalar(_get(obs, "valueQuantity", "value"), (int, float)),
        _scalar(_get(obs, "valueQuantity", "code"), str),
        _scalar(when, str),
    ]


def _plain_columns(obs: dict[str, Any]) -> list[Any] | None:
    """:func:`_columns` of the common case (an Observation with a coded value and its time, no
    component, no position) without the general path's checks at every level; None for any
    other shape. The same answer: the last coding of a system wins, LOINC before MDC."""
    if "component" in obs or "position" in obs:
        return None
    code, quantity, when = (
        obs.get("code"),
        obs.get("valueQuantity", {}),
        obs.get("effectiveDateTime"),
    )
    if not (isinstance(code, dict) and isinstance(quantity, dict) and isinstance(when, str)):
        return None
    coded = code.get("coding")
    if not isinstance(coded, list):
        return None
    loinc = mdc = None
    for coding in coded:
        if isinstance(coding, dict):
            system = coding.get("system")
            if system == codec.LOINC:
                loinc = coding.get("code")
            elif system == codec.MDC:
                mdc = coding.get("code")
    return [
        _scalar(loinc or mdc, str),
        _scalar(quantity.get("value"), (int, float)),
        _scalar(quantity.get("code"), str),
        when,
    ]


class Tables(Protocol):
    """The bulk reads and writes of :func:`record_batch`, each in its engine's fastest form
    (SQLite: ``IN`` lists and ``executemany`` in process; PostgreSQL: one statement per table
    with array parameters). The rules stay in :func:`record_batch`, the same for both."""

    def execute(self, sql: str, params: list[Any]) -> Any:
        """One statement, ``?`` placeholders."""
        ...

    def held_ids(self, ids: list[str]) -> set[str]:
        """The ids of ``ids`` central holds."""
        ...

    def seq_holders(self, unit: str, epoch: str, seqs: list[int]) -> dict[int, str]:
        """Which reading holds each of ``seqs`` in (unit, epoch) already."""
        ...

    def add_sequences(self, unit: str, epoch: str, rows: list[tuple[int, str]]) -> None:
        """(seq, id) rows; a seq already held is left as it is."""
        ...

    def add_observations(
        self, unit: str, epoch: str, batch_id: str, stored_at: str, rows: list[list[Any]]
    ) -> None:
        """(id, seq, code, value, ucum, effective, resource JSON text) rows of new ids."""
        ...

    def update_observations(self, stored_at: str, rows: list[list[Any]]) -> None:
        """(code, value, ucum, effective, resource JSON text, id) rows of held ids."""
        ...


ADD_EPOCH = (
    "INSERT INTO epochs (unit, epoch, last_contiguous_seq, max_seq, first_seen, "
    "last_seen) VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT (unit, epoch) DO UPDATE SET "
    "last_seen = excluded.last_seen RETURNING last_contiguous_seq, max_seq"
)
UPDATE_OBSERVATION = (
    "UPDATE observations SET code = ?, value = ?, ucum = ?, effective = ?, "
    "resource = ?, stored_at = ? WHERE id = ?"
)


def record_batch(tables: Tables, batch: codec.Batch, stored_at: str) -> Outcome:
    """Run inside the caller's transaction. New readings (the common case) are written with
    one bulk write per table; a seq held by another id is looked up for the whole batch at
    once and refused (a conflict), never dropped."""
    execute = tables.execute
    unit, epoch = batch.unit, batch.epoch
    last, top = execute(ADD_EPOCH, [unit, epoch, stored_at, stored_at]).fetchone()
    last, top = int(last), int(top)
    new, held, refused = 0, 0, []
    for other in batch.resources:
        _keep_resource(execute, unit, other, stored_at, batch.created_at)
    known = tables.held_ids([r.id for r in batch.readings])
    holders = tables.seq_holders(unit, epoch, [r.seq for r in batch.readings if r.id not in known])
    texts: dict[int, str] = {}  # one JSON text per resource (a panel carries several readings)

    def text(obs: dict[str, Any]) -> str:
        key = id(obs)
        if key not in texts:
            texts[key] = json.dumps(obs, separators=(",", ":"))
        return texts[key]

    again: list[tuple[int, str]] = []  # held ids: their (unit, epoch, seq) recorded too
    updates: list[list[Any]] = []
    sequences: list[tuple[int, str]] = []
    observations: list[list[Any]] = []
    for carried in batch.readings:
        rid, seq, obs = carried.id, carried.seq, carried.resource
        top = max(top, seq)
        if rid in known:
            held += 1  # already held: the same id again, whatever its epoch or seq
            again.append((seq, rid))
            if carried.update:  # a conditional update: e.g. a reading attributed later
                updates.append([*_columns(obs, carried.part), text(obs), rid])
            continue
        holder = holders.get(seq)
        if holder is not None and holder != rid:
            execute(
                "INSERT INTO conflicts (unit, epoch, seq, held_id, refused_id, batch_id, "
                "first_seen, last_seen, times) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (unit, epoch, seq, refused_id) DO UPDATE SET "
                "last_seen = excluded.last_seen, times = conflicts.times + 1",
                [unit, epoch, seq, holder, rid, batch.batch_id, stored_at, stored_at],
            )
            log.warning(
                "central: refused reading %s of unit %s epoch %s: seq %d is held by reading %s",
                rid,
                unit,
                epoch,
                seq,
                holder,
            )
            refused.append(Refusal(rid, seq, CONFLICT))
            continue
        holders[seq] = rid
        sequences.append((seq, rid))
        observations.append([rid, seq, *_columns(obs, carried.part), text(obs)])
        new += 1
        held += 1
        known.add(rid)  # the same id twice in one batch
    if again or sequences:
        tables.add_sequences(unit, epoch, again + sequences)
    if observations:
        tables.add_observations(unit, epoch, batch.batch_id, stored_at, observations)
    if updates:
        tables.update_observations(stored_at, updates)
    last = _contiguous(execute, unit, epoch, last, top)
    execute(
        "UPDATE epochs SET last_contiguous_seq = ?, max_seq = ? WHERE unit = ? AND epoch = ?",
        [last, top, unit, epoch],
    )
    return Outcome(batch, new, held, tuple(refused), last)


def _identity(resource: dict[str, Any]) -> str | None:
    ident = _get(resource, "identifier", 0)
    system, value = _get(ident, "system"), _get(ident, "value")
    if not isinstance(system, str) or not isinstance(value, str):
        return None
    return f"{system}|{value}"


def _keep_resource(
    execute: Execute, unit: str, other: codec.Other, stored_at: str, batch_at: str = ""
) -> None:
    """A Patient, Device, Location or Encounter of a batch, one per (type, first identifier),
    as the Bundle's request says: a conditional create (POST with ifNoneExist) only creates it
    when missing; a conditional update (PUT: an Encounter going from in-progress to finished, a
    Device with what it told us) replaces it when it changed, but never from an older batch:
    ``batch_at`` is the time the unit formed the batch, so a batch redelivered late (or
    replayed) leaves the newer resource as it is. ``updated_at`` is central's time of the
    change (``central export --since``)."""
    resource = other.resource
    kind, key = resource.get("resourceType"), _identity(resource)
    if not isinstance(kind, str) or key is None:
        return
    text = json.dumps(resource, separators=(",", ":"))
    update = (
        (
            "DO UPDATE SET resource = excluded.resource, updated_at = excluded.updated_at, "
            "batch_at = excluded.batch_at WHERE excluded.batch_at >= resources.batch_at "
            "AND resources.resource <> excluded.resource"
        )
        if other.update
        else "DO NOTHING"
    )
    execute(
        "INSERT INTO resources (type, identifier, unit, resource, stored_at, updated_at, "
        f"batch_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type, identifier) {update}",
        [kind, key, unit, text, stored_at, stored_at, batch_at],
    )


def _contiguous(execute: Execute, unit: str, epoch: str, last: int, top: int) -> int:
    """Advance ``last`` over the seqs now held without a hole; a gap stays visible until the
    unit fills it. Reads the seqs above ``last`` a window at a time."""
    window = CONTIGUITY_WINDOW
    while last < top:
        seqs = [
            int(r[0])
            for r in execute(
                "SELECT seq FROM sequences WHERE unit = ? AND epoch = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq",
                [unit, epoch, last, last + window],
            ).fetchall()
        ]
        for seq in seqs:
            if seq != last + 1:
                return last
            last = seq
        if len(seqs) < window:
            return last
    return last


def _insert_dead_letter(execute: Execute, letter: DeadLetter) -> None:
    execute(
        "INSERT INTO dead_letters (topic, unit, epoch, batch_id, payload, reason, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            letter.topic,
            letter.unit,
            letter.epoch,
            letter.batch_id,
            letter.payload,
            letter.reason,
            letter.received_at,
        ],
    )


class SqliteTables:
    """:class:`Tables` on SQLite (in process: a statement costs no round trip)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def execute(self, sql: str, params: list[Any]) -> Any:
        return self.db.execute(sql, params)

    def held_ids(self, ids: list[str]) -> set[str]:
        held: set[str] = set()
        for start in range(0, len(ids), 500):  # a few hundred per query
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            held.update(
                r[0]
                for r in self.db.execute(
                    f"SELECT id FROM observations WHERE id IN ({marks})", chunk
                ).fetchall()
            )
        return held

    def seq_holders(self, unit: str, epoch: str, seqs: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        wanted = sorted(set(seqs))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found.update(
                (int(r[0]), str(r[1]))
                for r in self.db.execute(
                    f"SELECT seq, id FROM sequences WHERE unit = ? AND epoch = ? AND seq IN "
                    f"({marks})",
                    [unit, epoch, *chunk],
                ).fetchall()
            )
        return found

    def add_sequences(self, unit: str, epoch: str, rows: list[tuple[int, str]]) -> None:
        self.db.conn.executemany(
            "INSERT INTO sequences (unit, epoch, seq, id) VALUES (?, ?, ?, "
            "?) ON CONFLICT (unit, epoch, seq) DO NOTHING",
            [(unit, epoch, seq, rid) for seq, rid in rows],
        )

    def add_observations(
        self, unit: str, epoch: str, batch_id: str, stored_at: str, rows: list[list[Any]]
    ) -> None:
        self.db.conn.executemany(
            "INSERT INTO observations (id, unit, epoch, seq, batch_id, code, value, ucum, "
            "effective, stored_at, resource) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            [
                (rid, unit, epoch, seq, batch_id, code, value, ucum, effective, stored_at, text)
                for rid, seq, code, value, ucum, effective, text in rows
            ],
        )

    def update_observations(self, stored_at: str, rows: list[list[Any]]) -> None:
        self.db.conn.executemany(
            UPDATE_OBSERVATION, [[*row[:5], stored_at, row[5]] for row in rows]
        )


class SqliteCentral:
    def __init__(self, path: Path) -> None:
        self.db = open_sqlite(path, sqlite_migrations)
        self.tables = SqliteTables(self.db)

    def _execute(self, sql: str, params: list[Any]) -> Any:
        return self.db.execute(sql, params)

    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        with self.db.atomic():
            return [record_batch(self.tables, b, stored_at) for b in batches]

    def dead_letter(self, letter: DeadLetter) -> None:
        with self.db.atomic():
            _insert_dead_letter(self._execute, letter)

    def gaps(self) -> list[Gap]:
        return [
            Gap(u, e, int(last), int(top), bool(cur))
            for u, e, last, top, cur in self.db.execute(GAPS).fetchall()
        ]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.execute(sql, list(params)).fetchall()]

    def close(self) -> None:
        self.db.close()


# PostgreSQL: each bulk write is one statement whatever the batch size (the rows travel as one
# array per column, ``unnest`` turns them back into rows), each lookup one array parameter, so
# the statement text never changes and every statement is prepared once per connection.
# Arrays go in binary (``%b``): no quoting or escaping of the JSON texts.
PG_HELD = "SELECT id FROM observations WHERE id = ANY(%b::text[])"
PG_HOLDERS = (
    "SELECT seq, id FROM sequences WHERE unit = %s AND epoch = %s AND seq BETWEEN %s "
    "AND %s AND seq = ANY(%b::bigint[])"
)  # the range: one index range, whatever plan
PG_SEQUENCES = (
    "INSERT INTO sequences (unit, epoch, seq, id) SELECT %s, %s, t.seq, t.id "
    "FROM unnest(%b::bigint[], %b::text[]) AS t(seq, id) "
    "ON CONFLICT (unit, epoch, seq) DO NOTHING"
)
PG_OBSERVATIONS = (
    "INSERT INTO observations (id, unit, epoch, seq, batch_id, code, value, ucum, effective, "
    "stored_at, resource) SELECT t.id, %s, %s, t.seq, %s, t.code, t.value, t.ucum, "
    "t.effective, %s, t.resource::jsonb FROM unnest(%b::text[], %b::bigint[], %b::text[], "
    "%b::float8[], %b::text[], %b::text[], %b::text[]) "
    "AS t(id, seq, code, value, ucum, effective, resource) ON CONFLICT (id) DO NOTHING"
)


class PostgresTables:
    """:class:`Tables` on PostgreSQL: one prepared statement per table and batch."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: list[Any]) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params, prepare=True)

    def held_ids(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.conn.execute(PG_HELD, [ids], prepare=True)}

    def seq_holders(self, unit: str, epoch: str, seqs: list[int]) -> dict[int, str]:
        if not seqs:
            return {}
        wanted = sorted(set(seqs))
        return {
            int(seq): str(rid)
            for seq, rid in self.conn.execute(
                PG_HOLDERS, [unit, epoch, wanted[0], wanted[-1], wanted], prepare=True
            )
        }

    def add_sequences(self, unit: str, epoch: str, rows: list[tuple[int, str]]) -> None:
        self.conn.execute(
            PG_SEQUENCES,
            [unit, epoch, [seq for seq, _ in rows], [rid for _, rid in rows]],
            prepare=True,
        )

    def add_observations(
        self, unit: str, epoch: str, batch_id: str, stored_at: str, rows: list[list[Any]]
    ) -> None:
        columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
        columns[3] = [None if v is None else float(v) for v in columns[3]]  # one array type
        self.conn.execute(
            PG_OBSERVATIONS, [unit, epoch, batch_id, stored_at, *columns], prepare=True
        )

    def update_observations(self, stored_at: str, rows: list[list[Any]]) -> None:
        with self.conn.cursor() as cursor:  # rare (a reading attributed later): row by row
            cursor.executemany(
                UPDATE_OBSERVATION.replace("?", "%s").replace(
                    "resource = %s", "resource = %s::jsonb"
                ),
                [[*row[:5], stored_at, row[5]] for row in rows],
            )


class PostgresCentral:
    """PostgreSQL through psycopg 3; the schema is versioned in ``central_schema``. Resources
    are ``jsonb`` (queried inside by a platform; checked as JSON on the way in); they are read
    back as JSON text, as from SQLite."""

    def __init__(self, dsn: str) -> None:
        import psycopg
        from psycopg.types.string import TextLoader

        self.conn = psycopg.connect(dsn)
        try:
            self.conn.adapters.register_loader("jsonb", TextLoader)
            self._migrate()
        except BaseException:
            self.conn.close()
            raise
        self.tables = PostgresTables(self.conn)

    def _migrate(self) -> None:
        with self.conn.transaction():
            # One migrating receiver at a time when several start together (CREATE TABLE IF
            # NOT EXISTS itself races: two creators collide in pg_type).
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS central_schema (name TEXT PRIMARY "
                "KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in self.conn.execute("SELECT name FROM central_schema")}
            for name, statements in POSTGRES:
                if name in done:
                    continue
                for statement in statements:
                    self.conn.execute(statement)
                self.conn.execute("INSERT INTO central_schema (name) VALUES (%s)", [name])

    def _execute(self, sql: str, params: list[Any]) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        with self.conn.transaction():
            # Two receivers may store batches of the same unit at once: one at a time per unit
            # keeps last_contiguous_seq exact. Sorted: two groups never wait on each other.
            for unit in sorted({b.unit for b in batches}):
                self.tables.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [unit])
            return [record_batch(self.tables, b, stored_at) for b in batches]

    def dead_letter(self, letter: DeadLetter) -> None:
        with self.conn.transaction():
            _insert_dead_letter(self._execute, letter)

    def gaps(self) -> list[Gap]:
        with self.conn.transaction():
            return [
                Gap(u, e, int(last), int(top), bool(cur))
                for u, e, last, top, cur in self.conn.execute(GAPS).fetchall()
            ]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.transaction():
            return [tuple(r) for r in self._execute(sql, list(params)).fetchall()]

    def close(self) -> None:
        self.conn.close()


def open_central(target: str | Path) -> CentralStore:
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresCentral(text)
    return SqliteCentral(Path(text))


@contextlib.contextmanager
def opened(target: str | Path) -> Iterator[CentralStore]:
    store = open_central(target)
    try:
        yield store
    finally:
        store.close()
