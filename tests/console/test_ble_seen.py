"""`edge-agent start` searches for the Bluetooth devices (the real bleak, a stand-in BlueZ on
a private D-Bus): a meter that is heard is green, one that is not is red with the fix
"Allumez le glucomètre ... et approchez-le de l'ordinateur", in each language."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.simulators.ble_values import GlucoseMeterRecords
from edge_agent.i18n import translator
from tests.ble_standin import devices
from tests.ble_standin.fake_bluez import FakeBlueZ, PrivateSystemBus
from tests.console.unit import env, unit_config

if shutil.which("dbus-daemon") is None:
    pytest.skip(
        "dbus-daemon is not installed (bash scripts/setup installs it)", allow_module_level=True
    )

HEARD, SILENT = "C0:FF:EE:00:00:02", "C0:FF:EE:00:00:09"


@pytest.fixture(scope="module")
def private_bus() -> Iterator[PrivateSystemBus]:
    with PrivateSystemBus(export_env=False) as bus:
        yield bus


@pytest.mark.parametrize("lang", ["fr", "ar", "en"])
async def test_ble_meter_heard_or_not(
    tmp_path: Path, private_bus: PrivateSystemBus, monkeypatch: pytest.MonkeyPatch, lang: str
) -> None:
    for name, value in private_bus.env.items():
        monkeypatch.setenv(name, value)
    extra = "".join(
        f'[[devices]]\nid = "{dev}"\nkind = "ble-glucose"\naddress = "{addr}"\n'
        for dev, addr in (("gluco", HEARD), ("gluco-2", SILENT))
    )
    cfg = unit_config(tmp_path, lang=lang, extra=extra)
    async with FakeBlueZ() as bluez:
        bluez.add_peripheral(devices.GlucoseMeter(HEARD, GlucoseMeterRecords()))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent",
            "start",
            "--config",
            str(cfg),
            "--check-only",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            env={**env(), **dict(os.environ)},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    tiles = {t["key"]: t for t in json.loads(out)["tiles"]}
    tr = translator(lang)
    assert tiles["device:gluco"]["status"] == "ok"
    assert tiles["device:gluco"]["detail"] == tr("device.ble_seen")
    silent = tiles["device:gluco-2"]
    assert (silent["status"], silent["detail"]) == ("fail", tr("device.ble_not_seen"))
    assert silent["fix"] == tr(
        "fix.ble_not_seen", noun=tr("device.noun.ble-glucose"), device="gluco-2"
    )
    assert tiles["bluetooth"]["status"] == "ok"
    if lang == "fr":
        assert silent["fix"] == (
            "Allumez le glucomètre « gluco-2 » et approchez-le de l'ordinateur."
        )
