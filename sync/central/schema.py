"""The central store's schema, versioned, the same tables on SQLite and PostgreSQL.

- ``observations``: one row per reading id, whatever its epoch or seq (idempotence).
- ``sequences``: (unit, epoch, seq) -> reading id; a second id for a taken seq is a conflict.
- ``epochs``: per (unit, epoch) the last contiguous seq, the highest seq seen and when the
  epoch was first seen (the newest epoch of a unit is the one central may ask to resend).
- ``conflicts``: readings refused because their (unit, epoch, seq) is held by another id.
- ``dead_letters``: messages a human must look at (topic, payload bytes, reason, time).

c001 is the first version (observations keyed by id and unique per (unit, seq), ``units``);
c002 moves sequence numbers under an epoch. Rows stored before c002 get :data:`LEGACY_EPOCH`.
c003 adds ``resources``: the Patients, Devices, Locations and Encounters of mmu.readings/3
Bundles, one per (type, first identifier), as the Bundle's conditional creates ask.
c004 adds ``resources.batch_at``: when the unit formed the batch that last changed a Device
(its clock), so a late redelivery never takes facts back; ``updated_at`` stays central's time
(what ``central export --since`` filters on).
c005 (PostgreSQL only) makes ``observations.resource`` and ``resources.resource`` ``jsonb``:
a platform queries inside them, and the server checks each is JSON on the way in. The rows
are converted in place; SQLite keeps JSON text.
"""

from __future__ import annotations

from typing import Final

from sqlite_utils import Database, Migrations

LEGACY_EPOCH: Final = "00000000-0000-0000-0000-000000000000"

C001: Final = [
    """CREATE TABLE observations (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, seq BIGINT NOT NULL, batch_id TEXT NOT NULL,
        code TEXT, value DOUBLE PRECISION, ucum TEXT, effective TEXT, stored_at TEXT NOT NULL,
        resource TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX observations_unit_seq ON observations(unit, seq)",
    "CREATE TABLE units (unit TEXT PRIMARY KEY, last_contiguous_seq BIGINT NOT NULL)",
]


def c002(serial: str, blob: str) -> list[str]:
    """``serial``: the engine's auto-increment key; ``blob``: its byte string type."""
    return [
        f"ALTER TABLE observations ADD COLUMN epoch TEXT NOT NULL DEFAULT '{LEGACY_EPOCH}'",
        "DROP INDEX observations_unit_seq",  # the cause of silent drops (issue 13)
        """CREATE TABLE sequences (
            unit TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,
            PRIMARY KEY (unit, epoch, seq))""",
        "INSERT INTO sequences (unit, epoch, seq, id) SELECT unit, epoch, seq, id "
        "FROM observations",
        """CREATE TABLE epochs (
            unit TEXT NOT NULL, epoch TEXT NOT NULL, last_contiguous_seq BIGINT NOT NULL,
            max_seq BIGINT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
            PRIMARY KEY (unit, epoch))""",
        f"""INSERT INTO epochs (unit, epoch, last_contiguous_seq, max_seq, first_seen, last_seen)
            SELECT u.unit, '{LEGACY_EPOCH}', u.last_contiguous_seq,
                   (SELECT coalesce(max(o.seq), 0) FROM observations o WHERE o.unit = u.unit),
                   coalesce((SELECT min(o.stored_at) FROM observations o WHERE o.unit = u.unit),
                            ''),
                   coalesce((SELECT max(o.stored_at) FROM observations o WHERE o.unit = u.unit),
                            '')
            FROM units u""",
        "DROP TABLE units",
        f"""CREATE TABLE conflicts (
            id {serial}, unit TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL,
            held_id TEXT NOT NULL, refused_id TEXT NOT NULL, batch_id TEXT NOT NULL,
            first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, times BIGINT NOT NULL,
            UNIQUE (unit, epoch, seq, refused_id))""",
        f"""CREATE TABLE dead_letters (
            id {serial}, topic TEXT NOT NULL, unit TEXT, epoch TEXT, batch_id TEXT,
            payload {blob} NOT NULL, reason TEXT NOT NULL, received_at TEXT NOT NULL)""",
    ]


C003: Final = [
    """CREATE TABLE resources (
        type TEXT NOT NULL, identifier TEXT NOT NULL, unit TEXT NOT NULL, resource TEXT NOT NULL,
        stored_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (type, identifier))""",
]

C004: Final = ["ALTER TABLE resources ADD COLUMN batch_at TEXT NOT NULL DEFAULT ''"]

# jsonb cannot hold the NUL character: a resource text carrying one (``\u0000``, possible in
# TEXT) would stop the upgrade, so it becomes U+FFFD (the rest of the resource is kept).
C005_POSTGRES_JSONB: Final = [
    f"ALTER TABLE {table} ALTER COLUMN resource TYPE jsonb USING "
    "replace(resource, '\\u0000', '\\ufffd')::jsonb"
    for table in ("observations", "resources")
]

SQLITE_SERIAL: Final = "INTEGER PRIMARY KEY"
POSTGRES_SERIAL: Final = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

# PostgreSQL: applied in order, each name recorded in ``central_schema``.
POSTGRES: Final = [
    ("c001_observations", C001),
    ("c002_epochs", c002(POSTGRES_SERIAL, "BYTEA")),
    ("c003_resources", C003),
    ("c004_resource_batch_at", C004),
    ("c005_postgres_jsonb", C005_POSTGRES_JSONB),
]

sqlite_migrations = Migrations("central")


@sqlite_migrations()
def c001_observations(db: Database) -> None:
    for statement in C001:
        db.execute(statement)


@sqlite_migrations()
def c002_epochs(db: Database) -> None:
    for statement in c002(SQLITE_SERIAL, "BLOB"):
        db.execute(statement)


@sqlite_migrations()
def c003_resources(db: Database) -> None:
    for statement in C003:
        db.execute(statement)


@sqlite_migrations()
def c004_resource_batch_at(db: Database) -> None:
    for statement in C004:
        db.execute(statement)
