"""Options shared by several commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from edge_agent.settings import Settings

DEFAULT_CONFIG = Path(os.environ.get("EDGE_AGENT_CONFIG", "/etc/edge-agent/edge-agent.toml"))

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Unit config (TOML). Default: $EDGE_AGENT_CONFIG or /etc/edge-agent/edge-agent.toml.",
    ),
]
DbOption = Annotated[Path | None, typer.Option("--db", help="Store file (overrides the config).")]


def load_settings(config: Path | None) -> Settings:
    """The unit's settings; its store is registered to be opened with its key, if encrypted
    (:mod:`edge_agent.store.connect`; the key file is read at the first open)."""
    from edge_agent.settings import load
    from edge_agent.store import connect as store_connect

    source = config or DEFAULT_CONFIG
    settings = load(source)
    store_connect.configure(settings.store.path, settings.store, str(source))
    return settings


def store_path(config: Path | None, db: Path | None) -> Path:
    """The store a command works on: ``--db``, else the config's. Not checked here: the
    readers (:mod:`edge_agent.store.read`) refuse a missing store ("no store at PATH", 4).
    A ``--db`` store is opened with the unit's key when there is a config (``--config``, or
    the default one when it exists)."""
    if db is not None:
        if config is not None or DEFAULT_CONFIG.exists():
            from edge_agent.store import connect as store_connect

            source = config or DEFAULT_CONFIG
            store_connect.configure(db, load_settings(config).store, str(source))
        return db
    return Path(load_settings(config).store.path)


def parse_host_port(value: str, option: str = "--broker") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(
            f"expected HOST:PORT, e.g. 127.0.0.1:1883, got {value!r}", param_hint=option
        )
    return host, int(port)
