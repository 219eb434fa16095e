"""Technician commands against real parts: doctor on a healthy unit and on broken ones (a
missing device, an unreachable broker, an expiring or foreign certificate, loose file modes,
a bad config, a nearly full disk), ports, probe on a pty (and refusing the agent's port),
config show/validate, devices add/remove keeping comments."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from drivers.transports.serial_port import SerialParams, open_port
from edge_agent.checks import doctor
from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.settings import load
from edge_agent.store.writer import Store
from tests.broker import MosquittoBroker

runner = CliRunner()
NOW = datetime.now(UTC)


def unit_config(tmp: Path, *, port: int | None, device: str | None, extra: str = "") -> Path:
    text = (
        f'# the van\'s config\n[unit]\nid = "mmu-01"  # our unit\n'
        f'[store]\npath = "{tmp / "unit.db"}"\n'
    )
    if port is not None:
        text += f'[broker]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
    text += extra
    if device is not None:
        text += (
            f'# the oximeter\n[[devices]]\nid = "ox"\nkind = "nonin"\nport = "{device}"\n'
            "options = { data_format = 2 }\n"
        )
    cfg = tmp / "unit.toml"
    cfg.write_text(text)
    cfg.chmod(0o640)
    return cfg


def make_store(tmp: Path) -> None:
    with Store(tmp / "unit.db", "mmu-01") as store:
        for _ in range(5):
            store.append("ox", [measurement("spo2", 97.0)]).result()


def doctor_json(cfg: Path, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = runner.invoke(
        app, ["doctor", "--config", str(cfg), "--json", "--broker-timeout", "3", *extra]
    )
    body = json.loads(result.output)
    return result.exit_code, {c["name"]: c for c in body["checks"]}


def test_doctor_on_a_healthy_unit_then_each_fault(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    with PtyDevice(NoninModel(2, seed=1)) as device:
        cfg = unit_config(tmp_path, port=mosquitto.port, device=device.path)
        make_store(tmp_path)
        code, checks = doctor_json(cfg)
        assert code == 0, checks
        assert checks["store"]["status"] == "ok" and "quick_check ok" in checks["store"]["detail"]
        assert "journal_mode=wal" in checks["store journal"]["detail"]
        assert checks["broker"]["status"] == "ok" and "round trip" in checks["broker"]["detail"]
        assert (
            checks["device ox"]["status"] == "ok" and "5 readings" in checks["device ox"]["detail"]
        )
        assert checks["disk"]["status"] == "ok"

        # The same, as a real subprocess, human-readable.
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "doctor", "-c", str(cfg), "--broker-timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and proc.stdout.rstrip().endswith("healthy"), proc.stdout

        # Loose modes: the store readable by all.
        (tmp_path / "unit.db").chmod(0o644)
        code, checks = doctor_json(cfg)
        assert code == 1
        mode = checks["mode unit.db"]
        assert mode["status"] == "fail" and mode["fix"] == f"chmod 600 {tmp_path / 'unit.db'}"
        (tmp_path / "unit.db").chmod(0o600)

    # The device unplugged (the pty is gone).
    code, checks = doctor_json(cfg)
    assert code == 1 and checks["device ox"]["status"] == "fail"
    assert "edge-agent ports" in checks["device ox"]["fix"]

    # The broker unreachable: a port nothing listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg = unit_config(tmp_path, port=closed, device=None)
    code, checks = doctor_json(cfg)
    assert code == 1 and checks["broker"]["status"] == "fail"
    assert f"127.0.0.1:{closed}" in checks["broker"]["detail"] and checks["broker"]["fix"]


def test_doctor_with_a_bad_config_exits_3_with_the_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "unit.toml"
    cfg.write_text('[unit]\nid = "MMU 01"\n')
    code, checks = doctor_json(cfg)
    assert code == 3
    assert "unit.id" in checks["config"]["detail"] and checks["config"]["fix"]


def _cert(
    subject: str, issuer: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey | None, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .sign(issuer_key or key, hashes.SHA256())
    )
    return cert, key


def _write_tls(folder: Path, unit_days: int, foreign: bool = False) -> str:
    ca, ca_key = _cert("central-ca", None, None, 3650)
    other, other_key = _cert("other-ca", None, None, 3650)
    issuer, issuer_key = (other, other_key) if foreign else (ca, ca_key)
    cert, key = _cert("mmu-01", issuer.subject, issuer_key, unit_days)
    folder.mkdir(exist_ok=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "unit.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "unit.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "unit.key").chmod(0o600)
    return (
        f'[broker]\nhost = "127.0.0.1"\nport = 8883\nca_file = "{folder / "ca.pem"}"\n'
        f'cert_file = "{folder / "unit.pem"}"\nkey_file = "{folder / "unit.key"}"\n'
    )


@pytest.mark.parametrize(
    ("days", "foreign", "failing"),
    [
        (365, False, set()),
        (10, False, {"tls certificate"}),
        (-0, False, {"tls certificate"}),
        (365, True, {"tls chain"}),
    ],
)
def test_doctor_tls_checks(tmp_path: Path, days: int, foreign: bool, failing: set[str]) -> None:
    cfg = unit_config(
        tmp_path, port=None, device=None, extra=_write_tls(tmp_path / "tls", days, foreign)
    )
    checks = {c.name: c for c in doctor.check_tls(load(cfg), NOW)}
    assert {n for n, c in checks.items() if c.status == "fail"} == failing
    for name in failing:
        assert checks[name].fix
    (tmp_path / "tls" / "unit.key").chmod(0o644)
    checks = {c.name: c for c in doctor.check_tls(load(cfg), NOW)}
    assert checks["tls key mode"].status == "fail"


def test_doctor_expiring_certificate_through_the_command(tmp_path: Path) -> None:
    cfg = unit_config(tmp_path, port=None, device=None, extra=_write_tls(tmp_path / "tls", 10))
    make_store(tmp_path)
    result = runner.invoke(app, ["doctor", "-c", str(cfg), "--broker-timeout", "1"])
    assert result.exit_code == 1
    assert "FAIL  tls certificate: expires on" in result.output
    assert "fix: ask central for a new certificate" in result.output


def test_disk_decisions() -> None:
    first = NOW - timedelta(days=10)
    assert doctor.days_until_full(100 * 2**20, 10 * 2**20, first, NOW) == pytest.approx(100)
    assert doctor.days_until_full(10**9, 10**6, None, NOW) is None
    assert doctor.disk_check(10**10, 300).status == "ok"
    assert doctor.disk_check(10**10, 5).status == "fail"  # growing too fast
    full = doctor.disk_check(50 * 2**20, None)  # a nearly full disk
    assert full.status == "fail" and "free space" in full.fix
    assert doctor.reject_rate_check("ox", "connected", 80, 20).status == "fail"
    assert doctor.reject_rate_check("ox", "connected", 99, 1).status == "ok"
    assert doctor.reject_rate_check("ox", "failed", 0, 0).status == "fail"


def test_config_show_masks_secrets_and_validate(tmp_path: Path) -> None:
    from edge_agent.checks.config_edit import masked

    # No key of today's config holds a secret; any that looks like one is masked.
    data = {
        "broker": {"key_passphrase": "hunter2", "host": "h"},
        "devices": [{"options": {"password": "pw", "token": ""}}],
    }
    assert masked(data) == {
        "broker": {"key_passphrase": "********", "host": "h"},
        "devices": [{"options": {"password": "********", "token": ""}}],
    }
    cfg = unit_config(tmp_path, port=None, device="/dev/null")
    shown = runner.invoke(app, ["config", "show", "-c", str(cfg), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["unit"]["id"] == "mmu-01"
    plain = runner.invoke(app, ["config", "show", "-c", str(cfg)])
    assert plain.exit_code == 0 and "[unit]" in plain.output and "[[devices]]" in plain.output
    ok = runner.invoke(app, ["config", "validate", "-c", str(cfg), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["valid"]
    cfg.write_text(cfg.read_text().replace('kind = "nonin"', 'kind = "nonim"'))
    bad = runner.invoke(app, ["config", "validate", "-c", str(cfg)])
    assert bad.exit_code == 3


def test_devices_add_and_remove_keep_comments_and_refuse_invalid(tmp_path: Path) -> None:
    cfg = unit_config(tmp_path, port=None, device="/dev/null")
    cfg.chmod(0o640)
    added = runner.invoke(
        app,
        [
            "devices",
            "add",
            "-c",
            str(cfg),
            "--id",
            "scale-1",
            "--kind",
            "scale",
            "--port",
            "/dev/ttyUSB7",
            "--option",
            'grammar="balance"',
            "--json",
        ],
    )
    assert added.exit_code == 0, added.output
    text = cfg.read_text()
    assert "# the van's config" in text and "# our unit" in text and "# the oximeter" in text
    settings = load(cfg)
    assert [d.id for d in settings.devices] == ["ox", "scale-1"]
    assert settings.devices[1].options == {"grammar": "balance"}
    assert (cfg.stat().st_mode & 0o777) == 0o640  # mode kept through the atomic rename
    listed = runner.invoke(app, ["devices", "list", "-c", str(cfg), "--json"])
    assert [d["id"] for d in json.loads(listed.output)["devices"]] == ["ox", "scale-1"]

    before = cfg.read_text()
    for args in (
        ["--id", "ox", "--kind", "nonin", "--port", "/dev/x"],  # id taken
        ["--id", "bad-1", "--kind", "teleporter", "--port", "/dev/x"],  # no such kind
        ["--id", "bad 2", "--kind", "nonin", "--port", "/dev/x"],
    ):  # bad id
        refused = runner.invoke(app, ["devices", "add", "-c", str(cfg), *args])
        assert refused.exit_code == 3, refused.output
        assert cfg.read_text() == before  # nothing written
    removed = runner.invoke(app, ["devices", "remove", "ox", "-c", str(cfg)])
    assert removed.exit_code == 0
    assert [d.id for d in load(cfg).devices] == ["scale-1"]
    assert "# the van's config" in cfg.read_text()
    assert runner.invoke(app, ["devices", "remove", "ox", "-c", str(cfg)]).exit_code == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unit.toml.")]


def test_ports_lists_as_json() -> None:
    from edge_agent.checks.serial_ports import kinds_for

    result = runner.invoke(app, ["ports", "--json", "-c", "/nonexistent.toml"])
    assert result.exit_code == 0
    assert isinstance(json.loads(result.output)["ports"], list)
    assert kinds_for("10C4:EA60") == ("cms50",)
    assert kinds_for("0403:6001") == ("serial",)
    assert kinds_for(None) == ()


def test_probe_decodes_live_and_refuses_the_agents_port(tmp_path: Path) -> None:
    with PtyDevice(NoninModel(2, seed=5)) as device:
        cfg = unit_config(tmp_path, port=None, device=device.path)
        result = runner.invoke(app, ["probe", "ox", "--seconds", "1.5", "-c", str(cfg), "--json"])
        assert result.exit_code == 0, result.output
        events = json.loads(result.output)["events"]
        readings = [e for e in events if e["type"] == "reading"]
        assert readings and {e["quantity"] for e in readings} >= {"spo2"}
        assert any(e["type"] == "bytes" for e in events)

        held = open_port("ox", SerialParams(device.path))  # as the running agent holds it
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "probe",
                    "ox",
                    "--seconds",
                    "1",
                    "-c",
                    str(cfg),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PYTHONPATH": str(Path.cwd())},
            )
        finally:
            held.close()
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "held by the running agent" in proc.stderr
        assert "systemctl stop edge-agent" in proc.stderr and "Traceback" not in proc.stderr


def test_devices_test_waits_for_one_reading_or_says_what_to_do(tmp_path: Path) -> None:
    with PtyDevice(NoninModel(2, seed=6)) as device:
        cfg = unit_config(tmp_path, port=None, device=device.path)
        result = runner.invoke(
            app, ["devices", "test", "ox", "--seconds", "20", "-c", str(cfg), "--json"]
        )
        assert result.exit_code == 0, result.output
        events = json.loads(result.output)["events"]
        assert [e["type"] for e in events].count("reading") >= 1
    master, slave = os.openpty()  # a port where nothing speaks
    try:
        cfg = unit_config(tmp_path, port=None, device=os.ttyname(slave))
        result = runner.invoke(app, ["devices", "test", "ox", "--seconds", "0.5", "-c", str(cfg)])
        assert result.exit_code == 1
        assert "no reading from ox within 0.5 s" in result.output
    finally:
        os.close(master)
        os.close(slave)
