"""The nurse's commands: ``start`` (the morning checklist), ``status``, ``watch``, ``console``.

All speak the unit's language (``[unit] language``; ``--lang`` overrides). A config that
cannot be loaded is one red line with its fix, in that language (exit 3); no traceback.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge_agent.cli.common import DEFAULT_CONFIG, ConfigOption
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.console.checklist import Tile
    from edge_agent.i18n import Translator
    from edge_agent.settings import Settings

LangOption = Annotated[
    str | None, typer.Option("--lang", help="fr, ar or en (default: the config's [unit] language).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")]
MARKS = {"ok": "✔", "warn": "!", "fail": "✘"}


def _language(
    config: Path | None, lang: str | None
) -> tuple[Settings | None, Translator, ConfigError | None]:
    from edge_agent.i18n import LANGS, translator
    from edge_agent.settings import load

    if lang is not None and lang not in LANGS:
        raise typer.BadParameter("use fr, ar or en", param_hint="--lang")
    from edge_agent.store import connect as store_connect

    try:
        settings = load(config or DEFAULT_CONFIG)
    except ConfigError as exc:
        return None, translator(lang), exc
    store_connect.configure(settings.store.path, settings.store, str(config or DEFAULT_CONFIG))
    return settings, translator(lang or settings.unit.language), None


def _config_failed(tr: Translator, exc: ConfigError, as_json: bool) -> None:
    from edge_agent.console.checklist import as_json as tiles_json
    from edge_agent.console.checklist import config_tile

    tile = config_tile(tr, exc.file, f"{exc.field}: {exc.problem}")
    if as_json:
        typer.echo(json.dumps(tiles_json([tile], 3, tr.lang), ensure_ascii=False))
    else:
        typer.echo(_tile_lines(tr, tile), err=True)
    raise typer.Exit(3)


def _labelled(tr: Translator, label: str, text: str) -> str:
    return f"{label} : {text}" if tr.lang == "fr" else f"{label}: {text}"  # French typography


def _tile_lines(tr: Translator, tile: Tile) -> str:
    text = f" {MARKS[tile.status]} {_labelled(tr, tile.title, tile.detail)}"
    if tile.fix and tile.status != "ok":
        text += f"\n     {tr('label.fix')} {tile.fix}"
    return text


def _emit(tr: Translator, title: str, found: list[Tile], code: int, as_json: bool) -> None:
    from edge_agent.console.checklist import as_json as tiles_json
    from edge_agent.console.checklist import summary

    if as_json:
        typer.echo(json.dumps(tiles_json(found, code, tr.lang), ensure_ascii=False))
        return
    typer.echo(title)
    for tile in found:
        typer.echo(_tile_lines(tr, tile))
    typer.echo(summary(tr, found))


def start(
    config: ConfigOption = None,
    lang: LangOption = None,
    as_json: JsonOption = False,
    check_only: Annotated[
        bool, typer.Option("--check-only", help="Check only: do not start the agent.")
    ] = False,
    no_ble_scan: Annotated[
        bool, typer.Option("--no-ble-scan", help="Do not search for the Bluetooth devices (3 s).")
    ] = False,
) -> None:
    """Morning checklist: is the unit ready? Then makes sure the agent runs (exit 0: ready)."""
    from edge_agent.console.checklist import gather, tiles

    settings, tr, error = _language(config, lang)
    if error is not None or settings is None:
        assert error is not None
        _config_failed(tr, error, as_json)
        return
    agent, log = None, ""
    if not check_only:
        from edge_agent.console.agent_process import ensure_running

        agent, log = ensure_running(config or DEFAULT_CONFIG, Path(settings.store.path))
    facts = gather(
        settings,
        agent=agent,
        agent_log=log,
        ble_seconds=None if no_ble_scan else 3.0,
        probe_broker=3.0,
    )
    found = tiles(settings, facts, tr)
    code = 1 if any(t.status == "fail" for t in found) else 0
    _emit(
        tr, tr("status.title", unit=settings.unit.id) + " — edge-agent start", found, code, as_json
    )
    raise typer.Exit(code)


def status(
    config: ConfigOption = None,
    lang: LangOption = None,
    as_json: JsonOption = False,
    reveal: Annotated[
        bool,
        typer.Option(
            "--reveal",
            help="Show the open patient's whole identifier (masked by "
            "default: its last 3 characters).",
        ),
    ] = False,
) -> None:
    """One screen: devices and their last reading, the patient, what is left to send, link."""
    from edge_agent.console.checklist import gather, summary, tiles
    from edge_agent.console.present import patient_text, reading_dict

    settings, tr, error = _language(config, lang)
    if error is not None or settings is None:
        assert error is not None
        _config_failed(tr, error, as_json)
        return
    now = datetime.now(UTC)
    facts = gather(settings, ble_seconds=None, probe_broker=None, now=now)
    found = tiles(settings, facts, tr)
    code = 1 if any(t.status == "fail" for t in found) else 0
    view = facts.view
    devices = {
        d.id: (
            reading_dict(tr, view.last_by_device[d.id], now)
            if d.id in view.last_by_device
            else None
        )
        for d in settings.devices
        if d.enabled
    }
    by_key = {t.key: t for t in found}
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "unit": settings.unit.id,
                    "lang": tr.lang,
                    "exit_code": code,
                    "devices": devices,
                    "patient": patient_text(tr, view, now, reveal=reveal),
                    "patients_available": view.patients_available,
                    "backlog": {
                        "readings": view.backlog,
                        "oldest_unsent_at": view.oldest_unsent_at,
                        "text": by_key["backlog"].detail,
                    },
                    "link": by_key["link"].detail,
                    "agent": {"state": facts.agent, "loop": facts.loop, "silent": facts.silent},
                    "tiles": [t.as_dict() for t in found],
                },
                ensure_ascii=False,
            )
        )
        raise typer.Exit(code)
    typer.echo(tr("status.title", unit=settings.unit.id))
    typer.echo(tr("status.devices"))
    for dev_id, last in devices.items():
        what = (
            f"{last['quantity']} {last['value']} ({last['age']})"
            if last
            else tr("status.no_reading")
        )
        typer.echo("  " + _labelled(tr, dev_id, what))
    typer.echo(_labelled(tr, tr("status.patient"), patient_text(tr, view, now, reveal=reveal)))
    typer.echo(_labelled(tr, tr("status.backlog"), by_key["backlog"].detail))
    typer.echo(_labelled(tr, tr("status.link"), by_key["link"].detail))
    if facts.loop:
        from edge_agent.console.present import loop_text

        typer.echo(_labelled(tr, tr("status.loop"), loop_text(tr, facts.loop)))
    problems = [t for t in found if t.status != "ok" and t.key not in ("link", "backlog")]
    for tile in problems:
        typer.echo(_tile_lines(tr, tile))
    typer.echo(summary(tr, found))
    raise typer.Exit(code)


def watch(
    config: ConfigOption = None,
    lang: LangOption = None,
    seconds: Annotated[
        float | None,
        typer.Option("--seconds", min=0.5, help="Stop after this long (default: until Ctrl+C)."),
    ] = None,
) -> None:
    """Live readings as they arrive, with their "received by central" mark."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from edge_agent.console.present import reading_dict
    from edge_agent.console.queries import Reading, readings_after, sent_marks, unit_view

    settings, tr, error = _language(config, lang)
    if error is not None or settings is None:
        assert error is not None
        _config_failed(tr, error, False)
        return
    path = Path(settings.store.path)
    rows: list[Reading] = []
    last_seq = unit_view(path, []).last_seq
    marks: dict[int, bool] = {}

    def table() -> Table:
        now = datetime.now(UTC)
        t = Table(title=tr("watch.title"), expand=True)
        for key in ("col.time", "col.device", "col.quantity", "col.value", "col.central"):
            t.add_column(tr(key))
        if not rows:
            t.caption = tr("watch.waiting")
        for r in rows[-20:]:
            d = reading_dict(tr, r, now)
            sent = marks.get(r.seq, r.sent)
            style = "bold red" if r.alert else None
            value = f"{d['value']} ({tr('reading.alert')})" if r.alert else d["value"]
            t.add_row(
                d["time"],
                r.device_id,
                d["quantity"],
                value,
                tr("reading.received") if sent else tr("reading.pending"),
                style=style,
            )
        return t

    stop_at = None if seconds is None else time.monotonic() + seconds
    try:
        with Live(table(), console=Console(), auto_refresh=False) as live:
            while stop_at is None or time.monotonic() < stop_at:
                new = readings_after(path, last_seq)
                if new:
                    rows.extend(new)
                    del rows[:-20]
                    last_seq = new[-1].seq
                marks.update(sent_marks(path, [r.seq for r in rows if not marks.get(r.seq)]))
                live.update(table(), refresh=True)
                time.sleep(1.0)  # the refresh period
    except KeyboardInterrupt:
        pass


console_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Serve the nurses' web console alone; `console cert` makes its HTTPS certificate.",
)


@console_app.callback()
def console(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to serve on (default: [console] host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default: [console] port, 8470).")
    ] = None,
) -> None:
    """Serve the nurses' web console alone (edge-agent run serves it too when enabled)."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from edge_agent.cli.common import load_settings
    from edge_agent.cli.service import install_stop_handlers
    from edge_agent.console.serve import serve_console

    settings = load_settings(config)
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if updates:
        from edge_agent.settings import from_mapping

        data = settings.model_dump(mode="json")
        data["console"] = {**data["console"], **updates}
        settings = from_mapping(data, "--host/--port")
    c = settings.console
    typer.echo(
        f"console: {'https' if c.tls else 'http'}://{c.host}:{c.port}"
        + ("" if c.loopback else " (PIN asked)")
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await serve_console(settings, stop)

    asyncio.run(main())


@console_app.command("cert")
def console_cert(
    config: ConfigOption = None,
    days: Annotated[
        int, typer.Option("--days", min=1, max=3650, help="Validity in days (default 5 years).")
    ] = 1825,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Make a new certificate over the old one (tablets then see a new fingerprint).",
        ),
    ] = False,
) -> None:
    """Make the LAN console's HTTPS certificate (self-signed, for this computer's names and
    addresses; key 0600) at [console] cert_file/key_file, and print its SHA-256 fingerprint."""
    from edge_agent.cli.common import load_settings
    from edge_agent.console.tls import write_certificate

    settings = load_settings(config)
    c = settings.console
    try:
        info = write_certificate(c, settings.unit.id, days=days, replace=replace)
    except FileExistsError as exc:
        raise ConfigError(
            "[console]", "cert_file", str(exc), "keep it, or run again with --replace"
        ) from None
    typer.echo(f"wrote {c.cert_file} and {c.key_file} (0600)")
    typer.echo(f"SHA-256 fingerprint: {info.fingerprint}")
    typer.echo(f"valid until {info.not_after:%Y-%m-%d}")
