"""The morning checklist: is the unit ready? One tile per thing to check, in the nurse's words.

:func:`tiles` decides (pure: facts and a translator in, tiles out); :func:`gather` collects
the facts (the store's health, the disk, device presence, the clock, the link, the agent),
reusing :mod:`edge_agent.checks.doctor`'s checks where they fit. ``edge-agent start``, ``status``
and the web console show the same tiles.

A tile is ``ok`` (green), ``warn`` (amber: the unit works, something to know) or ``fail``
(red: to fix before measuring, always with its fix). Offline is amber: readings are kept and
sent later, so the unit is ready to measure.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from edge_agent.console.present import age_s, hour_minute
from edge_agent.console.queries import UnitView
from edge_agent.i18n import Translator
from edge_agent.service.heartbeat import Liveness
from edge_agent.settings import DeviceSettings, Settings

Status = Literal["ok", "warn", "fail"]
Link = Literal["none", "ok", "offline"]
StoreKeyProblem = Literal["wrong_key", "not_encrypted", "key_missing"]
AgentState = Literal[
    "running",
    "not_running",
    "started_service",
    "started_background",
    "start_failed",
    "not_answering",
    "forbidden",
]
MAX_CLOCK_OFFSET_S: Final = 5.0  # as doctor's clock check
STALE_BACKLOG_S: Final = 86400.0  # a reading unsent for a day: say how to get it out
ACTIVE_STATES: Final = frozenset({"connected", "listening", "waiting", "scanning"})
BROKEN_STATES: Final = frozenset({"failed", "crashed", "misconfigured"})


@dataclass(frozen=True)
class Tile:
    key: str  # stable, for scripts and the page: "store", "device:ox", "link"
    status: Status
    title: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Facts:
    now: datetime
    store_exists: bool = True
    store_healthy: bool = True
    store_key: StoreKeyProblem | None = None  # the store's key does not open it
    disk_full: bool = False
    disk_free: int | None = None
    view: UnitView = field(default_factory=UnitView)
    serial_present: dict[str, bool] = field(default_factory=dict)
    ble_adapter: bool | None = None  # None: no Bluetooth device configured
    ble_broken: bool = False  # the stack is there but a scan failed
    ble_seen: frozenset[str] | None = None  # addresses/names heard; None: not scanned
    listening: dict[str, bool | None] = field(default_factory=dict)  # None: agent stopped
    clock_synced: bool | None = None
    link: Link = "none"
    agent: AgentState = "running"
    agent_log: str = ""
    # What the running agent answered from its event loop (None: not asked; then the store's
    # snapshot says whether it runs). Only an answer makes a device "connected" or "silent".
    answering: bool | None = None
    silent: dict[str, str] = field(default_factory=dict)  # device id -> silent since
    loop: dict[str, Any] | None = None  # the agent's event-loop lag figures

    @property
    def running(self) -> bool:
        return self.view.agent_running if self.answering is None else self.answering


AGENT_BY_LIVENESS: Final[dict[str, AgentState]] = {
    "answering": "running",
    "not_answering": "not_answering",
    "not_running": "not_running",
    "forbidden": "forbidden",
}


def with_liveness(facts: Facts, live: Liveness, started: AgentState | None = None) -> Facts:
    """The facts with what the agent answered (pure). ``started``: what ``start`` did, kept
    unless the agent does not answer; the link is the agent's own when it answers, offline
    when it does not (a snapshot in the store outlives the agent)."""
    answer = live.answer or {}
    agent = AGENT_BY_LIVENESS[live.state]
    if started is not None and live.state not in ("not_answering", "forbidden"):
        agent = started
    devices = answer.get("devices")
    silent = {
        str(k): str(v["silent_since"])
        for k, v in (devices.items() if isinstance(devices, dict) else ())
        if isinstance(v, dict) and v.get("silent_since")
    }
    link = facts.link
    if link != "none":
        sync = answer.get("sync")
        connected = (
            sync.get("connected")
            if isinstance(sync, dict)
            else (facts.view.sync or {}).get("connected")
        )
        link = "ok" if live.answering and connected else "offline"
    loop = answer.get("loop")
    return replace(
        facts,
        agent=agent,
        answering=live.answering,
        silent=silent,
        link=link,
        loop=loop if isinstance(loop, dict) else None,
    )


def transport(dev: DeviceSettings) -> Literal["listener", "serial", "ble", "other"]:
    from drivers.registry import DRIVERS

    spec = DRIVERS.get(dev.kind)
    kind = spec.transport if spec is not None else None
    if dev.listen is not None or (kind == "tcp" and dev.port is None):
        return "listener"
    if dev.port is not None:
        return "serial"
    if kind == "ble":
        return "ble"
    return "other"


def listen_port(dev: DeviceSettings) -> tuple[str, int]:
    from drivers.transports.mllp_tcp import DEFAULT_PORT

    host, _, port = (dev.listen or f"127.0.0.1:{DEFAULT_PORT}").rpartition(":")
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), int(port)


# --- pure decisions ---------------------------------------------------------------------------
def store_key_problem(error_key: str) -> StoreKeyProblem | None:
    """What the nurse is told of a store error raised by opening the store with its key
    (:func:`edge_agent.store.connect.key_problem`); None: not a key problem."""
    if error_key == "store.wrong_key":
        return "wrong_key"
    if error_key == "store.not_encrypted":
        return "not_encrypted"
    return None


def config_tile(tr: Translator, file: str, problem: str) -> Tile:
    return Tile(
        "config",
        "fail",
        tr("check.config"),
        tr("config.bad", problem=problem),
        tr("config.bad.fix", file=file),
    )


def agent_tile(tr: Translator, facts: Facts) -> Tile:
    title = tr("check.agent")
    if facts.agent == "running":
        return Tile("agent", "ok", title, tr("agent.running"))
    if facts.agent == "started_service":
        return Tile("agent", "ok", title, tr("agent.started_service"))
    if facts.agent == "started_background":
        return Tile("agent", "ok", title, tr("agent.started_background", log=facts.agent_log))
    if facts.agent == "start_failed":
        return Tile(
            "agent",
            "fail",
            title,
            tr("agent.start_failed"),
            tr("agent.start_failed.fix", log=facts.agent_log),
        )
    if facts.agent == "not_answering":
        return Tile(
            "agent", "fail", title, tr("agent.not_answering"), tr("agent.not_answering.fix")
        )
    if facts.agent == "forbidden":
        return Tile("agent", "warn", title, tr("agent.forbidden"), tr("agent.forbidden.fix"))
    return Tile("agent", "fail", title, tr("agent.not_running"), tr("agent.not_running.fix"))


def store_tile(tr: Translator, facts: Facts) -> Tile:
    title = tr("check.store")
    if facts.store_key == "wrong_key":
        return Tile("store", "fail", title, tr("store.wrong_key"), tr("store.wrong_key.fix"))
    if facts.store_key == "not_encrypted":
        return Tile(
            "store", "fail", title, tr("store.not_encrypted"), tr("store.not_encrypted.fix")
        )
    if facts.store_key == "key_missing":
        return Tile("store", "fail", title, tr("store.key_missing"), tr("store.key_missing.fix"))
    if not facts.store_exists:
        return Tile("store", "warn", title, tr("store.missing"))
    if not facts.store_healthy:
        return Tile("store", "fail", title, tr("store.damaged"), tr("store.damaged.fix"))
    return Tile("store", "ok", title, tr("store.ok"))


def disk_tile(tr: Translator, facts: Facts) -> Tile:
    from edge_agent.checks.doctor import MIN_FREE_BYTES

    title = tr("check.disk")
    if facts.disk_full:
        return Tile("disk", "fail", title, tr("disk.full"), tr("disk.full.fix"))
    if facts.disk_free is None:
        return Tile("disk", "ok", title, "-")
    size = tr.size(facts.disk_free)
    if facts.disk_free < MIN_FREE_BYTES:
        return Tile("disk", "fail", title, tr("disk.low", size=size), tr("disk.low.fix"))
    return Tile("disk", "ok", title, tr("disk.ok", size=size))


def device_tile(tr: Translator, dev: DeviceSettings, facts: Facts) -> Tile:
    key, title = f"device:{dev.id}", tr("check.device", device=dev.id)
    noun = tr.device_noun(dev.kind)
    state = facts.view.device_states.get(dev.id)
    state = state.get("state") if isinstance(state, dict) else None
    running = facts.running
    if running and state in BROKEN_STATES:
        return Tile(key, "fail", title, tr("device.failed"), tr("fix.device_failed"))
    silent = facts.silent.get(dev.id) if running else None
    if silent is not None:
        return Tile(
            key,
            "warn",
            title,
            tr("device.silent", time=hour_minute(silent)),
            tr("fix.device_silent", noun=noun, device=dev.id),
        )
    last = facts.view.last_by_device.get(dev.id)
    ok_detail = (
        tr("device.last", age=tr.age(age_s(last.received_at, facts.now)))
        if last is not None
        else tr("device.ok")
    )
    way = transport(dev)
    if way == "serial":
        if not facts.serial_present.get(dev.id, False):
            return Tile(
                key,
                "fail",
                title,
                tr("device.serial_missing"),
                tr("fix.serial_missing", noun=noun, device=dev.id),
            )
        return Tile(key, "ok", title, ok_detail)
    if way == "listener":
        port = listen_port(dev)[1]
        listening = facts.listening.get(dev.id)
        if listening is None:
            return Tile(key, "ok", title, tr("device.listener_pending", port=port))
        if not listening:
            return Tile(
                key, "fail", title, tr("device.listener_down", port=port), tr("fix.listener_down")
            )
        return Tile(key, "ok", title, tr("device.listener_ready", port=port))
    if way == "ble":
        if running and state in ACTIVE_STATES and state != "scanning":
            return Tile(key, "ok", title, ok_detail)  # the agent holds it: it no longer advertises
        if facts.ble_seen is None or facts.ble_adapter is False or facts.ble_broken:
            return Tile(key, "warn", title, tr("device.ble_not_checked"))
        address = (dev.address or "").lower()
        if address in facts.ble_seen:
            return Tile(key, "ok", title, tr("device.ble_seen"))
        return Tile(
            key,
            "fail",
            title,
            tr("device.ble_not_seen"),
            tr("fix.ble_not_seen", noun=noun, device=dev.id),
        )
    return Tile(key, "ok", title, ok_detail)


def bluetooth_tile(tr: Translator, facts: Facts) -> Tile | None:
    title = tr("check.bluetooth")
    if facts.ble_adapter is None:
        return None
    if not facts.ble_adapter:
        return Tile(
            "bluetooth", "fail", title, tr("bluetooth.missing"), tr("bluetooth.missing.fix")
        )
    if facts.ble_broken:
        return Tile("bluetooth", "fail", title, tr("bluetooth.broken"), tr("bluetooth.broken.fix"))
    return Tile("bluetooth", "ok", title, tr("bluetooth.ok"))


def clock_tile(tr: Translator, facts: Facts) -> Tile:
    title = tr("check.clock")
    offset = (facts.view.sync or {}).get("clock_offset_s")
    if isinstance(offset, int | float) and abs(offset) > MAX_CLOCK_OFFSET_S:
        return Tile(
            "clock", "fail", title, tr("clock.off", seconds=f"{offset:+.0f}"), tr("clock.off.fix")
        )
    if (facts.view.clock or {}).get("disagreement") == "gps":
        # a GPS time that disagrees with a trusted clock is not used: the stamps are right
        return Tile(
            "clock", "warn", title, tr("clock.gps_disagrees"), tr("clock.gps_disagrees.fix")
        )
    if facts.clock_synced is False and not isinstance(offset, int | float):
        return Tile("clock", "warn", title, tr("clock.unknown"), tr("clock.unknown.fix"))
    return Tile("clock", "ok", title, tr("clock.ok"))


def link_tile(tr: Translator, facts: Facts) -> Tile:
    title = tr("check.link")
    if facts.link == "none":
        return Tile("link", "ok", title, tr("link.none"))
    if facts.link == "ok":
        return Tile("link", "ok", title, tr("link.ok"))
    return Tile("link", "warn", title, tr("link.offline"), tr("link.offline.fix"))


def backlog_tile(tr: Translator, facts: Facts) -> Tile:
    title, view = tr("check.backlog"), facts.view
    if view.backlog == 0:
        return Tile("backlog", "ok", title, tr("backlog.none"))
    age = age_s(view.oldest_unsent_at, facts.now)
    detail = tr.plural("backlog.count", view.backlog)
    if age is not None:
        detail += f" ({tr('backlog.oldest', age=tr.age(age))})"
    if age is not None and age > STALE_BACKLOG_S:
        return Tile("backlog", "warn", title, detail, tr("backlog.stale.fix"))
    return Tile("backlog", "ok", title, detail)


def tiles(settings: Settings, facts: Facts, tr: Translator) -> list[Tile]:
    out = [agent_tile(tr, facts), store_tile(tr, facts), disk_tile(tr, facts)]
    out += [device_tile(tr, d, facts) for d in settings.devices if d.enabled]
    bluetooth = bluetooth_tile(tr, facts)
    if bluetooth is not None:
        out.append(bluetooth)
    out += [clock_tile(tr, facts), link_tile(tr, facts), backlog_tile(tr, facts)]
    return out


def summary(tr: Translator, found: list[Tile]) -> str:
    problems = sum(t.status == "fail" for t in found)
    return tr("summary.ready") if not problems else tr.plural("summary.problems", problems)


# --- gathering the facts (I/O) ----------------------------------------------------------------
def _listening(host: str, port: int, wait: float = 0.0) -> bool:
    """Something accepts connections there; ``wait``: keep trying that long (an agent that
    has just started opens its listeners within a moment)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(0.1)  # a listener that is coming up: bounded by the deadline


def ble_scan(seconds: float) -> tuple[frozenset[str] | None, bool]:
    """Addresses and names heard in a short scan (lower case), and whether the stack failed."""
    import asyncio

    from drivers.transports.ble_scan import scan
    from edge_agent.errors import DeviceUnavailable

    try:
        found = asyncio.run(scan(seconds))
    except DeviceUnavailable:
        return None, True
    heard = {r.address.lower() for r in found} | {r.name.lower() for r in found if r.name}
    return frozenset(heard), False


def gather(
    settings: Settings,
    *,
    agent: AgentState | None = None,
    agent_log: str = "",
    ble_seconds: float | None = 3.0,
    probe_broker: float | None = None,
    now: datetime | None = None,
) -> Facts:
    """The facts for :func:`tiles`. ``agent``: what ``start`` did (None: read whether it
    runs); ``ble_seconds``: scan for Bluetooth devices that long (None: skip the scan);
    ``probe_broker``: when the agent is not running, try a broker round trip with this
    timeout (None: offline unless the agent says it is connected)."""
    import shutil

    from edge_agent.checks import doctor
    from edge_agent.clock import system_clock_synchronized
    from edge_agent.console.queries import unit_view
    from edge_agent.errors import ConfigError, EdgeAgentError, StoreError
    from edge_agent.service.heartbeat import ask_any
    from edge_agent.store.disk_status import read_status
    from edge_agent.store.health import health_report

    now = now or datetime.now(UTC)
    path = Path(settings.store.path)
    exists = path.exists()
    healthy, view, full = True, UnitView(), False
    key_problem: StoreKeyProblem | None = None
    if exists:
        try:
            report = health_report(path)
        except StoreError as exc:  # the key does not open it: no check, no view
            key_problem = store_key_problem(exc.key)
            if key_problem is None:
                raise
            report = {"check": "ok", "quarantined": []}
        except ConfigError:  # the key file is missing or unusable (config is loaded)
            key_problem, report = "key_missing", {"check": "ok", "quarantined": []}
        healthy = report["check"] != "damaged" and not report["quarantined"]
        disk = read_status(path)
        full = bool(disk and disk.get("agent_running") and disk.get("disk") == "full")
        if key_problem is None:
            try:
                view = unit_view(path, [d.id for d in settings.devices])
            except EdgeAgentError:
                healthy = False
    try:
        free: int | None = shutil.disk_usage(path.parent if path.parent.exists() else "/").free
    except OSError:
        free = None
    devices = [d for d in settings.devices if d.enabled]
    serial = {
        d.id: Path(d.port).exists()
        for d in devices
        if d.port is not None and transport(d) == "serial"
    }
    live = ask_any(path)  # the agent answers from its event loop, or it is not running
    running = live.answering
    if agent is None or live.state in ("not_answering", "forbidden"):
        agent = AGENT_BY_LIVENESS[live.state]
    listening: dict[str, bool | None] = {}
    for d in devices:
        if transport(d) == "listener":
            just_started = agent in ("started_background", "started_service")
            listening[d.id] = (
                _listening(*listen_port(d), wait=5.0 if just_started else 0.0) if running else None
            )
    ble_devices = [d for d in devices if transport(d) == "ble"]
    adapter: bool | None = None
    seen: frozenset[str] | None = None
    broken = False
    if ble_devices:
        if ble_seconds is not None:
            seen, broken = ble_scan(ble_seconds)
        adapter = True if seen is not None else doctor.check_ble(settings)[0].status != "fail"
    link: Link = "none"
    if settings.broker is not None and settings.sync.enabled:
        link = (
            "ok"
            if with_liveness(Facts(now=now, view=view, link="offline"), live).link == "ok"
            else "offline"
        )
        if not running and probe_broker is not None:
            link = (
                "ok" if doctor.check_broker(settings, probe_broker)[0].status == "ok" else "offline"
            )
    facts = Facts(
        now=now,
        store_exists=exists,
        store_healthy=healthy,
        store_key=key_problem,
        disk_full=full,
        disk_free=free,
        view=view,
        serial_present=serial,
        ble_adapter=adapter,
        ble_broken=broken,
        ble_seen=seen,
        listening=listening,
        clock_synced=system_clock_synchronized(),
        link=link,
        agent=agent,
        agent_log=agent_log,
    )
    live_facts = with_liveness(facts, live, agent)
    return replace(live_facts, link=link)


def as_json(found: list[Tile], code: int, lang: str) -> dict[str, Any]:
    return {
        "ready": code == 0,
        "exit_code": code,
        "lang": lang,
        "tiles": [t.as_dict() for t in found],
    }
