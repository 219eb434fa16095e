"""``edge-agent patient``: the patient in front of the nurse (open, close, current, assign).

Works offline on the store, beside a running agent (another process: the agent's writer sees
the change on its next reading, :mod:`edge_agent.store.encounters`; its sync loop is told at
once, SIGUSR2, so re-attributed readings and a close leave without waiting for a reading).
The patient's identifier is shown masked, never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edge_agent.cli.common import ConfigOption, DbOption, load_settings
from edge_agent.errors import StoreError

if TYPE_CHECKING:
    from sqlite_utils import Database

app = typer.Typer(no_args_is_help=True)
T = TypeVar("T")


@contextlib.contextmanager
def _store(path: Path) -> Iterator[Database]:
    """The store, for one short write transaction (the agent may be running: WAL)."""
    from edge_agent.store.encounters import writing

    if not path.exists():
        raise StoreError(
            "store.missing",
            f"no store at {path}. Fix: start the agent once (edge-agent run) or pass --db PATH",
        )
    with writing(path) as db:
        yield db


def _write(path: Path, op: Callable[[Database], T]) -> T:
    """``op`` in one short write transaction, tried again while the store is locked (the
    running agent's writer is committing)."""
    from edge_agent.store.encounters import write_beside

    if not path.exists():
        raise StoreError(
            "store.missing",
            f"no store at {path}. Fix: start the agent once (edge-agent run) or pass --db PATH",
        )
    return write_beside(path, op)


def _wake_agent(path: Path) -> None:
    """Tell the running agent's sync loop (SIGUSR2) that its store changed: re-attributed
    readings and a close leave now, not with the next reading. No agent: they leave when it
    starts."""
    import os
    import signal

    from edge_agent.cli.sync import STATUS_NEEDS
    from edge_agent.store.read import reading
    from sync.diagnostics import status as read_status

    try:
        with reading(path, needs=STATUS_NEEDS) as store:
            pid = read_status(store, path)["pid"]
    except StoreError:
        return
    if isinstance(pid, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR2)


def _paths(config: Path | None, db: Path | None) -> tuple[Path, dict[str, str], str, str | None]:
    settings = load_settings(config)
    if db is not None:  # the unit's store elsewhere: opened with the unit's key
        from edge_agent.cli.common import DEFAULT_CONFIG
        from edge_agent.store import connect as store_connect

        store_connect.configure(db, settings.store, str(config or DEFAULT_CONFIG))
    patients = settings.patients
    return (
        db or Path(settings.store.path),
        dict(patients.systems),
        patients.default,
        patients.practitioner_role,
    )


@app.command("open")
def open_(
    identifier: Annotated[
        str,
        typer.Argument(help="The patient's identifier (card number, platform id, slip barcode)."),
    ],
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            "-s",
            help="Which identifier it is: a name from [patients] systems "
            "(default: [patients] default).",
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Open the patient's encounter: readings from now on are theirs until `patient close`."""
    from edge_agent.store.encounters import masked, open_encounter

    path, systems, default, role = _paths(config, db)
    name = system or default
    if name not in systems:
        raise typer.BadParameter(
            f"unknown identifier system {name!r}; use one of {', '.join(sorted(systems))}",
            param_hint="--system",
        )
    if not identifier.strip() or len(identifier) > 64:
        raise typer.BadParameter("an identifier is 1-64 characters", param_hint="IDENTIFIER")
    found = _write(
        path,
        lambda store: open_encounter(
            store, systems[name], identifier.strip(), practitioner_role=role
        ),
    )
    where = "no GPS fix" if found.position is None else "at the van's GPS position"
    typer.echo(
        f"encounter {found.id} open for {name} {masked(found.patient_value)} "
        f"since {found.opened_at} ({where})"
    )


@app.command()
def close(config: ConfigOption = None, db: DbOption = None) -> None:
    """Close the open encounter."""
    from edge_agent.store.encounters import close_encounter

    path, *_ = _paths(config, db)
    found = _write(path, close_encounter)
    _wake_agent(path)
    typer.echo(f"encounter {found.id} closed at {found.closed_at}")


@app.command()
def current(config: ConfigOption = None, db: DbOption = None) -> None:
    """The open encounter, if any (exit 1 when none)."""
    from edge_agent.store.encounters import current as open_one
    from edge_agent.store.encounters import masked

    path, systems, *_ = _paths(config, db)
    with _store(path) as store:
        found = open_one(store)
        count = (
            0
            if found is None
            else int(
                store.execute(
                    "SELECT count(*) FROM readings WHERE encounter_id = ?", [found.id]
                ).fetchone()[0]
            )
        )
    if found is None:
        typer.echo("no encounter open")
        raise typer.Exit(1)
    names = {uri: name for name, uri in systems.items()}
    typer.echo(
        f"encounter {found.id}: {names.get(found.patient_system, found.patient_system)} "
        f"{masked(found.patient_value)}, open since {found.opened_at}, {count} readings"
    )


@app.command()
def assign(
    seqs: Annotated[
        list[int] | None,
        typer.Argument(help="Readings (their # in the list) to attach to the open encounter."),
    ] = None,
    minutes: Annotated[
        float, typer.Option("--minutes", "-m", min=0.1, max=1440, help="How far back to look.")
    ] = 10.0,
    every: Annotated[bool, typer.Option("--all", help="Attach every reading listed.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """List the unattributed readings of the last minutes; with numbers (or --all), attach
    them to the open encounter (those central has get there as updates)."""
    from edge_agent.store.encounters import Unattributed, unattributed
    from edge_agent.store.encounters import assign as attach

    path, *_ = _paths(config, db)

    def op(store: Database) -> tuple[list[Unattributed], list[int], int]:
        listed = unattributed(store, minutes, at=datetime.now(UTC))
        chosen = (
            [r.seq for r in listed]
            if every
            else [s for s in seqs or [] if s in {r.seq for r in listed}]
        )
        if seqs and len(chosen) != len(set(seqs)):
            unknown = sorted(set(seqs) - set(chosen))
            raise typer.BadParameter(
                f"not unattributed readings of the last {minutes:g} minutes: {unknown}",
                param_hint="SEQS",
            )
        return listed, chosen, attach(store, chosen) if chosen else 0

    listed, chosen, bound = _write(path, op)
    if bound:
        _wake_agent(path)
    if not chosen:
        if not listed:
            typer.echo(f"no unattributed readings in the last {minutes:g} minutes")
            return
        for r in listed:
            value = "-" if r.value is None else f"{r.value:g} {r.unit}"
            typer.echo(f"#{r.seq:<8} {r.received_at}  {r.device_id:<16} {r.quantity:<24} {value}")
        typer.echo("attach with: edge-agent patient assign NUMBER... (or --all)")
        return
    typer.echo(f"attached {bound} readings to the open encounter")
