"""The central store's rules, on a real SQLite file and a real PostgreSQL server alike: readings
are held by id, sequence numbers count per (unit, epoch), a conflict is refused and recorded,
never dropped; the c001 schema upgrades in place; errors are told transient or not."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Migrations

from edge_agent.store.database import open_database
from sync.central import schema
from sync.central.store import CONFLICT, CentralStore, Refusal, open_central, transient
from tests.central.central_kit import batch, rows, store_rows

UNIT = "mmu-c"
A, B = str(uuid.uuid4()), str(uuid.uuid4())
NOW = "2026-11-23T08:00:00.000Z"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    dsn: str = request.getfixturevalue("postgres")
    return dsn


@pytest.fixture
def central(target: str) -> Iterator[CentralStore]:
    store = open_central(target)
    try:
        yield store
    finally:
        store.close()


def test_a_unit_that_starts_over_with_a_new_store_keeps_both(
    tmp_path: Path, central: CentralStore
) -> None:
    """Issue 13: the second store's seq 1..N used to be dropped (taken by the first store's
    readings under other ids) and acknowledged all the same."""
    n = 30
    first = store_rows(tmp_path / "sd-card-1.db", UNIT, n)
    second = store_rows(tmp_path / "sd-card-2.db", UNIT, n)
    assert [r["seq"] for r in first] == [r["seq"] for r in second] == list(range(1, n + 1))
    outcomes = central.store_batches([batch(UNIT, A, first[:20]), batch(UNIT, A, first[20:])], NOW)
    outcomes += central.store_batches([batch(UNIT, B, second)], NOW)
    assert [(o.new, o.held, o.refused) for o in outcomes] == [
        (20, 20, ()),
        (10, 10, ()),
        (30, 30, ()),
    ]
    assert outcomes[-1].last_contiguous_seq == n
    held = central.query("SELECT id FROM observations WHERE unit = ?", [UNIT])
    assert {i for (i,) in held} == {r["id"] for r in first + second}
    assert sorted(central.query("SELECT epoch, last_contiguous_seq FROM epochs")) == sorted(
        [(A, n), (B, n)]
    )
    assert central.query("SELECT count(*) FROM conflicts") == [(0,)]


def test_a_seq_taken_by_another_id_is_refused_recorded_and_logged(
    central: CentralStore, caplog: pytest.LogCaptureFixture
) -> None:
    central.store_batches([batch(UNIT, A, rows(range(1, 4), "r"))], NOW)
    intruder = rows(range(2, 4), "x")  # seq 2 and 3 of epoch A again, under other ids
    with caplog.at_level(logging.WARNING):
        (outcome,) = central.store_batches([batch(UNIT, A, [*intruder, *rows(range(4, 5))])], NOW)
        again = central.store_batches([batch(UNIT, A, intruder[:1])], NOW)[0]
    assert outcome.refused == (Refusal("x2", 2, CONFLICT), Refusal("x3", 3, CONFLICT))
    assert (outcome.new, outcome.held, outcome.last_contiguous_seq) == (1, 1, 4)
    assert (again.held, again.refused) == (0, (Refusal("x2", 2, CONFLICT),))
    assert sorted(central.query("SELECT seq, held_id, refused_id, times FROM conflicts")) == [
        (2, "r2", "x2", 2),
        (3, "r3", "x3", 1),
    ]
    assert central.query("SELECT count(*) FROM observations WHERE id LIKE ?", ["x%"]) == [(0,)]
    warned = [r.getMessage() for r in caplog.records if "refused reading" in r.getMessage()]
    assert warned[0] == (
        f"central: refused reading x2 of unit {UNIT} epoch {A}: seq 2 is held by reading r2"
    )


def test_the_same_id_again_is_held_whatever_its_epoch_or_seq(central: CentralStore) -> None:
    reading = rows(range(1, 2), "r")
    central.store_batches([batch(UNIT, A, reading)], NOW)
    moved = [{**reading[0], "seq": 7}]  # e.g. a salvaged store numbering it anew
    (outcome,) = central.store_batches([batch(UNIT, B, moved)], NOW)
    assert (outcome.new, outcome.held, outcome.refused) == (0, 1, ())
    assert central.query("SELECT count(*) FROM observations") == [(1,)]


def test_gaps_are_per_epoch_and_only_the_newest_epoch_is_current(
    central: CentralStore,
) -> None:
    central.store_batches(
        [batch(UNIT, A, rows(range(1, 3))), batch(UNIT, A, rows(range(5, 6)))], NOW
    )
    central.store_batches([batch(UNIT, B, rows(range(2, 3)))], "2026-11-23T09:00:00.000Z")
    gaps = {(g.epoch, g.last_contiguous_seq, g.max_seq, g.current) for g in central.gaps()}
    assert gaps == {(A, 2, 5, False), (B, 0, 2, True)}
    central.store_batches([batch(UNIT, B, rows(range(1, 2)))], NOW)
    assert {g.epoch for g in central.gaps()} == {A}


def c001_only() -> Migrations:
    old = Migrations("central")
    old(name="c001_observations")(schema.c001_observations)
    return old


def test_a_c001_store_upgrades_in_place(target: str) -> None:
    old_rows = [("r1", UNIT, 1), ("r2", UNIT, 2), ("r4", UNIT, 4)]
    insert = (
        "INSERT INTO observations (id, unit, seq, batch_id, stored_at, resource) "
        "VALUES (?, ?, ?, 'b', '2026-11-01T00:00:00.000Z', '{}')"
    )
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            conn.execute(
                "CREATE TABLE central_schema (name TEXT PRIMARY KEY, applied_at "
                "TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for statement in schema.C001:
                conn.execute(statement)
            conn.execute("INSERT INTO central_schema (name) VALUES ('c001_observations')")
            for row in old_rows:
                conn.execute(insert.replace("?", "%s"), row)
            conn.execute("INSERT INTO units VALUES (%s, 2)", [UNIT])
    else:
        db = open_database(Path(target), c001_only())
        for row in old_rows:
            db.execute(insert, row)
        db.execute("INSERT INTO units VALUES (?, 2)", [UNIT])
        db.conn.commit()
        db.close()
    with contextlib.closing(open_central(target)) as central:
        assert central.query("SELECT epoch, last_contiguous_seq, max_seq FROM epochs") == [
            (schema.LEGACY_EPOCH, 2, 4)
        ]
        assert sorted(central.query("SELECT seq, id FROM sequences")) == [
            (1, "r1"),
            (2, "r2"),
            (4, "r4"),
        ]
        # The old unit goes on under the legacy epoch; a new store of it starts its own.
        (old, new) = central.store_batches(
            [
                batch(UNIT, schema.LEGACY_EPOCH, rows(range(3, 4), "r")),
                batch(UNIT, A, rows(range(1, 3), "n")),
            ],
            NOW,
        )
        assert (old.last_contiguous_seq, new.last_contiguous_seq) == (4, 2)
        assert not old.refused and not new.refused


def test_transient_errors_are_told_from_poison() -> None:
    def sqlite_error(code: int) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError("x")
        exc.sqlite_errorcode = code
        return exc

    assert transient(sqlite_error(sqlite3.SQLITE_BUSY))
    assert transient(sqlite_error(sqlite3.SQLITE_FULL))
    assert transient(sqlite_error(sqlite3.SQLITE_IOERR_WRITE))  # an extended code
    assert not transient(sqlite_error(sqlite3.SQLITE_ERROR))  # e.g. no such table
    assert not transient(sqlite3.IntegrityError("x"))
    assert transient(psycopg.errors.SerializationFailure("x"))
    assert transient(psycopg.errors.AdminShutdown("x"))
    assert transient(psycopg.errors.DiskFull("x"))
    assert transient(psycopg.OperationalError("connection lost"))
    assert not transient(psycopg.DataError("NUL"))
    assert not transient(psycopg.errors.ProgramLimitExceeded("row too big"))
    assert not transient(ValueError("a bug"))


def test_receive_stats_shows_each_unit_and_epoch(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_agent.cli import app
    from sync.central.store import DeadLetter

    path = tmp_path / "central.db"
    with contextlib.closing(open_central(path)) as central:
        central.store_batches(
            [batch(UNIT, A, rows(range(1, 4), "a")), batch(UNIT, A, rows(range(6, 7), "a"))], NOW
        )
        central.store_batches(
            [batch(UNIT, B, rows(range(1, 3), "b")), batch(UNIT, B, rows(range(2, 3), "x"))],
            "2026-11-23T09:00:00.000Z",
        )
        central.dead_letter(DeadLetter("mmu/v1/u/up/readings", b"\x00", "codec: x", NOW, "u"))
    result = CliRunner().invoke(app, ["receive", "--stats", "--db", str(path)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    common = {"dead_letters": 0, "conflicts_seen": 0}
    assert stats == {
        "units": {
            UNIT: [
                {
                    **common,
                    "epoch": A,
                    "held": 4,
                    "last_contiguous_seq": 3,
                    "max_seq": 6,
                    "gap": True,
                    "gap_asked_for": False,
                    "first_seen": NOW,
                    "last_seen": NOW,
                    "conflicts": 0,
                },
                {
                    **common,
                    "epoch": B,
                    "held": 2,
                    "last_contiguous_seq": 2,
                    "max_seq": 2,
                    "gap": False,
                    "gap_asked_for": False,
                    "first_seen": "2026-11-23T09:00:00.000Z",
                    "last_seen": "2026-11-23T09:00:00.000Z",
                    "conflicts": 1,
                    "conflicts_seen": 1,
                },
            ]
        },
        "unplaced_dead_letters": [{"unit": "u", "epoch": None, "dead_letters": 1}],
        "dead_letters": [
            {
                "id": 1,
                "received_at": NOW,
                "topic": "mmu/v1/u/up/readings",
                "unit": "u",
                "epoch": None,
                "batch_id": None,
                "bytes": 1,
                "reason": "codec: x",
            }
        ],
        "totals": {"held": 6, "conflicts": 1, "dead_letters": 1},
    }


async def test_receivers_starting_together_migrate_one_at_a_time(postgres: str) -> None:
    """Several receivers open one new PostgreSQL store at once (each in its own thread)."""
    import asyncio

    stores = await asyncio.gather(*(asyncio.to_thread(open_central, postgres) for _ in range(4)))
    for store in stores:
        store.close()
    with psycopg.connect(postgres) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM central_schema ORDER BY name")]
    assert names == [
        "c001_observations",
        "c002_epochs",
        "c003_resources",
        "c004_resource_batch_at",
        "c005_postgres_jsonb",
    ]


@given(
    st.permutations(range(1, 41)),
    st.lists(st.integers(1, 8), min_size=40, max_size=40),
    st.integers(1, 5),
)
@settings(max_examples=25)
def test_last_contiguous_seq_follows_any_arrival_order(
    order: list[int], sizes: list[int], window: int
) -> None:
    """Batches of any size in any order (out-of-order delivery, resends): the last contiguous
    seq is the model's at every step; a small read window exercises its paging."""
    import tempfile
    from unittest import mock

    from sync.central import store as central_store

    readings = {r["seq"]: r for r in rows(range(1, 41), "r")}
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.closing(open_central(Path(tmp) / "c.db")) as central,
        mock.patch.object(central_store, "CONTIGUITY_WINDOW", window),
    ):
        held: set[int] = set()
        i = 0
        for size in sizes:
            chunk = sorted(order[i : i + size]) or [order[-1]]  # then resends of the last one
            i += size
            (outcome,) = central.store_batches([batch(UNIT, A, [readings[s] for s in chunk])], NOW)
            held.update(chunk)
            model = 0
            while model + 1 in held:
                model += 1
            assert outcome.last_contiguous_seq == model


SPO2 = {
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "2708-6"},
            {"system": "http://loinc.org", "code": "59408-5"},
            {"system": "urn:iso:std:iso:11073:10101", "code": "150456"},
        ]
    },
    "valueQuantity": {"value": 97.0, "code": "%"},
    "effectiveDateTime": "2026-11-30T08:00Z",
}


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "code",
                        "coding",
                        "system",
                        "valueQuantity",
                        "value",
                        "effectiveDateTime",
                        "component",
                        "position",
                        "extension",
                        "url",
                        "valueString",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_the_fast_column_path_answers_as_the_general_one(obs: Any) -> None:
    """`_plain_columns` is a shortcut: wherever it answers, the general path agrees."""
    from sync.central import store as central

    for shape in (obs, SPO2, {**SPO2, "valueQuantity": obs}, {**SPO2, "code": obs}):
        if isinstance(shape, dict):
            fast = central._plain_columns(shape)
            if fast is not None:
                assert fast == central._general_columns(shape)
    assert central._plain_columns(SPO2) == ["59408-5", 97.0, "%", "2026-11-30T08:00Z"]


def test_a_postgres_central_of_json_text_upgrades_to_jsonb(postgres: str) -> None:
    """c005: an existing central (resources as TEXT) gets ``jsonb`` columns, every row kept;
    a NUL character, which jsonb cannot hold, becomes U+FFFD instead of stopping the upgrade."""
    obs = {"resourceType": "Observation", "valueString": "a\x00b", "id": "r1"}
    device = {"resourceType": "Device", "identifier": [{"system": "s", "value": "d1"}]}
    with psycopg.connect(postgres) as conn:
        conn.execute(
            "CREATE TABLE central_schema (name TEXT PRIMARY KEY, applied_at "
            "TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for name, statements in schema.POSTGRES[:4]:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO central_schema (name) VALUES (%s)", [name])
        conn.execute(
            "INSERT INTO observations (id, unit, epoch, seq, batch_id, stored_at, "
            "resource) VALUES ('r1', %s, %s, 1, 'b', %s, %s)",
            [UNIT, A, NOW, json.dumps(obs)],
        )
        conn.execute("INSERT INTO sequences VALUES (%s, %s, 1, 'r1')", [UNIT, A])
        conn.execute("INSERT INTO epochs VALUES (%s, %s, 1, 1, %s, %s)", [UNIT, A, NOW, NOW])
        conn.execute(
            "INSERT INTO resources (type, identifier, unit, resource, stored_at, "
            "updated_at) VALUES ('Device', 's|d1', %s, %s, %s, %s)",
            [UNIT, json.dumps(device), NOW, NOW],
        )
    with contextlib.closing(open_central(postgres)) as central:
        (outcome,) = central.store_batches([batch(UNIT, A, rows(range(2, 4), "r"))], NOW)
        assert (outcome.new, outcome.last_contiguous_seq) == (2, 3)
        kept = central.query("SELECT resource FROM observations WHERE id = 'r1'")[0][0]
        assert json.loads(kept) == {**obs, "valueString": "a\ufffdb"}  # read back as JSON text
        (device_text,) = central.query("SELECT resource FROM resources")[0]
        assert json.loads(device_text) == device
        new = json.loads(central.query("SELECT resource FROM observations WHERE id = 'r2'")[0][0])
        assert new["resourceType"] == "Observation"
    with psycopg.connect(postgres) as conn:
        types = conn.execute(
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE column_name = 'resource' ORDER BY table_name"
        ).fetchall()
    assert types == [("observations", "jsonb"), ("resources", "jsonb")]
