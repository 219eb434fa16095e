"""scripts/install in a throwaway root: user and groups, folder modes, the example config kept
once edited, the unit passing `systemd-analyze verify`, udev rules from the driver registry,
idempotence, and an uninstall that keeps the config and the store."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.registry import DRIVERS
from edge_agent.service.unit_files import unit_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"), reason="installs as root (useradd --prefix)"
)


def install(root: Path, *args: str) -> str:
    done = subprocess.run(
        [str(SCRIPT), "--root", str(root), "--skip-venv", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_in_a_throwaway_root_is_complete_idempotent_and_uninstalls(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    out = install(root)
    assert "created user edge-agent" in out
    passwd = (root / "etc/passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("edge-agent:"))
    assert user.endswith(":/var/lib/edge-agent:/usr/sbin/nologin")
    uid = int(user.split(":")[2])
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",")
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert "edge-agent" in groups["dialout"] and "edge-agent" in groups["bluetooth"]

    etc, state = root / "etc/edge-agent", root / "var/lib/edge-agent"
    assert mode(etc) == 0o750 and etc.stat().st_uid == 0
    assert mode(state) == 0o700 and state.stat().st_uid == uid
    config = etc / "edge-agent.toml"
    assert mode(config) == 0o640
    assert config.read_text() == Path("config/edge-agent.example.toml").read_text()

    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == unit_file()
    rules = (root / "etc/udev/rules.d/70-edge-agent.rules").read_text()
    for spec in DRIVERS.values():
        for ids in spec.usb_ids:
            vid, pid = ids.split(":")
            assert f'ATTRS{{idVendor}}=="{vid}", ATTRS{{idProduct}}=="{pid}"' in rules
            assert f"edge-agent/{spec.kind}-" in rules

    # Again, with the config edited and a store present: nothing rewritten, nothing lost.
    config.write_text(config.read_text() + "# edited on site\n")
    (state / "edge-agent.db").write_bytes(b"store")
    unit_time = unit.stat().st_mtime_ns
    again = install(root)
    assert "wrote" not in again and "created" not in again, again
    assert config.read_text().endswith("# edited on site\n")
    assert unit.stat().st_mtime_ns == unit_time
    assert passwd == (root / "etc/passwd").read_text()

    out = install(root, "--uninstall")
    assert "kept" in out
    assert not unit.exists() and not (root / "etc/udev/rules.d/70-edge-agent.rules").exists()
    assert not (root / "opt/edge-agent").exists()
    assert config.read_text().endswith("# edited on site\n")
    assert (state / "edge-agent.db").read_bytes() == b"store"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    # verify resolves the unit's dependencies and its ExecStart inside the root: give it
    # systemd's own units and the executable the virtualenv step would have made.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/edge-agent/venv/bin/edge-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/edge-agent.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = unit_file()
    for line in (
        "Type=notify",
        "WatchdogSec=60",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/edge-agent",
        "User=edge-agent",
        "StandardError=journal",
        "SupplementaryGroups=dialout bluetooth",
        # Bluetooth SPP oximeters are read through /dev/rfcommN
        "DeviceAllow=char-rfcomm rw",
    ):
        assert f"\n{line}\n" in text, line


def test_uninstall_removes_the_store_key_dropin_and_keeps_the_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    key = root / "etc/edge-agent/store.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"k" * 64)
    key.chmod(0o600)
    install(root)
    dropins = root / "etc/systemd/system/edge-agent.service.d"
    assert (dropins / "store-key.conf").read_text().count("LoadCredential=store-key:") == 1

    out = install(root, "--uninstall")
    assert not (dropins / "store-key.conf").exists()
    assert not dropins.exists(), "an empty drop-in folder is left behind"
    assert key.read_bytes() == b"k" * 64  # the key is kept with the store it opens

    # A technician's own drop-in (systemctl edit) is not install's to delete: kept, and said.
    install(root)
    (dropins / "override.conf").write_text("[Service]\nEnvironment=X=1\n")
    out = install(root, "--uninstall")
    assert not (dropins / "store-key.conf").exists()
    assert (dropins / "override.conf").exists()
    assert "kept /etc/systemd/system/edge-agent.service.d" in out


def test_install_makes_the_console_certificate_once_and_keeps_it(tmp_path: Path) -> None:
    """The LAN console is HTTPS only: the installer makes its certificate (key 0600, the
    agent's), and an upgrade keeps it (the tablets know its fingerprint)."""
    from edge_agent.console.tls import read_certificate

    root = tmp_path / "root"
    out = install(root)
    tls = root / "etc/edge-agent/tls"
    cert, key = tls / "console.pem", tls / "console.key"
    first = read_certificate(cert)
    assert f"fingerprint {first.fingerprint}" in out
    passwd = (root / "etc/passwd").read_text()
    uid = int(
        next(line for line in passwd.splitlines() if line.startswith("edge-agent:")).split(":")[2]
    )
    assert mode(key) == 0o600 and key.stat().st_uid == uid
    again = install(root)
    assert read_certificate(cert) == first and "kept" in again
