"""The unit's settings: a TOML file validated by pydantic, with environment overrides.

Environment variables override the file: ``EDGE_AGENT_<SECTION>__<KEY>`` (for example
``EDGE_AGENT_BROKER__HOST=central.example``). Every error names the file, the field and the fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.errors import ConfigError

ENV_PREFIX = "EDGE_AGENT_"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnitSettings(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    language: Literal["fr", "ar", "en"] = "fr"
    # Where a device time without a zone (HL7 without offset, ASTM) is read (IANA name).
    timezone: str = "Africa/Casablanca"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}: use an IANA name such as Africa/Casablanca"
            ) from None
        return name


class PatientSettings(_Model):
    """How patients are identified (`edge-agent patient open ID --system NAME`): the
    identifier systems the programme uses, by the short name the operator types."""

    systems: dict[str, str] = {
        "national-id": "urn:mmu:patient:national-id",  # national identity card number
        "platform": "urn:mmu:patient:platform",  # the telemedicine platform's patient id
        "slip": "urn:mmu:patient:appointment-slip",  # the appointment slip's barcode/QR
    }
    default: str = "national-id"
    practitioner_role: str | None = None  # who runs the encounters, e.g. "nurse"

    @model_validator(mode="after")
    def _default_known(self) -> PatientSettings:
        if self.default not in self.systems:
            raise ValueError(
                f"default {self.default!r} is not one of the systems {sorted(self.systems)}"
            )
        return self


class StoreSettings(_Model):
    path: Path = Path("/var/lib/edge-agent/edge-agent.db")
    group_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    # 0: classic group commit (commit at once, gather what arrives meanwhile). More only helps
    # with many concurrent writers on a slow disk.
    group_wait_ms: Annotated[int, Field(ge=0, le=5_000)] = 0
    # Disk full (docs/store.md "When the disk is full"): stream readings held in memory meanwhile,
    # at most this many readings and KiB; a reserve file freed for the status writes; held
    # readings written back once this much space is free.
    full_buffer_readings: Annotated[int, Field(ge=0, le=10_000_000)] = 20_000
    full_buffer_kib: Annotated[int, Field(ge=0, le=4_194_304)] = 16_384
    reserve_kib: Annotated[int, Field(ge=0, le=1_048_576)] = 256
    resume_free_kib: Annotated[int, Field(ge=0, le=16_777_216)] = 1024
    # Encryption at rest (edge_agent.store.key): "sqlcipher" needs the sqlcipher3 binding
    # (extra "encryption") and a key file (edge-agent db keygen); a systemd credential
    # "store-key" wins over key_file. Without the binding the agent refuses to start, unless
    # allow_unencrypted_fallback (then it runs unencrypted and says so once).
    encryption: Literal["off", "sqlcipher"] = "off"
    key_file: Path = Path("/etc/edge-agent/store.key")
    allow_unencrypted_fallback: bool = False


class BrokerSettings(_Model):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60


class SyncSettings(_Model):
    enabled: bool = True
    # 500: ~36 B a reading compressed, ~18 KB a batch: 2.3 s on a 64 kbit/s uplink, so even
    # max_in_flight batches queued behind each other are acknowledged well within ack_timeout_s
    # (the adaptive size halves after a re-send).
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_in_flight: Annotated[int, Field(ge=1, le=64)] = 4
    uplink_bps: Annotated[int, Field(ge=1000)] | None = None  # cap on sync's uplink, bit/s
    # Live operation: a reading waits up to this long for others to share its message (alerts
    # never wait; a backlog of a full batch leaves at once).
    linger_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    # Retained status: republished on change, at most this often.
    status_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0


class TrustSettings(_Model):
    """Central's public keys: downlink commands and configuration must be signed by one of
    them (sync/signing.py). No keys: unsigned downlink accepted (tests, development)."""

    central_keys: list[str] = []  # "ed25519:<base64>", from `edge-agent central keygen`
    require_signed: bool = True  # only with keys; false: unsigned also accepted (rollout)

    @field_validator("central_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        from edge_agent.public_keys import parse_public_key

        for key in keys:
            parse_public_key(key)
        return keys


class WatchFolderSettings(_Model):
    """A folder a device exports files into (ECG PDF/XML, camera JPEG/PNG, spirometry PDF)."""

    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    path: Path
    kind: Literal["dicom", "ecg", "image", "video", "document"] | None = None  # None: guessed
    # A file is taken once its size and mtime stayed the same this long (still being written).
    settle_s: Annotated[float, Field(ge=0.05, le=600)] = 2.0
    poll_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0


class FilesSettings(_Model):
    """Teleconsultation files (edge_agent/files/attachments.py, sync/files)."""

    # Local copies of files central holds are evicted beyond this; None: no budget.
    budget_mb: Annotated[int, Field(ge=1)] | None = None
    # How files go up: "native" (any broker; the reference receiver serves them) or "emqx"
    # (EMQX's file transfer over MQTT, $file/...: a central that runs EMQX >= 5.3.2).
    mode: Literal["native", "emqx"] = "native"
    dicom: bool = False  # the DICOM C-STORE receiver
    dicom_ae_title: Annotated[str, Field(pattern=r"^[A-Za-z0-9_ .-]{1,16}$")] = "EDGEAGENT"
    # The calling AE titles let in (empty: any); the called AE must be dicom_ae_title.
    dicom_calling_aes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_ .-]{1,16}$")]] = []
    dicom_host: str = "127.0.0.1"  # loopback: open it to the van's network on purpose
    dicom_port: Annotated[int, Field(ge=1, le=65535)] = 11112
    dicom_device: str = "dicom"  # the source device recorded for received instances
    watch: list[WatchFolderSettings] = []


class DeviceSettings(_Model):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    kind: str
    enabled: bool = True
    port: str | None = None  # serial device path
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] | None = None
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    address: str | None = None  # BLE address or name
    listen: str | None = None  # host:port for TCP listeners (MLLP)
    # How far the device's clock is ahead of true time (seconds, or an ISO 8601 duration such
    # as "PT90S" / "-PT2M"), set by the technician: subtracted from the times it reports.
    clock_offset: timedelta = timedelta(0)
    options: dict[str, Any] = {}

    @field_validator("clock_offset")
    @classmethod
    def _sane_offset(cls, value: timedelta) -> timedelta:
        if abs(value) > timedelta(days=3650):
            raise ValueError("must be within 10 years (seconds, or an ISO 8601 duration: PT90S)")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^:]+:\d{1,5}", value):
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:2575")
        return value


class ConsoleSettings(_Model):
    """The nurses' web console (``edge-agent run`` serves it; ``edge-agent console`` alone).
    Loopback only unless ``host`` says otherwise, and then only with a ``pin``."""

    enabled: bool = False  # the example config turns it on; off for configs made in code (tests)
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8470
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")] | None = None
    # Further names the console answers to (a DNS name of the van's router for the unit, a
    # NAT address); the unit's own host names and addresses are always allowed (DNS rebinding).
    allowed_hosts: list[
        Annotated[str, Field(pattern=r"^\[?[A-Za-z0-9][A-Za-z0-9:.-]{0,252}\]?$")]
    ] = []
    # HTTPS on any host but loopback (the PIN must not cross the van's Wi-Fi in clear): made by
    # `edge-agent console cert` (or scripts/install); the key 0600.
    cert_file: str = "/etc/edge-agent/tls/console.pem"
    key_file: str = "/etc/edge-agent/tls/console.key"

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost")

    @property
    def tls(self) -> bool:
        """Served over HTTPS: every bind but loopback (no PIN crosses a network there)."""
        return not self.loopback


class Settings(_Model):
    unit: UnitSettings
    store: StoreSettings = StoreSettings()
    broker: BrokerSettings | None = None
    sync: SyncSettings = SyncSettings()
    trust: TrustSettings = TrustSettings()
    console: ConsoleSettings = ConsoleSettings()
    files: FilesSettings = FilesSettings()
    devices: list[DeviceSettings] = []
    patients: PatientSettings = PatientSettings()

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceSettings]) -> list[DeviceSettings]:
        seen: set[str] = set()
        for d in devices:
            if d.id in seen:
                raise ValueError(f"device id {d.id!r} is used twice; give each device its own id")
            seen.add(d.id)
        return devices

    @field_validator("console")
    @classmethod
    def _lan_needs_pin(cls, console: ConsoleSettings) -> ConsoleSettings:
        if not console.loopback and console.pin is None:
            raise ValueError(
                f"serving the console on {console.host} (beyond this computer) "
                "needs a pin (4 to 12 digits)"
            )
        return console


_FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove this key or check its spelling against "
    "config/edge-agent.example.toml",
    "string_pattern_mismatch": "use lower-case letters, digits and '-' only",
    "literal_error": "use one of the values listed",
}


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The overrides as a nested mapping, and the variable behind each (section, key)."""
    out: dict[str, Any] = {}
    names: dict[tuple[str, str], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = value
        names[(section, key)] = name
    return out, names


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _device_label(data: dict[str, Any], index: int) -> str:
    devices = data.get("devices")
    entry = devices[index] if isinstance(devices, list) and index < len(devices) else None
    dev_id = entry.get("id") if isinstance(entry, dict) else None
    return f"devices[{index}] {dev_id!r}" if isinstance(dev_id, str) else f"devices[{index}]"


def _field(data: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the operator reads it: devices[1] 'ox-2'.port, broker.port."""
    if len(loc) >= 2 and loc[0] == "devices" and isinstance(loc[1], int):
        rest = ".".join(str(p) for p in loc[2:])
        return _device_label(data, loc[1]) + (f".{rest}" if rest else "")
    return ".".join(str(p) for p in loc) or "(top level)"


def _env_variable(loc: tuple[int | str, ...], names: dict[tuple[str, str], str]) -> str | None:
    if len(loc) >= 2 and (str(loc[0]), str(loc[1])) in names:
        return names[(str(loc[0]), str(loc[1]))]
    if len(loc) == 1:  # a whole section the variable made up (or made a list into a table)
        return next((n for (section, _), n in names.items() if section == loc[0]), None)
    return None


def from_mapping(
    data: dict[str, Any],
    source: str,
    *,
    env_names: dict[tuple[str, str], str] | None = None,
    read_files: bool = False,
) -> Settings:
    """Validate ``data`` (read from ``source``); ``env_names``: the environment variables that
    overrode keys, named instead of the file when their value is the one at fault;
    ``read_files``: also read the files device options name (the ASTM test map)."""
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        fix = _FIXES.get(err["type"], "see config/edge-agent.example.toml for this key")
        variable = _env_variable(loc, env_names or {})
        if variable is not None:
            raise ConfigError(
                f"environment variable {variable}",
                _field(data, loc),
                err["msg"],
                f"correct or unset {variable} ({fix})",
            ) from None
        raise ConfigError(source, _field(data, loc), err["msg"], fix) from None
    from edge_agent.checks.device_rules import device_problems

    for index, dev in enumerate(settings.devices):
        for problem in device_problems(dev, read_files=read_files):
            raise ConfigError(
                source,
                f"{_device_label(data, index)}.{problem.field}",
                problem.problem,
                problem.fix,
            )
    return settings


def load(path: Path, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate ``path`` with environment overrides."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            source,
            "(file)",
            "no such file",
            "copy config/edge-agent.example.toml there, or pass --config PATH",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            source,
            "(file)",
            "is a directory, not a config file",
            "pass the TOML file itself, e.g. --config /etc/edge-agent/edge-agent.toml",
        ) from None
    except PermissionError:
        raise ConfigError(
            source,
            "(file)",
            "permission denied",
            "run as the agent's user, or make the file readable to this user",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source,
            "(encoding)",
            f"not UTF-8 text (byte {exc.start})",
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    except OSError as exc:
        raise ConfigError(
            source, "(file)", f"cannot be read: {exc.strerror or exc}", "check the path"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            source, "(syntax)", str(exc), "fix the TOML syntax at that line"
        ) from None
    env, names = _env_overrides(dict(os.environ if environ is None else environ))
    return from_mapping(_merge(data, env), source, env_names=names, read_files=True)
