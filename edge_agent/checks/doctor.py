"""``edge-agent doctor``: every check a technician runs on site, each failure with its fix.

Each check is a function returning :class:`Check` results; the decisions (thresholds, what a
mode or a date means) are pure functions beside them, so they are tested without a broken
unit. Nothing here prints patient data: devices are named by their configured id, readings
only counted.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.settings import Settings

Status = Literal["ok", "fail", "warn", "skip"]
SERVICE_USER = "edge-agent"
MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_DAYS_LEFT = 14.0
CERT_MARGIN_DAYS = 30
MAX_REJECT_RATE = 0.05
MAX_CLOCK_OFFSET_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


# --- pure decisions ---------------------------------------------------------------------------
def days_until_full(free: int, used: int, first_at: datetime | None, now: datetime) -> float | None:
    """Days until the disk is full at the store's average growth since its first reading
    (None: too young to say, or not growing)."""
    if first_at is None:
        return None
    days = (now - first_at).total_seconds() / 86400
    if days < 1 / 24 or used <= 0:
        return None
    return free / (used / days)


def disk_check(free: int, days_left: float | None) -> Check:
    left = "" if days_left is None else f", about {days_left:.0f} days at this rate"
    detail = f"{free / 2**20:.0f} MiB free{left}"
    if free < MIN_FREE_BYTES or (days_left is not None and days_left < MIN_DAYS_LEFT):
        return Check(
            "disk",
            "fail",
            detail,
            "free space on the store's disk (delete exported "
            "files, old logs: journalctl --vacuum-size=100M) or move the store",
        )
    return Check("disk", "ok", detail)


def mode_check(name: str, path: Path, mode: int) -> Check:
    if mode & 0o077:
        return Check(
            name, "fail", f"{path} is {mode:04o}: readable by other users", f"chmod 600 {path}"
        )
    return Check(name, "ok", f"{path} {mode:04o}")


def cert_expiry_check(name: str, not_after: datetime, now: datetime) -> Check:
    days = (not_after - now).total_seconds() / 86400
    if days < 0:
        return Check(
            name,
            "fail",
            f"expired on {not_after:%Y-%m-%d}",
            "install a new certificate from central's PKI",
        )
    if days < CERT_MARGIN_DAYS:
        return Check(
            name,
            "fail",
            f"expires on {not_after:%Y-%m-%d} ({days:.0f} days)",
            "ask central for a new certificate now (renew within 30 days)",
        )
    return Check(name, "ok", f"valid until {not_after:%Y-%m-%d}")


def reject_rate_check(device: str, state: str | None, readings: int, rejects: int) -> Check:
    total = readings + rejects
    rate = rejects / total if total else 0.0
    detail = f"{state or 'never started'}; {readings} readings, {rejects} rejected"
    if state in ("failed", "crashed"):
        return Check(
            f"device {device}",
            "fail",
            detail,
            "see the agent's log (journalctl -u edge-agent) and the device's config",
        )
    if total >= 20 and rate > MAX_REJECT_RATE:
        return Check(
            f"device {device}",
            "fail",
            f"{detail} ({rate:.0%})",
            "check the serial settings (baudrate, parity) and the cable; "
            "see what is rejected with edge-agent probe " + device,
        )
    return Check(f"device {device}", "ok", detail)


# --- checks with I/O ------------------------------------------------------------------------
def check_store(settings: Settings, now: datetime) -> list[Check]:
    from edge_agent.store.health import health_report, summary
    from edge_agent.store.read import reading
    from edge_agent.store.recovery import marker_path

    path = Path(settings.store.path)
    if not path.exists() and not marker_path(path).exists():
        return [
            Check(
                "store",
                "fail",
                f"no store at {path}",
                "start the agent once (systemctl start edge-agent), or fix [store] path",
            )
        ]
    try:
        report = health_report(path)
    except EdgeAgentError as exc:  # a key that does not open it, a missing binding
        return [
            Check("store", "fail", str(exc).split(" Fix: ")[0], str(exc).partition(" Fix: ")[2])
        ]
    detail, fix = summary(report)
    checks = [
        Check(
            "store",
            "ok" if report["healthy"] else "fail",
            detail,
            "" if report["healthy"] else fix or "see edge-agent db check",
        )
    ]
    if report["check"] == "salvage-pending":
        return checks
    try:
        with reading(path) as db:
            journal = db.execute("PRAGMA journal_mode").fetchone()[0]
            first = db.execute("SELECT min(received_at) FROM readings").fetchone()[0]
    except EdgeAgentError as exc:
        return [*checks, Check("store", "fail", str(exc))]
    checks.append(
        Check(
            "store journal",
            "ok" if journal == "wal" else "fail",
            f"journal_mode={journal}; synchronous=FULL is set by the agent at "
            "open (it refuses to run without)",
            "" if journal == "wal" else "start the agent once: it sets WAL",
        )
    )
    usage = shutil.disk_usage(path.parent)
    used = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    first_at = datetime.fromisoformat(first) if first else None
    if first_at is not None and first_at.tzinfo is None:
        first_at = first_at.replace(tzinfo=UTC)
    checks.append(disk_check(usage.free, days_until_full(usage.free, used, first_at, now)))
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            checks.append(mode_check(f"mode {p.name}", p, stat.S_IMODE(p.stat().st_mode)))
    return checks


def encryption_check(
    encryption: str, kind: str, key_source: str | None, key_mode: int | None
) -> list[Check]:
    """Whether the store is encrypted as configured (``kind``: store_connect.file_kind), and
    the key file's mode."""
    if encryption == "off":
        if kind == "encrypted":
            return [
                Check(
                    "store encryption",
                    "fail",
                    'the store looks encrypted but [store] encryption = "off"',
                    'set encryption = "sqlcipher" and key_file to its key',
                )
            ]
        return [
            Check(
                "store encryption",
                "ok",
                "off: the store is not encrypted at rest "
                '(set [store] encryption = "sqlcipher" to encrypt it)',
            )
        ]
    checks: list[Check] = []
    if key_source is not None and key_mode is not None:
        checks.append(mode_check("store key mode", Path(key_source), key_mode))
    if kind == "plain":
        checks.append(
            Check(
                "store encryption",
                "fail",
                'the store is NOT encrypted (plain SQLite) but [store] encryption = "sqlcipher"',
                "stop the agent, then edge-agent db encrypt",
            )
        )
    else:
        checks.append(
            Check(
                "store encryption",
                "ok",
                f"SQLCipher, key from {key_source}"
                + (" (the store is created at the first run)" if kind == "empty" else ""),
            )
        )
    return checks


def check_encryption(settings: Settings, config: Path) -> list[Check]:
    from edge_agent.store import connect as store_connect
    from edge_agent.store import key as store_key

    path = Path(settings.store.path)
    kind = store_connect.file_kind(path) if path.exists() else "empty"
    if settings.store.encryption == "off":
        return encryption_check("off", kind, None, None)
    try:
        key = store_key.resolve_key(settings.store, str(config))
    except ConfigError as exc:
        return [Check("store encryption", "fail", f"{exc.field}: {exc.problem}", exc.fix)]
    if key is None:  # the binding is missing and the config allows running without
        return [
            Check(
                "store encryption",
                "warn",
                "the SQLCipher binding is missing: the "
                "store runs unencrypted (allow_unencrypted_fallback)",
                store_key.INSTALL_FIX,
            )
        ]
    mode = stat.S_IMODE(os.stat(key.source).st_mode)
    return encryption_check("sqlcipher", kind, key.source, mode)


def check_user() -> list[Check]:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return [
            Check(
                "service user",
                "warn",
                f"no user {SERVICE_USER}: not installed as a service",
                "sudo scripts/install",
            )
        ]
    missing = []
    for group in ("dialout", "bluetooth"):
        try:
            members = grp.getgrnam(group).gr_mem
        except KeyError:
            members = []
        if SERVICE_USER not in members:
            missing.append(group)
    if missing:
        return [
            Check(
                "service user",
                "fail",
                f"{SERVICE_USER} not in {', '.join(missing)}",
                f"usermod -a -G {','.join(missing)} {SERVICE_USER}, then restart",
            )
        ]
    return [Check("service user", "ok", f"{SERVICE_USER} in dialout, bluetooth")]


SERVICE_UNIT = "edge-agent.service"
SERVICE_PROPERTIES = ("LoadState", "UnitFileState", "ActiveState", "SubState")


def service_check(returncode: int | None, stdout: str, stderr: str) -> Check:
    """Installed? enabled? running? from ``systemctl show -p LoadState,UnitFileState,ActiveState,
    SubState edge-agent.service`` (``returncode`` None: no systemctl on this machine)."""
    if returncode is None:
        return Check(
            "service",
            "skip",
            "systemd not available (no systemctl): the agent is not "
            "run as a service on this machine",
        )
    if returncode != 0:
        why = (stderr.strip().splitlines() or ["systemctl failed"])[0][:120]
        return Check("service", "skip", f"systemd not available: {why}")
    props = dict(line.partition("=")[::2] for line in stdout.splitlines() if "=" in line)
    load, enabled = props.get("LoadState", ""), props.get("UnitFileState", "")
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    if load == "not-found" or not load:
        return Check("service", "warn", "not installed as a service", "sudo scripts/install")
    if load == "masked":
        return Check(
            "service",
            "fail",
            "installed but masked: it never starts",
            "systemctl unmask edge-agent && systemctl start edge-agent",
        )
    if load != "loaded":
        return Check(
            "service",
            "fail",
            f"installed but systemd cannot load it ({load})",
            "systemd-analyze verify /etc/systemd/system/edge-agent.service; then "
            "sudo scripts/install again",
        )
    if active == "failed":
        return Check(
            "service",
            "fail",
            f"installed, {enabled or 'unknown'}, failed ({sub})",
            "journalctl -u edge-agent -b says why; then systemctl restart edge-agent",
        )
    if enabled not in ("enabled", "enabled-runtime", "static", "alias", "linked"):
        state = "running" if active == "active" else active
        return Check(
            "service",
            "warn",
            f"installed, not enabled ({enabled or 'unknown'}): it will not start at boot; {state}",
            "systemctl enable edge-agent",
        )
    if active == "active":
        return Check("service", "ok", f"installed, enabled, running ({sub})")
    if active in ("activating", "reloading"):
        return Check(
            "service",
            "warn",
            f"installed, enabled, starting ({sub})",
            "run doctor again in a minute; journalctl -u edge-agent -f",
        )
    return Check(
        "service",
        "warn",
        f"installed, enabled, not running ({active or 'unknown'})",
        "systemctl start edge-agent",
    )


def check_service(which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    systemctl = which("systemctl")
    if systemctl is None:
        return [service_check(None, "", "")]
    try:
        done = subprocess.run(
            [systemctl, "show", "-p", ",".join(SERVICE_PROPERTIES), SERVICE_UNIT],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [service_check(1, "", f"systemctl: {type(exc).__name__}")]
    return [service_check(done.returncode, done.stdout, done.stderr)]


def check_tls(settings: Settings, now: datetime) -> list[Check]:
    broker = settings.broker
    if broker is None or not broker.tls:
        return [Check("tls", "skip", "no TLS configured (offline unit or loopback test)")]
    if broker.ca_file is None or broker.cert_file is None or broker.key_file is None:
        return [
            Check(
                "tls",
                "fail",
                "[broker] tls = true needs ca_file, cert_file, key_file",
                "set the three files in [broker]",
            )
        ]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    checks = []
    try:
        ca = x509.load_pem_x509_certificate(Path(broker.ca_file).read_bytes())
        cert = x509.load_pem_x509_certificate(Path(broker.cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(broker.key_file).read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        return [
            Check(
                "tls",
                "fail",
                f"cannot read the certificates: {str(exc)[:120]}",
                "check [broker] ca_file, cert_file, key_file (PEM, readable by the agent)",
            )
        ]
    checks.append(cert_expiry_check("tls ca", ca.not_valid_after_utc, now))
    checks.append(cert_expiry_check("tls certificate", cert.not_valid_after_utc, now))
    try:
        cert.verify_directly_issued_by(ca)
        checks.append(Check("tls chain", "ok", "the unit's certificate is issued by the CA"))
    except (ValueError, TypeError, Exception) as exc:
        checks.append(
            Check(
                "tls chain",
                "fail",
                f"not issued by ca_file ({type(exc).__name__})",
                "install the certificate central issued with this CA",
            )
        )
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        checks.append(
            Check(
                "tls key",
                "fail",
                "key_file does not match cert_file",
                "install the key the certificate was made for",
            )
        )
    key_path = Path(broker.key_file)
    checks.append(mode_check("tls key mode", key_path, stat.S_IMODE(key_path.stat().st_mode)))
    return checks


def check_console_tls(settings: Settings, now: datetime) -> list[Check]:
    """The LAN console's HTTPS certificate: its SHA-256 fingerprint (for the nurse to compare
    on her tablet), its expiry, its key's mode."""
    c = settings.console
    if not c.enabled or not c.tls:
        return [Check("console tls", "skip", "the console is not served off loopback")]
    from edge_agent.console.tls import INSTALL_FIX, read_certificate

    try:
        info = read_certificate(Path(c.cert_file))
        key_mode = stat.S_IMODE(os.stat(c.key_file).st_mode)
    except (OSError, ValueError) as exc:
        return [
            Check(
                "console tls",
                "fail",
                f"no usable certificate for the console on {c.host}: {str(exc)[:120]}",
                INSTALL_FIX,
            )
        ]
    expiry = cert_expiry_check("console tls", info.not_after, now)
    fix = expiry.fix and "edge-agent console cert --replace (tablets then see a new fingerprint)"
    return [
        Check("console tls", expiry.status, f"SHA-256 {info.fingerprint}, {expiry.detail}", fix),
        mode_check("console tls key mode", Path(c.key_file), key_mode),
    ]


def check_broker(settings: Settings, timeout: float) -> list[Check]:
    if settings.broker is None or not settings.sync.enabled:
        return [Check("broker", "skip", "offline unit: no [broker] (or sync disabled)")]
    from sync.diagnostics import round_trip

    try:
        result = asyncio.run(round_trip(settings, timeout))
    except EdgeAgentError as exc:
        where = f"{settings.broker.host}:{settings.broker.port}"
        return [
            Check(
                "broker",
                "fail",
                f"{where}: {exc}",
                "check the network (mobile data on?), [broker] host/port, and the "
                "certificates; edge-agent sync test says more",
            )
        ]
    return [
        Check(
            "broker",
            "ok",
            f"{result['broker']} round trip {result['round_trip_ms']} ms as {settings.unit.id}",
        )
    ]


def check_clock(
    sync_state: dict[str, Any] | None, clock_state: dict[str, Any] | None = None
) -> list[Check]:
    from edge_agent.clock import system_clock_synchronized

    synced = system_clock_synchronized()
    offset = (sync_state or {}).get("clock_offset_s")
    if isinstance(offset, int | float) and abs(offset) > MAX_CLOCK_OFFSET_S:
        return [
            Check(
                "clock",
                "fail",
                f"{offset:+.1f} s from central",
                "enable NTP (timedatectl set-ntp true) or a GPS time source",
            )
        ]
    clock = clock_state or {}
    if clock.get("disagreement"):
        gps = clock.get("gps_offset_s")
        by = f" by {gps:+.0f} s" if isinstance(gps, int | float) else ""
        return [
            Check(
                "clock",
                "warn",
                f"GPS time disagrees with the {clock.get('source')} "
                f"clock{by} ({clock['disagreement']}): not used",
                "check the GPS receiver's date (week roll-over? a simulator?); readings "
                "keep the system clock",
            )
        ]
    known = f"; {offset:+.2f} s from central" if isinstance(offset, int | float) else ""
    if synced is False:
        return [
            Check(
                "clock",
                "warn",
                "not synchronised (NTP)" + known,
                "timedatectl set-ntp true; offline, central's acks correct the stamps",
            )
        ]
    return [Check("clock", "ok", ("synchronised" if synced else "state unknown") + known)]


def trust_check(keys: int, require_signed: bool, rotated: bool, refused_acks: int) -> Check:
    """``[trust]``: whether the unit checks what central sends (commands, config, acks)."""
    if refused_acks:
        return Check(
            "trust",
            "warn",
            f"{refused_acks} forged or unsigned acks refused: "
            "someone else publishes on this unit's down/ack",
            "check the broker's ACL and who holds central's broker credentials",
        )
    if not keys:
        return Check(
            "trust",
            "warn",
            "no central key: unsigned commands, configuration and "
            "acks are accepted (the broker's ACL is the only guard)",
            "run `edge-agent central keygen` on central and put the printed line in "
            "[trust] central_keys",
        )
    if not require_signed:
        return Check(
            "trust",
            "warn",
            f"{keys} central key(s), but require_signed = false: "
            "unsigned downlink and acks are still accepted",
            "set [trust] require_signed = true once central signs",
        )
    source = "rotated by central (rotate-key)" if rotated else "from [trust]"
    return Check(
        "trust",
        "ok",
        f"{keys} central key(s) {source}: only signed commands, configuration and acks accepted",
    )


def check_trust(settings: Settings, sync: dict[str, Any] | None) -> list[Check]:
    from edge_agent.store.database import get_state
    from edge_agent.store.read import reading
    from sync.signing import Counters, Trust

    counters = Counters({})
    if Path(settings.store.path).exists():
        try:
            with reading(Path(settings.store.path)) as db:
                counters = Counters.from_json(get_state(db, "downlink-trust"))
        except EdgeAgentError:
            pass
    try:
        trust = Trust.in_effect(
            settings.trust.central_keys, settings.trust.require_signed, counters
        )
    except ValueError as exc:  # a rotated key kept in the store that no longer parses
        return [
            Check(
                "trust",
                "fail",
                f"central keys unreadable: {exc}",
                'ask central for a signed trust-reset with keys = "config"',
            )
        ]
    refused = (sync or {}).get("refused_acks")
    return [
        trust_check(
            len(trust.keys),
            settings.trust.require_signed,
            counters.keys is not None,
            refused if isinstance(refused, int) else 0,
        )
    ]


def check_ble(settings: Settings, sys_root: Path = Path("/sys/class/bluetooth")) -> list[Check]:
    from drivers.registry import DRIVERS

    ble = [
        d.id
        for d in settings.devices
        if d.enabled and d.kind in DRIVERS and DRIVERS[d.kind].transport == "ble"
    ]
    if not ble:
        return [Check("bluetooth", "skip", "no Bluetooth devices configured")]
    adapters = sorted(p.name for p in sys_root.glob("hci*")) if sys_root.exists() else []
    bluez = any(
        Path(p).exists()
        for p in (
            "/usr/libexec/bluetooth/bluetoothd",
            "/usr/lib/bluetooth/bluetoothd",
            "/usr/sbin/bluetoothd",
        )
    )
    if not adapters:
        return [
            Check(
                "bluetooth",
                "fail",
                f"no adapter for {', '.join(ble)}",
                "plug in the Bluetooth dongle; rfkill unblock bluetooth",
            )
        ]
    if not bluez:
        return [
            Check("bluetooth", "fail", "BlueZ (bluetoothd) not installed", "apt-get install bluez")
        ]
    return [Check("bluetooth", "ok", f"adapter {', '.join(adapters)}, BlueZ present")]


def check_devices(settings: Settings) -> list[Check]:
    from edge_agent.store.database import get_state
    from edge_agent.store.read import reading

    path = Path(settings.store.path)
    counts: dict[str, tuple[int, int]] = {}
    states: dict[str, Any] = {}
    if path.exists():
        try:
            with reading(path) as db:
                states = get_state(db, "devices") or {}
                for dev, n in db.execute("SELECT device_id, count(*) FROM readings GROUP BY 1"):
                    counts[dev] = (n, 0)
                for dev, n in db.execute("SELECT device_id, count(*) FROM rejects GROUP BY 1"):
                    counts[dev] = (counts.get(dev, (0, 0))[0], n)
        except EdgeAgentError:
            pass
    checks = []
    for dev in settings.devices:
        if not dev.enabled:
            checks.append(Check(f"device {dev.id}", "skip", "disabled in the config"))
            continue
        if dev.port is not None and not Path(dev.port).exists():
            checks.append(
                Check(
                    f"device {dev.id}",
                    "fail",
                    f"{dev.port} is not there",
                    "plug the device in; edge-agent ports lists what is "
                    "connected (use its /dev/serial/by-id path)",
                )
            )
            continue
        state = states.get(dev.id, {}).get("state") if isinstance(states, dict) else None
        readings, rejects = counts.get(dev.id, (0, 0))
        checks.append(reject_rate_check(dev.id, state, readings, rejects))
    return checks


def sync_state(settings: Settings, key: str = "sync") -> dict[str, Any] | None:
    from edge_agent.store.database import get_state
    from edge_agent.store.read import reading

    if not Path(settings.store.path).exists():
        return None
    try:
        with reading(Path(settings.store.path)) as db:
            value = get_state(db, key)
    except EdgeAgentError:
        return None
    return value if isinstance(value, dict) else None


def run(
    config: Path, *, broker_timeout: float = 10.0, now: datetime | None = None
) -> tuple[list[Check], int]:
    """All checks and the exit code: 0 all passed, 1 a check failed, 3 the config is bad."""
    from edge_agent.settings import load
    from edge_agent.store import connect as store_connect

    now = now or datetime.now(UTC)
    try:
        settings = load(config)
    except ConfigError as exc:
        return [Check("config", "fail", f"{exc.file}: {exc.field}: {exc.problem}", exc.fix)], 3
    store_connect.configure(settings.store.path, settings.store, str(config))
    checks = [
        Check("config", "ok", f"{config}: unit {settings.unit.id}, {len(settings.devices)} devices")
    ]
    if os.path.exists(config):
        cmode = stat.S_IMODE(os.stat(config).st_mode)
        if cmode & 0o007:
            checks.append(
                Check(
                    "config mode",
                    "fail",
                    f"{config} is {cmode:04o}: readable by every user",
                    f"chmod 640 {config}",
                )
            )
    checks += check_encryption(settings, config)
    checks += check_store(settings, now)
    checks += check_user()
    checks += check_service()
    checks += check_tls(settings, now)
    checks += check_console_tls(settings, now)
    checks += check_broker(settings, broker_timeout)
    state = sync_state(settings)
    checks += check_trust(settings, state)
    checks += check_clock(state, sync_state(settings, "clock"))
    checks += check_ble(settings)
    checks += check_devices(settings)
    failed = any(c.status == "fail" for c in checks)
    return checks, 1 if failed else 0


def render(checks: list[Check]) -> str:
    marks = {"ok": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}
    lines = []
    for c in checks:
        lines.append(f"{marks[c.status]}  {c.name}: {c.detail}")
        if c.fix and c.status in ("fail", "warn"):
            lines.append(f"      fix: {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append("healthy" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def as_json(checks: list[Check], code: int) -> str:
    return json.dumps(
        {"healthy": code == 0, "exit_code": code, "checks": [asdict(c) for c in checks]}
    )
