"""The serial transport does not spin while a commit is awaited (issue 13: a full disk burned a
core because the port's level-triggered reader fired on every loop turn)."""

from __future__ import annotations

import asyncio
import time

from drivers.base import DeviceFacts, Rejected
from drivers.protocols.nonin import NoninDecoder
from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from drivers.transports.serial_port import SerialParams, run_serial
from edge_agent.models import Measurement


class BlockedSink:
    """A sink whose commits wait until released, like a store that cannot write."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0
        self.facts: list[DeviceFacts] = []

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None:
        self.calls += 1
        await self.release.wait()

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        pass

    def device_facts(self, device_id: str, facts: DeviceFacts) -> None:
        self.facts.append(facts)


async def test_a_waiting_commit_leaves_the_loop_idle_with_bytes_pending() -> None:
    with PtyDevice(NoninModel(2)) as device:
        sink, stop = BlockedSink(), asyncio.Event()
        task = asyncio.create_task(
            run_serial("ox", SerialParams(device.path), lambda: NoninDecoder(2), sink, stop)
        )
        async with asyncio.timeout(10):
            while sink.calls == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # more bytes arrive while the first commit waits
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        used = time.process_time() - cpu
        assert time.monotonic() - wall >= 1.0
        assert used < 0.3, f"{used:.2f} s of CPU in 1 s while a commit waited"
        sink.release.set()
        stop.set()
        await asyncio.wait_for(task, 5)
