"""The store's encryption key: where it comes from, how it is checked, how a new one is made.

``[store] encryption = "sqlcipher"`` encrypts the store at rest with SQLCipher (AES-256 pages,
HMAC per page). The key is 32 random bytes, kept as 64 hex digits in a file:

1. ``$CREDENTIALS_DIRECTORY/store-key`` when it exists (systemd ``LoadCredential=store-key:...``:
   the service reads it from a tmpfs only it can see); it wins over
2. ``[store] key_file`` (default ``/etc/edge-agent/store.key``).

A key file must be owned by the agent's user and readable by nobody else (mode 0600 or 0400):
a looser one is refused with the file's name and the fix. The key is a raw key (``PRAGMA key =
"x'..'"``), not a passphrase: no PBKDF2 on each open (the agent, the CLI and every reader open
the store often), and 256 random bits need no stretching.

When the SQLCipher binding (``sqlcipher3``) is missing, an encrypted store is refused (one line:
what to install, or ``encryption = "off"``), unless ``allow_unencrypted_fallback = true``: then the
store is used unencrypted and a warning is logged once per process.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.settings import StoreSettings

log = logging.getLogger(__name__)

KEY_BYTES = 32
CREDENTIAL = "store-key"
INSTALL_FIX = (
    'install the SQLCipher binding (pip install "edge-agent[encryption]" or pip install '
    'sqlcipher3-binary), or set [store] encryption = "off"'
)


@dataclass(frozen=True)
class StoreKey:
    """A raw 256-bit store key; ``source`` names the file it came from (for messages). The
    key's bytes are never part of its repr."""

    raw: bytes = field(repr=False)
    source: str

    def pragma(self) -> str:
        return f"PRAGMA key = \"x'{self.raw.hex()}'\""


def parse_key(data: bytes) -> bytes | None:
    """64 hex digits (whitespace around them ignored) or exactly 32 raw bytes; else None."""
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    return data if len(data) == KEY_BYTES else None


def mode_problem(mode: int, owner: int, me: int) -> str | None:
    """Why a key file with this mode and owner is refused (None: fine)."""
    if mode & 0o077:
        return f"mode {stat.S_IMODE(mode):04o} lets other users read it"
    if owner != me:
        return f"owned by uid {owner}, not by the agent's user (uid {me})"
    return None


def read_key_file(path: Path, config: str, field_name: str = "store.key_file") -> StoreKey:
    """The key in ``path``, after the ownership and mode checks (ConfigError on any problem)."""
    try:
        st = path.stat()
        problem = mode_problem(st.st_mode, st.st_uid, os.geteuid())
        if problem is not None:
            raise ConfigError(
                config,
                field_name,
                f"key file {path}: {problem}",
                f"chmod 0600 {path} && chown <agent user> {path}",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            config,
            field_name,
            f"no key file at {path}",
            f"edge-agent db keygen --out {path} (a new store), or give the file that holds "
            "this store's key",
        ) from None
    except PermissionError:
        raise ConfigError(
            config,
            field_name,
            f"key file {path}: permission denied",
            "run as the agent's user (the file must be owned by it, mode 0600)",
        ) from None
    except OSError as exc:
        raise ConfigError(
            config, field_name, f"key file {path}: {exc.strerror or exc}", "check the path"
        ) from None
    raw = parse_key(data)
    if raw is None:
        raise ConfigError(
            config,
            field_name,
            f"key file {path}: not a store key (64 hex digits expected)",
            f"give the file made by edge-agent db keygen --out {path}",
        )
    return StoreKey(raw, str(path))


def binding_available() -> bool:
    try:
        import sqlcipher3.dbapi2  # noqa: F401
    except ImportError:
        return False
    return True


_warned: set[str] = set()


def resolve_key(
    settings: StoreSettings, config: str, environ: dict[str, str] | None = None
) -> StoreKey | None:
    """The key the store is opened with (None: unencrypted), or ConfigError with the fix."""
    if settings.encryption == "off":
        return None
    if not binding_available():
        if not settings.allow_unencrypted_fallback:
            raise ConfigError(
                config,
                "store.encryption",
                'encryption = "sqlcipher" but the SQLCipher binding (sqlcipher3) is missing',
                INSTALL_FIX,
            )
        if config not in _warned:
            _warned.add(config)
            log.warning(
                "store: encryption asked for but the SQLCipher binding is missing; "
                "the store is NOT encrypted (allow_unencrypted_fallback = true). Fix: %s",
                INSTALL_FIX,
            )
        return None
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL).exists():
        return read_key_file(Path(creds) / CREDENTIAL, config, "$CREDENTIALS_DIRECTORY/store-key")
    return read_key_file(Path(settings.key_file), config)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_key_file(out: Path) -> None:
    """A new key in ``out`` (created 0600, never overwritten: FileExistsError)."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (new_key().hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
