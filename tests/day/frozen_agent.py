"""``python -m tests.day.frozen_agent run --config ...``: the real ``edge-agent`` CLI with the
offline freeze put back, for the day's negative control (:mod:`tests.day.van`). Production
code is not changed and reads no variable for it: only this module, which the day starts
instead of ``edge-agent`` when it runs the control.

The freeze (the bug the liveness work fixed): while the link is down, the sync loop keeps a
deadline in the past and returns from its wait without yielding to the event loop, so the
drivers, the console and the heartbeat starve on the loop the sync daemon shares with them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


def install_freeze() -> None:
    from sync.daemon import SyncDaemon

    fixed = SyncDaemon._next
    was_connected: set[int] = set()

    async def frozen_next(self: SyncDaemon, events: asyncio.Queue[Any]) -> Any:
        if self.connected:
            was_connected.add(id(self))
        elif id(self) in was_connected:  # the link was lost
            self._deadlines["linger"] = time.monotonic() - 1.0  # a past deadline, kept
            return None  # and no await: the turn never yields
        return await fixed(self, events)

    SyncDaemon._next = frozen_next  # type: ignore[method-assign]


def main() -> None:
    install_freeze()
    from edge_agent.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
