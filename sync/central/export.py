"""``edge-agent central export``: the central store as FHIR Bulk Data NDJSON, one file per
resource type and a ``manifest.json`` in the style of the ``$export`` output manifest.

Streams: the readings are read a page at a time (keyset on the primary key), so memory
grows with the number of Patients, Devices, Locations and Encounters (one uuid each, for the
references), never with the readings. Reads only: the SQLite store and ``files.db`` are opened
read-only, while the receiver runs.

What goes out (the pure rules are in :mod:`sync.central.ndjson`):

- every Observation (and GPS fix Location) stored or updated at or after ``since`` (a
  ``patient assign`` after the last export sends the reading again), of ``unit`` if given;
- every file resource (DocumentReference, Media, ImagingStudy) recorded at or after ``since``;
- every Patient, Device, Location and Encounter stored or updated at or after ``since``, **and**
  every one the exported resources refer to, however old (a returning patient's Patient, the
  cuff's Device): the output is self-contained, each reference resolves inside it.

Files are written beside their final names (``.Type.ndjson.part``, 0600), fsynced, then
renamed; ``manifest.json`` last: a reader that finds the manifest finds complete files. A
type the export has nothing of loses its file from an earlier export in the same folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from edge_agent.durable import fsync_path
from sync.central import ndjson

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
PAGE = 1000
# transactionTime is the export's start less this: a batch the receiver stamped just before
# the export may commit during it; the next ``--since transactionTime`` then repeats at most
# this much (the same ids again: an import is an upsert), and never misses a row.
MARGIN = timedelta(seconds=60)
STORED_ORDER = ("Encounter", "Patient", "Device", "Location")  # Encounters refer to the rest


@dataclass
class Summary:
    counts: dict[str, int] = field(default_factory=dict)
    unresolved: int = 0  # urn:uuid references to nothing central holds (dropped)
    transaction_time: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)


class Writers:
    """One NDJSON file per resource type, each made at its final name only on commit."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: dict[str, IO[str]] = {}
        self.counts: dict[str, int] = {}

    def write(self, resource: dict[str, Any]) -> None:
        kind = str(resource["resourceType"])
        handle = self.files.get(kind)
        if handle is None:
            fd = os.open(self._part(kind), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            handle = self.files[kind] = open(fd, "w", encoding="utf-8")  # noqa: SIM115
            self.counts[kind] = 0
        handle.write(json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.counts[kind] += 1

    def _part(self, kind: str) -> Path:
        return self.out / f".{kind}.ndjson.part"

    def commit(self, manifest: dict[str, Any]) -> None:
        for kind, handle in self.files.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(self._part(kind), self.out / f"{kind}.ndjson")
        for kind in ndjson.TYPES:
            if kind not in self.files:
                with contextlib.suppress(FileNotFoundError):
                    (self.out / f"{kind}.ndjson").unlink()
        write_atomic(self.out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        fsync_path(self.out)

    def abort(self) -> None:
        for kind, handle in self.files.items():
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                self._part(kind).unlink()


def write_atomic(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _filters(since: str | None, unit: str | None, stamp: str) -> tuple[str, list[Any]]:
    sql, params = "", list[Any]()
    if since is not None:
        sql, params = sql + f" AND {stamp} >= ?", [*params, since]
    if unit is not None:
        sql, params = sql + " AND unit = ?", [*params, unit]
    return sql, params


def _pages(
    query: Query, select: str, key: str, where: str, params: list[Any]
) -> Iterator[list[tuple[Any, ...]]]:
    """``select`` rows (their first column is ``key``) in ``key`` order, a page a query."""
    after = ""
    while True:
        rows = query(
            f"{select} WHERE {key} > ?{where} ORDER BY {key} LIMIT {PAGE}", [after, *params]
        )
        if not rows:
            return
        yield rows
        after = str(rows[-1][0])
        if len(rows) < PAGE:
            return


def count_readings(query: Query, since: str | None, unit: str | None) -> int:
    where, params = _filters(since, unit, "stored_at")
    return int(query(f"SELECT count(*) FROM observations WHERE 1 = 1{where}", params)[0][0])


def export(
    query: Query,
    files_db: Path | None,
    out: Path,
    *,
    since: str | None = None,
    unit: str | None = None,
    request: str = "",
    progress: Callable[[int], None] = lambda n: None,
    now: datetime | None = None,
    base_url: str = "",
) -> Summary:
    """Write the export into ``out`` (a folder, created 0700). ``progress(n)``: n more
    readings read. ``request``: the kick-off URL the manifest names; ``base_url``: the URL
    the folder is served at (the manifest's ``output[].url`` are under it)."""
    started = (now or datetime.now(UTC)) - MARGIN
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    summary = Summary(transaction_time=ndjson.stamp(started))
    kinds = _index(query)
    needed: dict[str, set[str]] = {}
    writers = Writers(out)

    def keep(resource: dict[str, Any], rid: str, last_updated: str, refs: list[str]) -> None:
        for ref in refs:
            kind, _, target = ref.partition("/")
            needed.setdefault(kind, set()).add(target)
        writers.write(ndjson.finish(resource, rid, last_updated))

    try:
        for rows in _readings(query, since, unit):
            progress(len(rows))
            for rid, stored_at, resource in rows:
                body, refs, unresolved = ndjson.rewrite(resource, kinds.get)
                summary.unresolved += unresolved
                keep(body, rid, stored_at, refs)
        if files_db is not None:
            for kind_row in _file_resources(files_db, since, unit):
                body, refs = ndjson.link_logical(kind_row[1], kinds.get)
                keep(body, kind_row[0], kind_row[2], refs)
        for kind in STORED_ORDER:
            for rid, updated_at, resource in _stored(
                query, kind, since, unit, needed.get(kind, set())
            ):
                body, refs, unresolved = ndjson.rewrite(resource, kinds.get)
                summary.unresolved += unresolved
                keep(body, rid, updated_at, refs)
        summary.counts = dict(writers.counts)
        extension = {
            "since": since,
            "unit": unit,
            "unresolvedReferences": summary.unresolved,
            "transactionTimeMarginSeconds": int(MARGIN.total_seconds()),
        }
        summary.manifest = ndjson.manifest(
            summary.transaction_time, request, summary.counts, extension, base_url
        )
        writers.commit(summary.manifest)
    except BaseException:
        writers.abort()
        raise
    return summary


def _index(query: Query) -> dict[str, str]:
    """uuid -> type of every Patient, Device, Location and Encounter central holds (the key
    columns only, a page at a time)."""
    kinds: dict[str, str] = {}
    after = ("", "")
    while True:
        rows = query(
            "SELECT type, identifier FROM resources WHERE type > ? OR (type = ? AND "
            f"identifier > ?) ORDER BY type, identifier LIMIT {PAGE}",
            [after[0], after[0], after[1]],
        )
        for kind, key in rows:
            rid = ndjson.stored_id(str(kind), str(key))
            if rid is not None:
                kinds[rid] = str(kind)
        if len(rows) < PAGE:
            return kinds
        after = (str(rows[-1][0]), str(rows[-1][1]))


def _readings(
    query: Query, since: str | None, unit: str | None
) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """Pages of (id, stored_at, resource): each Observation or GPS Location once, however many
    readings (rows) it carries."""
    where, params = _filters(since, unit, "stored_at")
    for rows in _pages(
        query, "SELECT id, stored_at, resource FROM observations", "id", where, params
    ):
        page: list[tuple[str, str, dict[str, Any], list[str]]] = []
        for row_id, stored_at, text in rows:
            resource = json.loads(text)
            rid, before = ndjson.first_reading(resource, str(row_id))
            page.append((rid, str(stored_at), resource, before))
        earlier = sorted({i for *_, before in page for i in before})
        held: set[str] = set()
        for start in range(0, len(earlier), 500):  # rows of the same panel this export holds
            chunk = earlier[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            held.update(
                str(r[0])
                for r in query(
                    f"SELECT id FROM observations WHERE id IN ({marks}){where}", [*chunk, *params]
                )
            )
        yield [
            (rid, stored_at, resource)
            for rid, stored_at, resource, before in page
            if not held.intersection(before)
        ]


def _stored(
    query: Query, kind: str, since: str | None, unit: str | None, needed: set[str]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, updated_at, resource) of each ``kind`` in the window or in ``needed``."""
    after = ""
    while True:
        rows = query(
            "SELECT identifier, unit, updated_at, resource FROM resources WHERE "
            f"type = ? AND identifier > ? ORDER BY identifier LIMIT {PAGE}",
            [kind, after],
        )
        for key, row_unit, updated_at, text in rows:
            rid = ndjson.stored_id(kind, str(key))
            if rid is None:
                continue
            in_window = (since is None or str(updated_at) >= since) and (
                unit is None or row_unit == unit
            )
            if in_window or rid in needed:
                yield rid, str(updated_at), json.loads(text)
        if len(rows) < PAGE:
            return
        after = str(rows[-1][0])


def _file_resources(
    files_db: Path, since: str | None, unit: str | None
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(id, resource, updated_at) of the files' FHIR resources, from ``files.db`` read-only."""
    where, params = _filters(since, unit, "updated_at")
    with contextlib.closing(read_only(files_db)) as db:

        def query(sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in db.execute(sql, list(args)).fetchall()]

        for rows in _pages(
            query, "SELECT id, body, updated_at FROM file_resources", "id", where, params
        ):
            for rid, body, updated_at in rows:
                yield str(rid), json.loads(body), str(updated_at)


def read_only(path: Path) -> sqlite3.Connection:
    """A SQLite file opened read-only (never created, never migrated)."""
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
