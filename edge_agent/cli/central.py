"""``edge-agent central``: central's side of downlink trust (keys, signed messages)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from sync.signing import Signer

app = typer.Typer(no_args_is_help=True)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write central's private key "
                                      "(PEM, created 0600; refuses to overwrite).")],
) -> None:
    """Make central's signing key; prints the public key line for the units' config."""
    from sync.signing import new_private_key_pem

    pem, public = new_private_key_pem()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(str(out), "(file)", "already exists",
                          "choose another --out (a new key for rotation), or move it away"
                          ) from None
    except OSError as exc:
        raise ConfigError(str(out), "(file)", f"cannot be written: {exc.strerror}",
                          "choose a writable --out") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    typer.echo(f"private key: {out} (keep it on central only)")
    typer.echo("add to each unit's config (several keys may be listed while rotating):")
    typer.echo(f'[trust]\ncentral_keys = ["{public}"]')


def load_signer(key: Path, ttl_s: float = 3600.0) -> Signer:
    from sync.signing import Signer

    try:
        return Signer.from_pem(key.read_bytes(), ttl_s)
    except OSError as exc:
        raise ConfigError(str(key), "(file)", f"cannot be read: {exc.strerror}",
                          "pass the key made by `edge-agent central keygen`") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(key), "(key)", str(exc).split("\n")[0],
                          "pass the key made by `edge-agent central keygen`") from None


@app.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Central's private key (central keygen).")],
    unit: Annotated[str, typer.Option("--unit", help="The unit the message is for.")],
    topic: Annotated[str, typer.Option("--topic", help="cmd or config.")],
    body: Annotated[str, typer.Argument(help='The message, JSON: {"id": "1", "cmd": '
                                        '"sync-now"} or {"version": 2, "sync": {...}}.')],
    ttl: Annotated[float, typer.Option("--ttl", min=1, help="Seconds it stays valid.")] = 3600,
) -> None:
    """Print a signed downlink message (publish it on mmu/v1/UNIT/down/TOPIC)."""
    if topic not in ("cmd", "config"):
        raise typer.BadParameter("use cmd or config", param_hint="--topic")
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="BODY") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("a JSON object", param_hint="BODY")
    signer = load_signer(key, ttl)
    typer.echo(signer.sign(unit, topic, parsed).decode())
