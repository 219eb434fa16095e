"""Technician commands: ``doctor``, ``ports``, ``probe``, ``bundle``, ``config show|validate``
and ``devices list|add|remove``. Every one takes ``--json``; exit codes 0 ok, 1 a check
failed, 2 usage, 3 config, 4 store, 5 link."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent.cli.common import DEFAULT_CONFIG, ConfigOption, load_settings
from edge_agent.errors import ConfigError, DeviceError

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object.")]
config_app = typer.Typer(no_args_is_help=True)
devices_app = typer.Typer(no_args_is_help=True)


def _config_path(config: Path | None) -> Path:
    return config or DEFAULT_CONFIG


def doctor(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    broker_timeout: Annotated[
        float, typer.Option("--broker-timeout", min=0.5, help="Seconds to wait for the broker.")
    ] = 10,
) -> None:
    """Check the whole unit; every failure with its fix.

    Config, store, disk, file modes, service user, TLS, broker, clock, Bluetooth, devices.
    Exit 0 healthy, 1 a check failed, 3 bad config."""
    from edge_agent.checks import doctor as doc

    checks, code = doc.run(_config_path(config), broker_timeout=broker_timeout)
    typer.echo(doc.as_json(checks, code) if as_json else doc.render(checks))
    if code:
        raise typer.Exit(code)


def ports(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Serial ports present: USB VID:PID, serial number, stable by-id path, matching kinds."""
    from edge_agent.checks.serial_ports import list_ports

    configured: dict[str, str] = {}
    with contextlib.suppress(ConfigError):  # ports are listed without the config too
        configured = {d.port: d.id for d in load_settings(config).devices if d.port}
    found = list_ports(configured)
    if as_json:
        typer.echo(json.dumps({"ports": [p.to_json() for p in found]}))
        return
    if not found:
        typer.echo("no serial ports (plug the device in; USB-serial cables show as ttyUSB/ACM)")
    for p in found:
        kinds = ", ".join(p.kinds) or "-"
        typer.echo(
            f"{p.device}  {p.vid_pid or '-'}  serial {p.serial_number or '-'}  "
            f"kinds {kinds}" + (f"  used by {p.used_by}" if p.used_by else "")
        )
        typer.echo(f"    {p.by_id or '(no by-id link)'}  {p.description}")


def probe(
    device: Annotated[str, typer.Argument(help="A configured device id.")],
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.1, help="How long to listen.")
    ] = 10.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read a serial device live: each reading, each rejected frame with its reason.

    Refuses while the agent holds the port (it is never stolen); nothing is stored and
    nothing acknowledged as stored (the device sends it again to the agent)."""
    _listen(device, seconds, config, as_json, first_only=False)


@devices_app.command("test")
def devices_test(
    device: Annotated[str, typer.Argument(help="A configured device id.")],
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.1, help="How long to wait for a reading.")
    ] = 30.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open the device and wait for one reading (exit 0), or say it did not come (exit 1).

    Like probe: never while the agent holds the port, nothing stored or acknowledged."""
    _listen(device, seconds, config, as_json, first_only=True)


def _listen(device: str, seconds: float, config: Any, as_json: bool, *, first_only: bool) -> None:
    from drivers.registry import driver
    from drivers.transports.serial_port import SerialParams, open_port

    settings = load_settings(config)
    dev = next((d for d in settings.devices if d.id == device), None)
    if dev is None:
        raise ConfigError(
            str(_config_path(config)),
            f"devices {device!r}",
            "no such device",
            "edge-agent devices list shows the configured ids",
        )
    spec = driver(dev.kind)
    if dev.port is None or spec.decoder is None:
        raise typer.BadParameter(
            f"{device} is not a serial device (kind {dev.kind})", param_hint="DEVICE"
        )
    d = spec.serial
    params = SerialParams(
        dev.port,
        dev.baudrate or d.baudrate,
        dev.bytesize or d.bytesize,
        dev.parity or d.parity,
        dev.stopbits or d.stopbits,
    )
    try:
        port = open_port(dev.id, params)
    except DeviceError as exc:
        if "lock" in str(exc).lower():
            raise DeviceError(
                "device.busy",
                dev.id,
                f"{dev.port} is held by the running "
                "agent (or another program). Fix: the agent keeps reading it; to "
                "probe, stop it for a moment (systemctl stop edge-agent; "
                "edge-agent probe ...; systemctl start edge-agent), or see the "
                "agent's reject rate in edge-agent doctor",
            ) from None
        raise
    decoder = spec.decoder(dev.options)
    out: list[dict[str, Any]] = []

    def emit(item: dict[str, Any]) -> None:
        out.append(item)
        if not as_json:
            if item["type"] == "reading":
                typer.echo(f"reading  {item['quantity']} = {item['value']} {item['unit']}")
            elif item["type"] == "rejected":
                typer.echo(f"REJECT   {item['reason']}  raw {item['raw']}")
            else:
                typer.echo(f"bytes    {item['hex']}")

    deadline = time.monotonic() + seconds
    try:
        port.timeout = 0.2
        while time.monotonic() < deadline:
            if first_only and any(item["type"] == "reading" for item in out):
                break
            chunk = port.read(512)
            if chunk and spec.kind not in ("astm", "hl7-mllp"):  # those carry patient data
                emit({"type": "bytes", "hex": chunk.hex(" ")})
            for event in decoder.receive_data(chunk) if chunk else []:
                _probe_event(event, decoder, emit)
            reply = decoder.data_to_send()
            if reply:
                port.write(reply)
    finally:
        port.close()
    if as_json:
        typer.echo(json.dumps({"device": dev.id, "seconds": seconds, "events": out}))
    if not any(item["type"] == "reading" for item in out):
        if first_only and not as_json:
            typer.echo(
                f"no reading from {dev.id} within {seconds:g} s. Fix: switch the "
                "device on and take a measurement; check the cable and "
                f"{dev.port} (edge-agent ports)",
                err=True,
            )
        raise typer.Exit(1)


def _probe_event(event: Any, decoder: Any, emit: Any) -> None:
    from drivers.base import MessageComplete, Rejected
    from edge_agent.models import Measurement

    if isinstance(event, Measurement):
        emit(
            {
                "type": "reading",
                "quantity": event.quantity,
                "value": event.value,
                "unit": event.unit,
            }
        )
    elif isinstance(event, Rejected):
        emit({"type": "rejected", "reason": event.reason, "raw": event.raw[:64].hex(" ")})
    elif isinstance(event, MessageComplete):
        decoder.acknowledge(event.message_id, stored=False)  # the agent will get it again


def bundle(
    out: Annotated[Path, typer.Option("--out", help="The archive to write (.tar.gz).")] = Path(
        "edge-agent-bundle.tar.gz"
    ),
    config: ConfigOption = None,
    log: Annotated[
        Path | None,
        typer.Option(
            "--log", help="A log file to include instead of the journal (journalctl -u edge-agent)."
        ),
    ] = None,
    as_json: JsonOption = False,
    broker_timeout: Annotated[float, typer.Option("--broker-timeout", min=0.5)] = 10,
) -> None:
    """One diagnostics archive for support, without patient data.

    Config without secrets, recent logs, doctor's report, store and device statistics,
    versions."""
    from edge_agent.checks.support_bundle import make_bundle

    members = make_bundle(out, _config_path(config), log=log, broker_timeout=broker_timeout)
    if as_json:
        typer.echo(json.dumps({"bundle": str(out), "members": members}))
    else:
        typer.echo(f"wrote {out}: {', '.join(members)}")


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """What runs: the file, environment overrides, central's remote [sync] change and its
    rotated keys (kept in the store), secrets masked."""
    from edge_agent.checks.config_edit import masked
    from sync.diagnostics import in_effect

    settings = load_settings(config)
    path = Path(settings.store.path)
    file_only = in_effect(settings, None)
    settings, notes = file_only
    if path.exists():
        from edge_agent.errors import EdgeAgentError
        from edge_agent.store.read import reading

        try:
            with reading(path) as db:
                settings, notes = in_effect(settings, db)
        except EdgeAgentError as exc:  # the file's settings, and why not more
            settings, notes = file_only[0], {**file_only[1], "store": str(exc)[:200]}
    data = masked(json.loads(settings.model_dump_json()))
    if as_json:
        typer.echo(json.dumps({**data, "in_effect": notes}))
        return
    import tomlkit

    version = notes["remote_config_version"]
    if version is not None:
        typer.echo(
            f"# [sync] with central's remote config version {version} applied "
            f"({', '.join(notes['remote_sync_keys']) or 'no keys changed'})"
        )
    if notes["central_keys_from"] != "config":
        typer.echo(f"# [trust] central_keys from {notes['central_keys_from']}, not the file")
    typer.echo(tomlkit.dumps(_drop_none(data)).rstrip())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


@config_app.command("validate")
def config_validate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check the config; exit 3 with the field and the fix when it is wrong."""
    settings = load_settings(config)
    path = str(_config_path(config))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "config": path,
                    "valid": True,
                    "unit": settings.unit.id,
                    "devices": len(settings.devices),
                }
            )
        )
    else:
        typer.echo(f"{path}: valid (unit {settings.unit.id}, {len(settings.devices)} devices)")


@devices_app.command("list")
def devices_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The configured devices with their last known state."""
    from edge_agent.checks.doctor import check_devices

    settings = load_settings(config)
    states = {c.name.removeprefix("device "): c for c in check_devices(settings)}
    rows = [
        {
            "id": d.id,
            "kind": d.kind,
            "enabled": d.enabled,
            "where": d.port or d.listen or d.address,
            "status": states[d.id].status,
            "detail": states[d.id].detail,
        }
        for d in settings.devices
    ]
    if as_json:
        typer.echo(json.dumps({"devices": rows}))
        return
    for r in rows:
        typer.echo(f"{r['id']:<16} {r['kind']:<20} {r['where'] or '-':<40} {r['detail']}")


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Option("--id", help="A new device id.")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="Device kind (edge-agent ports shows those matching a plugged-in device).",
        ),
    ],
    port: Annotated[
        str | None, typer.Option("--port", help="Serial port (prefer the /dev/serial/by-id path).")
    ] = None,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT (hl7-mllp).")] = None,
    address: Annotated[str | None, typer.Option("--address", help="BLE address.")] = None,
    baudrate: Annotated[int | None, typer.Option("--baudrate")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", help="KEY=VALUE for the kind's options (repeatable; JSON values)."
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a device to the config: comments kept, validated, written atomically. Restart the
    agent to use it (systemctl restart edge-agent)."""
    from edge_agent.checks.config_edit import add_device, write_atomically

    path = _config_path(config)
    options: dict[str, Any] = {}
    for item in option or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    entry: dict[str, Any] = {
        "id": device_id,
        "kind": kind,
        "port": port,
        "listen": listen,
        "address": address,
        "baudrate": baudrate,
        "options": options or None,
    }
    text = _read_config(path)
    write_atomically(path, add_device(text, entry, str(path)))
    _done(
        as_json,
        {"added": device_id, "config": str(path)},
        f"added {device_id} to {path}; restart the agent to use it",
    )


@devices_app.command("remove")
def devices_remove(
    device_id: Annotated[str, typer.Argument(help="The device id.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a device from the config (its readings stay in the store)."""
    from edge_agent.checks.config_edit import remove_device, write_atomically

    path = _config_path(config)
    write_atomically(path, remove_device(_read_config(path), device_id, str(path)))
    _done(
        as_json,
        {"removed": device_id, "config": str(path)},
        f"removed {device_id} from {path}; restart the agent",
    )


def _read_config(path: Path) -> str:
    load_settings(path)  # the file as it is must be valid first (errors with their fix)
    return path.read_text(encoding="utf-8")


def _done(as_json: bool, body: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(body) if as_json else text)
