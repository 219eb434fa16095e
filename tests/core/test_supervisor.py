"""The supervisor: a device whose driver cannot be built fails alone; the others keep running."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from drivers.registry import driver
from drivers.simulators.base import PtyDevice
from edge_agent.service.supervisor import Supervisor
from edge_agent.settings import DeviceSettings, Settings, StoreSettings, UnitSettings
from edge_agent.store.writer import Store


async def test_unbuildable_devices_are_failed_and_the_others_keep_running(
    tmp_path: Path,
) -> None:
    simulator = driver("nonin").simulator
    assert simulator is not None
    test_map = tmp_path / "map.json"
    test_map.write_text(json.dumps({"GLU": {"quantity": "glucose"}}), encoding="utf-8")
    with PtyDevice(simulator({"data_format": 7}, 1)) as sim:
        settings = Settings(
            unit=UnitSettings(id="mmu-test"),
            store=StoreSettings(path=tmp_path / "unit.db"),
            devices=[
                # Settings built in code skip the config checks: the supervisor must cope.
                DeviceSettings(id="mystery", kind="no-such-kind", port="/dev/null"),
                DeviceSettings(
                    id="analyser",
                    kind="astm",
                    port="/dev/null",
                    options={"test_map": str(test_map)},
                ),
                DeviceSettings(id="ox", kind="nonin", port=sim.path, options={"data_format": 7}),
            ],
        )
        test_map.unlink()  # valid when the config was written, gone when the agent starts
        with Store(settings.store.path, settings.unit.id) as store:
            supervisor = Supervisor(settings, store, sync=False)
            stop = asyncio.Event()
            task = asyncio.create_task(supervisor.run(stop))
            try:
                async with asyncio.timeout(20):
                    while (
                        supervisor.sink.devices.get("ox") is None
                        or supervisor.sink.devices["ox"].readings == 0
                    ):
                        assert not task.done(), task.exception()
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)  # no ExceptionGroup
    devices = supervisor.health()["devices"]
    assert devices["mystery"]["state"] == "failed"
    assert "no-such-kind" in devices["mystery"]["detail"]
    assert devices["analyser"]["state"] == "failed"
    assert "test_map" in devices["analyser"]["detail"]
    assert devices["ox"]["readings"] > 0
