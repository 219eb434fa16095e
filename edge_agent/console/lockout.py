"""The console's PIN lockout, per client, with a growing delay: a pure class, clock injected.

The old lockout was one sliding window for everybody: five wrong PINs locked every tablet, and
each try while locked re-armed it, so one wrong PIN every 10 s kept the nurses out for good.
Here:

- each client (its address) has its own count: a wrong PIN elsewhere never locks a nurse;
- ``free_tries`` wrong PINs are allowed, then each further one locks that client for
  ``first_lock_s``, doubling up to ``max_lock_s`` (60 s, 2 min, 4 min ... 15 min);
- a try while locked is refused *without* being counted and without moving the end of the lock,
  even with the right PIN (else the lock would not slow a guesser);
- the right PIN, when not locked, clears the client's count; a client quiet for ``forget_s``
  after its last wrong PIN starts afresh;
- at most ``max_clients`` are remembered (the oldest forgotten first): memory stays bounded.

:meth:`PinLockout.attempt` decides and records in one call with no I/O, so a burst of
concurrent tries (one asyncio loop) cannot slip more than ``free_tries`` past the check.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong"  # counted; the client may try again at once
    WRONG_NOW_LOCKED = "wrong-now-locked"  # counted, and it locked the client
    LOCKED = "locked"  # refused unseen: not counted, the lock's end unchanged


@dataclass(frozen=True)
class PinPolicy:
    free_tries: int = 5
    first_lock_s: float = 60.0
    max_lock_s: float = 900.0
    forget_s: float = 3600.0
    max_clients: int = 1024

    def lock_s(self, failures: int) -> float:
        """How long the ``failures``-th wrong PIN locks its client (0: not at all)."""
        if failures < self.free_tries:
            return 0.0
        doublings = min(failures - self.free_tries, 32)
        return min(self.first_lock_s * 2.0**doublings, self.max_lock_s)


@dataclass
class _Client:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    retry_after_s: int = 0  # whole seconds, rounded up; 0 unless locked

    @property
    def locked(self) -> bool:
        return self.retry_after_s > 0


class PinLockout:
    def __init__(
        self, policy: PinPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or PinPolicy()
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def _state(self, client: str, now: float) -> _Client | None:
        state = self._clients.get(client)
        if (
            state is not None
            and now >= state.locked_until
            and now - state.last_failure >= self.policy.forget_s
        ):
            del self._clients[client]
            return None
        return state

    def retry_after(self, client: str) -> int:
        """Seconds until this client may try a PIN again (0: now)."""
        now = self.clock()
        state = self._state(client, now)
        return _seconds(state.locked_until - now) if state is not None else 0

    def attempt(self, client: str, correct: bool) -> Decision:
        """One PIN try by ``client``; ``correct``: whether it was the right PIN."""
        now = self.clock()
        state = self._state(client, now)
        if state is not None and now < state.locked_until:
            return Decision(Outcome.LOCKED, _seconds(state.locked_until - now))
        if correct:
            self._clients.pop(client, None)
            return Decision(Outcome.ACCEPTED)
        if state is None:
            state = self._clients[client] = _Client()
            while len(self._clients) > self.policy.max_clients:
                self._clients.popitem(last=False)
        self._clients.move_to_end(client)
        state.failures += 1
        state.last_failure = now
        lock = self.policy.lock_s(state.failures)
        if lock <= 0:
            return Decision(Outcome.WRONG)
        state.locked_until = now + lock
        return Decision(Outcome.WRONG_NOW_LOCKED, _seconds(lock))


def _seconds(s: float) -> int:
    return max(0, math.ceil(s))
