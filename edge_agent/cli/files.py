"""``edge-agent attach FILE``: a file for the specialist (an ECG, a photo, a report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli.common import ConfigOption, load_settings

KINDS = ("dicom", "ecg", "image", "video", "document")


def attach(
    file: Annotated[Path, typer.Argument(help="The file to send to central.")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            "-k",
            help=f"One of {', '.join(KINDS)} (default: guessed from the file).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="The device the file comes from (recorded with it)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Attach a file to the open encounter; the agent sends it to central (resumable)."""
    import os
    import signal

    from edge_agent.files.attachments import AttachmentsFull
    from edge_agent.files.dicom_meta import NotDicom
    from edge_agent.files.sources import attachment_store
    from edge_agent.store.database import get_state
    from edge_agent.store.writer import Store

    if kind is not None and kind not in KINDS:
        typer.echo(f"error: --kind {kind!r} is not one of {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    if not file.is_file():
        typer.echo(f"error: {file}: no such file. Fix: give the path of the file to send", err=True)
        raise typer.Exit(2)
    settings = load_settings(config)
    with Store(settings.store.path, settings.unit.id) as store:
        try:
            added = attachment_store(store, settings).add_file(file, kind=kind, device=device)
        except NotDicom as exc:
            typer.echo(
                f"error: {file}: {exc}. Fix: check the file, or pass another --kind", err=True
            )
            raise typer.Exit(1) from None
        except AttachmentsFull as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(4) from None
        sync_state = store.read(lambda db: get_state(db, "sync")) or {}
    held = "already held" if not added.new else "stored"
    typer.echo(f"{held}: {added.size} bytes, id {added.file_id[:12]}")
    pid = sync_state.get("pid") if not sync_state.get("stopped") else None
    if isinstance(pid, int):
        try:
            os.kill(pid, signal.SIGUSR2)  # the running agent looks at its file queue now
        except (ProcessLookupError, PermissionError):
            pid = None
    if pid is None:
        typer.echo("the agent is not running: the file leaves when it starts")


def files(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most recent files.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Attached files and where each is: at central (the specialist has it), or waiting."""
    import json

    from edge_agent.store.read import reading

    settings = load_settings(config)
    with reading(settings.store.path, needs="m010_attachments") as db:
        rows = db.execute(
            "SELECT received_at, kind, source_device, size, name, file_id, central_holds_at, "
            "failed, encounter_id FROM attachments ORDER BY received_at DESC, file_id "
            "LIMIT ?",
            [limit],
        ).fetchall()
    for at, kind, device, size, name, file_id, held, failed, encounter in rows:
        state = "at central" if held else f"refused: {failed}" if failed else "waiting"
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "received_at": at,
                        "kind": kind,
                        "device": device,
                        "size": size,
                        "name": name,
                        "id": file_id,
                        "state": state,
                        "central_holds_at": held,
                        "encounter_id": encounter,
                    }
                )
            )
        else:
            typer.echo(
                f"{at}  {kind:<8} {size:>10} B  {state:<10}  {device or '-'}  "
                f"{name or file_id[:12]}"
            )
    if not rows and not as_json:
        typer.echo("no files attached")
