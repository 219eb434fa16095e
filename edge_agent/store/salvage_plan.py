"""What a salvage copies and what ``db check`` advises about a quarantined store (pure).

The tables a salvage copies are derived from the new store's schema (``sqlite_master``), so a
table a later migration adds is copied without anyone remembering to list it. Only the tables
a new store makes for itself are left out, each with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable

# Tables the new store makes for itself: never copied from the damaged one.
OWN_TABLES: dict[str, str] = {
    "store_identity": "a salvaged store is a new store: a new epoch, so central never "
    "confuses its seqs with the damaged store's",
    "_sqlite_migrations": "the new store's own record of the migrations it ran",
}
# Columns the new store gives its own values.
OWN_COLUMNS: dict[str, frozenset[str]] = {
    # new seqs (a new epoch); the old batches' seq ranges and membership mean nothing here
    "readings": frozenset({"seq", "batch_id"}),
    "rejects": frozenset({"id"}),
    "events": frozenset({"id"}),
}


def tables_to_copy(schema_tables: Iterable[str]) -> list[str]:
    """Every table of the schema but SQLite's own and :data:`OWN_TABLES`: readings first (the
    longest copy, and what the count of losses is about), then by name."""
    names = {t for t in schema_tables if not t.startswith("sqlite_") and t not in OWN_TABLES}
    return sorted(names, key=lambda t: (t != "readings", t))


def columns_to_copy(table: str, source: Iterable[str], target: Iterable[str]) -> list[str]:
    """The columns both stores have, in the source's order, less the new store's own."""
    want = set(target)
    skip = OWN_COLUMNS.get(table, frozenset())
    return [c for c in source if c in want and c not in skip]


def may_delete_quarantine(readable: bool, not_at_central: int, unreadable: int) -> bool:
    """A quarantined store may be deleted only when it was read whole and central holds
    every reading in it. A part that could not be read may hold readings nobody else has."""
    return readable and not_at_central == 0 and unreadable == 0


def quarantine_advice(readable: bool, not_at_central: int, unreadable: int) -> str:
    """One line for the technician about one quarantined file."""
    if may_delete_quarantine(readable, not_at_central, unreadable):
        return (
            "central holds every reading in it: copy it off the unit if support wants it, "
            "then it may be deleted"
        )
    if not readable:
        return (
            "KEEP IT: it cannot be read here, so it may hold readings central does not "
            "have; copy it off the unit for support and do not delete it"
        )
    parts = []
    if not_at_central:
        parts.append(f"{not_at_central} readings central does not have")
    if unreadable:
        parts.append(f"about {unreadable} readings that could not be read")
    return (
        f"KEEP IT: it holds {' and '.join(parts)}; copy it off the unit for support and "
        "do not delete it"
    )
