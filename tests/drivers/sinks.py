"""The sinks driver tests hand to transports: one that records (no store), one over a real store
that counts commits. Both can be waited on (an event with a deadline, never a sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.base import DeviceFacts, Rejected
from edge_agent.models import Measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.writer import Store


async def _until(changed: asyncio.Event, predicate: Callable[[], object], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            changed.clear()
            await changed.wait()


class RecordingSink:
    """A drivers.base.Sink that keeps what it is given, in order, and can be waited on.

    ``fail_commits``: that many next commits raise (a disk I/O error), then commits succeed.
    ``device_id``: when given, the only device this sink accepts (a transport must pass its
    own device's id)."""

    def __init__(self, fail_commits: int = 0, *, device_id: str | None = None) -> None:
        self.measurements: list[Measurement] = []
        self.rejects: list[Rejected] = []
        self.statuses: list[tuple[str, str]] = []  # (state, detail), in order
        self.log: list[str] = []  # "store 50", "store 3 cursor 53": the commits, in order
        self.cursors: dict[str, int] = {}  # committed with the readings, as the store does
        self.facts: list[DeviceFacts] = []
        self.fail_commits = fail_commits
        self.device_id = device_id
        self.changed = asyncio.Event()

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None:
        assert self.device_id in (None, device_id), device_id
        if self.fail_commits:
            self.fail_commits -= 1
            self.log.append("store failed")
            self.changed.set()
            raise OSError("disk I/O error")
        self.measurements += measurements
        self.rejects += rejects
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        self.log.append(
            f"store {len(measurements)}" + (f" cursor {cursor[1]}" if cursor is not None else "")
        )
        self.changed.set()

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        self.statuses.append((state, detail))
        self.changed.set()

    def device_facts(self, device_id: str, facts: DeviceFacts) -> None:
        self.facts.append(facts)

    @property
    def states(self) -> list[str]:
        """The states reported, in order, without their details."""
        return [state for state, _ in self.statuses]

    def values(self, quantity: str) -> list[float | None]:
        return [m.value for m in self.measurements if m.quantity == quantity]

    async def until(self, predicate: Callable[[], object], timeout: float = 10) -> None:
        await _until(self.changed, predicate, timeout)


class WatchedSink(StoreSink):
    """The agent's sink over a real store; tests wait on its commits."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.commits = 0
        self.changed = asyncio.Event()

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None:
        try:
            await super().store(
                device_id, measurements, rejects, cursor=cursor, may_buffer=may_buffer
            )
            self.commits += 1
        finally:
            self.changed.set()

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        super().device_status(device_id, state, detail)
        self.changed.set()

    async def until(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        await _until(self.changed, predicate, timeout)
