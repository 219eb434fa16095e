"""The PIN lockout: per client, a growing delay, tries while locked not counted.

The decision is :class:`PinLockout` with an injected clock (tables and hypothesis); then over
real HTTP (uvicorn on a LAN-like loopback address, two tablets as two source addresses), a
burst of concurrent wrong PINs from one tablet locks that tablet only, and exactly
``free_tries`` of them were checked."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.console.lockout import Decision, Outcome, PinLockout, PinPolicy
from edge_agent.i18n import translator
from edge_agent.store.writer import Store
from tests.broker import free_port
from tests.console.test_web import Served, session
from tests.console.unit import lan_tls, unit_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_growing_delay_table() -> None:
    policy = PinPolicy()
    assert [policy.lock_s(n) for n in range(1, 12)] == [
        0,
        0,
        0,
        0,
        60,
        120,
        240,
        480,
        900,
        900,
        900,
    ]


def test_five_wrong_then_locked_then_one_more_try_doubles() -> None:
    clock = Clock()
    pins = PinLockout(clock=clock)
    assert [pins.attempt("a", False).outcome for _ in range(4)] == [Outcome.WRONG] * 4
    assert pins.attempt("a", False) == Decision(Outcome.WRONG_NOW_LOCKED, 60)
    clock.now += 59.5
    assert pins.attempt("a", True) == Decision(Outcome.LOCKED, 1)  # even the right PIN
    clock.now += 0.5
    assert pins.attempt("a", False) == Decision(Outcome.WRONG_NOW_LOCKED, 120)
    clock.now += 120
    assert pins.attempt("a", True).outcome is Outcome.ACCEPTED
    assert pins.attempt("a", False).outcome is Outcome.WRONG  # the count starts afresh


def test_one_wrong_pin_every_10_s_keeps_nobody_else_out() -> None:
    """The issue's scenario: a wrong PIN every 10 s for an hour, from one tablet."""
    clock = Clock()
    pins = PinLockout(clock=clock)
    checked = 0
    for _ in range(360):
        decision = pins.attempt("10.0.0.66", False)
        checked += decision.outcome is not Outcome.LOCKED
        assert pins.attempt("10.0.0.12", True).outcome is Outcome.ACCEPTED  # the nurse
        clock.now += 10
    assert checked <= 11  # 5 free, then one per lock: 60 s, 2, 4, 8, 15, 15, ... min


def test_quiet_client_forgotten_and_memory_bounded() -> None:
    clock = Clock()
    pins = PinLockout(PinPolicy(max_clients=100), clock=clock)
    for _ in range(5):
        pins.attempt("a", False)
    clock.now += 3600 + 60
    assert pins.attempt("a", False).outcome is Outcome.WRONG
    for i in range(1000):
        pins.attempt(f"10.0.{i // 256}.{i % 256}", False)
    assert len(pins._clients) == 100


# pauses around the lock's edges (60 s, 120 s), inside and past them, and forgetting (1 h)
pauses = st.one_of(
    st.sampled_from([0.0, 0.5, 10.0, 59.0, 60.0, 61.0, 119.5, 3700.0]), st.floats(0, 400)
)
tries = st.lists(st.tuples(st.sampled_from("abc"), pauses, st.booleans()), max_size=80)


@given(tries)
def test_a_try_while_locked_changes_nothing(events: list[tuple[str, float, bool]]) -> None:
    clock = Clock()
    pins = PinLockout(clock=clock)
    for client, dt, correct in events:
        clock.now += dt
        before = {c: pins.retry_after(c) for c in "abc"}
        state = pins._clients.get(client)
        failures = state.failures if state else 0
        decision = pins.attempt(client, correct)
        if before[client]:
            assert decision == Decision(Outcome.LOCKED, before[client])
            assert {c: pins.retry_after(c) for c in "abc"} == before
            after = pins._clients.get(client)
            assert after is not None and after.failures == failures
        else:
            assert decision.outcome is not Outcome.LOCKED
            assert (decision.outcome is Outcome.ACCEPTED) == correct


@given(tries)
def test_each_client_decided_alone(events: list[tuple[str, float, bool]]) -> None:
    """A client's outcomes are the same whatever the other clients do."""
    clock = Clock()
    together = PinLockout(clock=clock)
    alone: dict[str, tuple[Clock, list[tuple[float, bool]]]] = {c: (Clock(), []) for c in "abc"}
    outcomes: dict[str, list[Decision]] = {c: [] for c in "abc"}
    for client, dt, correct in events:
        clock.now += dt
        alone[client][1].append((clock.now, correct))
        outcomes[client].append(together.attempt(client, correct))
    for client, (own_clock, own_tries) in alone.items():
        own = PinLockout(clock=own_clock)
        seen = []
        for at, correct in own_tries:
            own_clock.now = at
            seen.append(own.attempt(client, correct))
        assert seen == outcomes[client]


def test_concurrent_wrong_pins_lock_only_their_tablet(tmp_path: Path) -> None:
    port = free_port()
    cfg = unit_config(
        tmp_path,
        extra=(
            f'[console]\nenabled = true\nhost = "127.0.0.2"\n'
            f'port = {port}\npin = "4821"\n' + lan_tls(tmp_path)
        ),
    )
    with Store(tmp_path / "unit.db", "mmu-01"):
        pass
    fr = translator("fr")
    a, b = "127.0.0.3", "127.0.0.4"  # two tablets on the LAN
    with Served(cfg) as served:
        forms = {}
        for tablet in (a, b):
            cookies, _, page = session(served, source=tablet)
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
            assert csrf is not None
            forms[tablet] = (cookies, csrf.group(1))

        def login(tablet: str, pin: str) -> tuple[int, str, str | None]:
            cookies, csrf = forms[tablet]
            status, body, headers = served.request(
                "POST", "/login", source=tablet, cookies=cookies, body={"pin": pin, "csrf": csrf}
            )
            return status, body, headers.get("retry-after")

        burst = [a] * 12 + [b] * 3
        start = threading.Barrier(len(burst))

        def wrong(tablet: str) -> tuple[str, int, str]:
            start.wait(30)
            status, body, _ = login(tablet, "0000")
            return tablet, status, body

        with ThreadPoolExecutor(len(burst)) as pool:
            answers = list(pool.map(wrong, burst))
        by_a = sorted(status for tablet, status, _ in answers if tablet == a)
        assert by_a == [401] * 5 + [429] * 7  # exactly five were checked

        def says_locked(body: str) -> bool:
            return any(fr.plural("web.pin_locked", n) in body for n in range(1, 61))

        # four "wrong PIN", then the fifth locks, and the seven others are told how long
        assert sum(says_locked(body) for t, _, body in answers if t == a) == 8
        assert sum(fr("web.pin_wrong") in body for t, _, body in answers if t == a) == 4
        assert [s for t, s, body in answers if t == b] == [401] * 3
        assert all(fr("web.pin_wrong") in body for t, _, body in answers if t == b)
        # The other tablet is not locked out: the right PIN lets it in.
        assert login(b, "4821")[0] == 303
        # The first one is, even with the right PIN, and is told for how long.
        status, body, retry = login(a, "4821")
        assert status == 429 and retry is not None and 0 < int(retry) <= 60
        assert fr.plural("web.pin_locked", int(retry)) in body
        assert fr("web.pin_wrong") not in body
