"""`edge-agent start` and `status` against a healthy unit and broken ones (a missing serial
device, a full disk, an unreachable broker, a bad config), in French, Arabic and English:
typer's runner in process, and once as a real subprocess that starts the agent itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from edge_agent.cli import app
from edge_agent.i18n import translator
from edge_agent.models import measurement
from edge_agent.store.disk_status import write_status
from edge_agent.store.writer import Store
from tests.broker import MosquittoBroker, free_port
from tests.console.unit import (
    agent_pid,
    env,
    running_agent,
    stop_pid,
    sync_connected,
    unit_config,
    wait_for,
)

runner = CliRunner()
LANGS = ("fr", "ar", "en")


def make_store(tmp: Path) -> Path:
    with Store(tmp / "unit.db", "mmu-01") as store:
        for value in (97.0, 96.0, 88.0):
            store.append("ox", [measurement("spo2", value)]).result()
    return tmp / "unit.db"


def start(cfg: Path, lang: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(
        app, ["start", "--config", str(cfg), "--lang", lang, "--json", "--no-ble-scan", *extra]
    )
    return result.exit_code, json.loads(result.output)


def tiles(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {t["key"]: t for t in body["tiles"]}


def test_healthy_unit_is_ready_in_each_language(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    with PtyDevice(NoninModel(2, seed=1)) as device:
        cfg = unit_config(tmp_path, device=device.path, broker_port=mosquitto.port)
        store = make_store(tmp_path)
        with running_agent(cfg, store):
            wait_for("the agent's link to central", lambda: sync_connected(store))
            for lang in LANGS:
                tr = translator(lang)
                code, body = start(cfg, lang)
                found = tiles(body)
                assert code == 0, body
                assert body["ready"] and body["lang"] == lang
                assert {t["status"] for k, t in found.items() if k != "clock"} == {"ok"}, found
                assert found["agent"]["detail"] == tr("agent.running")
                assert found["device:ox"]["title"] == tr("check.device", device="ox")
                assert found["link"]["detail"] == tr("link.ok")
                # status: one screen, the device's last reading in the nurse's language
                result = runner.invoke(app, ["status", "--config", str(cfg), "--lang", lang])
                assert result.exit_code == 0, result.output
                assert (
                    tr.quantity("spo2") in result.output
                    or tr.quantity("pulse_rate") in result.output
                )
                assert tr("patient.none") in result.output
                assert tr("link.ok") in result.output
    fr = runner.invoke(app, ["start", "--config", str(cfg), "--check-only", "--lang", "fr"])
    assert "Appareil « ox » : Non branché." in fr.output  # the pty is gone


@pytest.mark.parametrize("lang", LANGS)
def test_missing_serial_device_says_what_to_plug(tmp_path: Path, lang: str) -> None:
    tr = translator(lang)
    cfg = unit_config(tmp_path, device=str(tmp_path / "ttyUSB-gone"))
    make_store(tmp_path)
    code, body = start(cfg, lang, "--check-only")
    assert code == 1 and not body["ready"]
    tile = tiles(body)["device:ox"]
    assert tile["status"] == "fail"
    assert tile["fix"] == tr("fix.serial_missing", noun=tr("device.noun.nonin"), device="ox")
    text = runner.invoke(app, ["status", "--config", str(cfg), "--lang", lang])
    assert text.exit_code == 1 and tile["fix"] in text.output
    assert "Traceback" not in text.output


def test_missing_device_fix_in_plain_words() -> None:
    assert (
        translator("fr")(
            "fix.serial_missing", noun=translator("fr")("device.noun.nonin"), device="ox"
        )
        == "Branchez l'oxymètre « ox » sur l'ordinateur et allumez-le."
    )
    assert (
        translator("fr")("fix.ble_not_seen", noun="le glucomètre", device="g")
        == "Allumez le glucomètre « g » et approchez-le de l'ordinateur."
    )


@pytest.mark.parametrize("lang", LANGS)
def test_full_disk_is_red_with_its_fix(tmp_path: Path, lang: str) -> None:
    tr = translator(lang)
    cfg = unit_config(tmp_path)
    store = make_store(tmp_path)
    # What the running agent writes when the disk fills (its pid: this live process).
    assert write_status(
        store, {"disk": "full", "since": "2026-11-30T08:00:00Z", "buffered": 12, "dropped": 0}
    )
    code, body = start(cfg, lang, "--check-only")
    disk = tiles(body)["disk"]
    assert code == 1
    assert (disk["status"], disk["detail"], disk["fix"]) == (
        "fail",
        tr("disk.full"),
        tr("disk.full.fix"),
    )
    status = runner.invoke(app, ["status", "--config", str(cfg), "--lang", lang, "--json"])
    assert status.exit_code == 1
    assert tiles(json.loads(status.output))["disk"]["status"] == "fail"


@pytest.mark.parametrize("lang", LANGS)
def test_unreachable_broker_is_offline_not_a_failure(tmp_path: Path, lang: str) -> None:
    tr = translator(lang)
    cfg = unit_config(tmp_path, broker_port=free_port())
    make_store(tmp_path)
    code, body = start(cfg, lang, "--check-only")
    link = tiles(body)["link"]
    assert (link["status"], link["detail"]) == ("warn", tr("link.offline"))
    backlog = tiles(body)["backlog"]
    assert backlog["detail"].startswith(tr.plural("backlog.count", 3))
    assert code == 1  # the agent is not running (--check-only); the link alone is amber
    assert {k for k, t in tiles(body).items() if t["status"] == "fail"} == {"agent"}
    if lang == "fr":
        assert link["detail"] == (
            "Hors ligne : les mesures sont gardées et seront envoyées plus tard."
        )


@pytest.mark.parametrize("lang", LANGS)
def test_bad_config_is_one_line_with_the_fix(tmp_path: Path, lang: str) -> None:
    tr = translator(lang)
    cfg = tmp_path / "unit.toml"
    cfg.write_text('[unit]\nid = "MMU 01"\n')
    for command in ("start", "status"):
        result = runner.invoke(app, [command, "--config", str(cfg), "--lang", lang])
        assert result.exit_code == 3
        assert tr("config.bad.fix", file=str(cfg)) in result.output
        assert "Traceback" not in result.output
    code, body = start(cfg, lang)
    assert code == 3 and tiles(body)["config"]["status"] == "fail"


def test_start_as_a_subprocess_starts_the_agent_in_the_background(tmp_path: Path) -> None:
    with PtyDevice(NoninModel(2, seed=1)) as device:
        cfg = unit_config(tmp_path, lang="ar", device=device.path)
        store = tmp_path / "unit.db"
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", "start", "--config", str(cfg), "--no-ble-scan"],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
        pid = agent_pid(store)
        try:
            assert done.returncode == 0, done.stdout + done.stderr
            log = tmp_path / "edge-agent.log"
            assert translator("ar")("agent.started_background", log=log) in done.stdout
            assert "كل شيء جاهز." in done.stdout and done.stderr == ""
            assert pid is not None
            again = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "start",
                    "--config",
                    str(cfg),
                    "--no-ble-scan",
                    "--lang",
                    "en",
                ],
                capture_output=True,
                text=True,
                env=env(),
                timeout=60,
            )
            assert again.returncode == 0 and "Running." in again.stdout
            assert agent_pid(store) == pid  # not a second agent
        finally:
            if pid is not None:
                stop_pid(pid)
