"""The ``edge-agent`` command line: one root Typer app composed of one app per user group.

Errors of the agent (:class:`~edge_agent.errors.EdgeAgentError`) are rendered once, here, as
a message and a documented exit code: 0 ok, 1 check failed, 2 usage, 3 config, 4 store,
5 link. Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

# Plain help: typer's rich rendering costs ~0.3 s per `--help` on the unit's computer (the
# technicians' and nurses' commands must answer at once). TYPER_USE_RICH=1 brings it back.
os.environ.setdefault("TYPER_USE_RICH", "0")

import typer
import typer.core

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError


def _plain_flags(command: Any, ctx: Any) -> None:
    """Recent typer shows a type (``<bool>``) beside on/off flags in --help, as if they took
    a value: show none, for every flag of the tree, --help included."""
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and not param.count:
            param.metavar = ""
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            _plain_flags(sub, ctx)


class _Root(typer.core.TyperGroup):
    """Renders the agent's errors once, for the console script and for tests alike: one line
    ``error: ... Fix: ...`` on stderr and the error's exit code (a traceback with --debug)."""

    def get_params(self, ctx: Any) -> Any:
        _plain_flags(self, ctx)
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:  # click.Context (vendored by recent typer versions)
        try:
            return super().invoke(ctx)
        except EdgeAgentError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Root,
    name="edge-agent",
    help="Offline-first agent of a mobile connected medical unit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-agent {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", help="Log level on stderr: debug, info, warning, error.")
    ] = "warning",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else getattr(logging, log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    """Every sub-app and command of ``edge-agent``, in the order ``--help`` lists them: one
    table of groups and one of commands, with the help panel each belongs to."""
    from edge_agent.cli import (
        ble,
        central,
        db,
        demo,
        devices,
        files,
        nurse,
        patient,
        service,
        sync,
        technician,
    )

    groups: tuple[tuple[typer.Typer, str, str | None, str], ...] = (
        (db.app, "db", "Store: statistics, check, export, encryption.", "Technician"),
        (ble.app, "ble", "Bluetooth LE: scan for health devices.", "Technician"),
        (sync.app, "sync", "The link to central: status, now, test.", "Technician"),
        (
            central.app,
            "central",
            "Central's side: the receiver, signing keys, signed commands for the units, export.",
            "Services",
        ),
        (nurse.console_app, "console", None, "Nurse"),
        (
            patient.app,
            "patient",
            "The patient in front of you: open, close, current, assign.",
            "Nurse",
        ),
        (
            technician.config_app,
            "config",
            "The unit's config: show (secrets masked), validate.",
            "Technician",
        ),
        (technician.devices_app, "devices", "Configured devices: list, add, remove.", "Technician"),
    )
    commands: tuple[tuple[Callable[..., Any], str], ...] = (
        (service.run, "Services"),
        # `edge-agent receive` stays the short name of `edge-agent central receive`.
        (central.receive, "Services"),
        (devices.decode, "Technician"),
        (devices.simulate, "Technician"),
        (nurse.start, "Nurse"),
        (nurse.status, "Nurse"),
        (nurse.watch, "Nurse"),
        (demo.demo, "Nurse"),
        (files.attach, "Nurse"),
        (files.files, "Nurse"),
        (technician.doctor, "Technician"),
        (technician.ports, "Technician"),
        (technician.probe, "Technician"),
        (technician.bundle, "Technician"),
    )
    for sub, name, help_text, panel in groups:
        if help_text is None:  # the sub-app's own help
            app.add_typer(sub, name=name, rich_help_panel=panel)
        else:
            app.add_typer(sub, name=name, help=help_text, rich_help_panel=panel)
    for command, panel in commands:
        app.command(rich_help_panel=panel)(command)


_register()


def main() -> None:
    # Standalone mode: typer renders usage errors (exit 2), _Root the agent's errors.
    app()
