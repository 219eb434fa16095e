"""The files ``scripts/install`` writes: the systemd unit and the udev rules (pure text).

Run as ``python -m edge_agent.service.unit_files unit|udev [--prefix DIR]`` to print one of them.
Only the standard library and the driver registry are imported, so the installer can run it
before the virtualenv has its dependencies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass

USER = "edge-agent"
PREFIX = "/opt/edge-agent"
CONFIG_DIR = "/etc/edge-agent"
STATE_DIR = "/var/lib/edge-agent"
WATCHDOG_S = 60  # the agent pings every 30 s while its store writer answers

# USB-serial bridges the RS-232 medical devices are usually read through (FTDI, Prolific,
# WCH CH340): a stable name by serial number, whatever the device behind them.
ADAPTERS: tuple[tuple[str, str], ...] = (
    ("0403:6001", "FTDI FT232R"),
    ("0403:6015", "FTDI FT-X"),
    ("067b:2303", "Prolific PL2303"),
    ("1a86:7523", "WCH CH340"),
)


def unit_file(prefix: str = PREFIX) -> str:
    return f"""\
# edge-agent: installed by scripts/install; rewritten by the next install (put local changes
# in a drop-in: systemctl edit edge-agent).
[Unit]
Description=edge-agent: medical devices to central, offline-first
After=network-online.target bluetooth.target time-sync.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={prefix}/venv/bin/edge-agent --log-level info run --config {CONFIG_DIR}/edge-agent.toml
User={USER}
Group={USER}
SupplementaryGroups=dialout bluetooth
Restart=on-failure
RestartSec=5
# READY=1 once the store is open and the drivers started; WATCHDOG=1 only while the store's
# writer answers and the event loop turns: a hung writer is restarted.
TimeoutStartSec=120
WatchdogSec={WATCHDOG_S}
TimeoutStopSec=10
KillMode=mixed
StandardOutput=journal
StandardError=journal
SyslogIdentifier=edge-agent
Environment=PYTHONUNBUFFERED=1
UMask=0077
StateDirectory=edge-agent
StateDirectoryMode=0700
# Hardening: the agent writes only its store; reads its config; opens serial ports.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={STATE_DIR}
ReadOnlyPaths={CONFIG_DIR}
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_BLUETOOTH AF_NETLINK
DevicePolicy=closed
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw
DeviceAllow=char-ttyS rw
# Bluetooth SPP (serial) oximeters bound with rfcomm: /dev/rfcomm*
DeviceAllow=char-rfcomm rw

[Install]
WantedBy=multi-user.target
"""


KEY_DROPIN = "/etc/systemd/system/edge-agent.service.d/store-key.conf"


def key_dropin(key_file: str = f"{CONFIG_DIR}/store.key") -> str:
    """The drop-in that hands the store key to the service as a systemd credential (written by
    scripts/install only when the key file exists: LoadCredential= of a missing file fails the
    start). The service reads $CREDENTIALS_DIRECTORY/store-key (edge_agent.store.key): the key
    file itself can then stay root's, 0600."""
    return f"""\
# edge-agent: the store's encryption key as a credential; written by scripts/install because
# {key_file} exists.
[Service]
LoadCredential=store-key:{key_file}
"""


@dataclass(frozen=True)
class UsbMatch:
    vid_pid: str
    name: str  # the stable name's stem: a device kind, or "serial"
    title: str


def usb_matches() -> list[UsbMatch]:
    """Every VID:PID the agent knows: the device kinds' own (drivers/registry.py), then the
    common USB-serial bridges."""
    from drivers.registry import DRIVERS

    found = [
        UsbMatch(ids, spec.kind, spec.title) for spec in DRIVERS.values() for ids in spec.usb_ids
    ]
    known = {m.vid_pid for m in found}
    found += [UsbMatch(ids, "serial", title) for ids, title in ADAPTERS if ids not in known]
    return found


def udev_rules(matches: Iterable[UsbMatch]) -> str:
    lines = [
        "# edge-agent: stable names for the USB-serial devices it reads, installed by",
        "# scripts/install. /dev/edge-agent/<kind>-<serial number> (or -<USB port> when the",
        "# device has no serial number), group dialout, mode 0660.",
        "# A generic bridge (CP210x, FTDI) matches whatever device uses it: check with",
        "# `edge-agent ports` which one is which.",
        'ACTION=="remove", GOTO="edge_agent_end"',
        'SUBSYSTEM!="tty", GOTO="edge_agent_end"',
    ]
    for m in matches:
        vid, _, pid = m.vid_pid.partition(":")
        match = f'ATTRS{{idVendor}}=="{vid}", ATTRS{{idProduct}}=="{pid}"'
        lines.append(f"# {m.title}")
        lines.append(
            f'{match}, ENV{{ID_SERIAL_SHORT}}=="?*", GROUP="dialout", MODE="0660", '
            f'SYMLINK+="edge-agent/{m.name}-$env{{ID_SERIAL_SHORT}}"'
        )
        lines.append(
            f'{match}, ENV{{ID_SERIAL_SHORT}}!="?*", GROUP="dialout", MODE="0660", '
            f'SYMLINK+="edge-agent/{m.name}-$env{{ID_PATH_TAG}}"'
        )
    lines.append('LABEL="edge_agent_end"')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent.service.unit_files")
    parser.add_argument("what", choices=["unit", "udev", "key-dropin"])
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args(argv)
    if args.what == "key-dropin":
        sys.stdout.write(key_dropin())
        return 0
    sys.stdout.write(unit_file(args.prefix) if args.what == "unit" else udev_rules(usb_matches()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
