"""A van's day, compressed (``scripts/day``): the real agent on its equipment, a link that
comes and goes, nurses on the console, figures beside their baselines, and an external witness
of every reading.

- The agent is ``edge-agent run`` (a subprocess; :mod:`tests.day.frozen_agent` for the
  negative control) with its console on, six devices and a watched drop folder: a Nonin
  (format 7) and a CMS50 streaming on ptys at their real rates, an ASTM analyser, a scale and
  the GPS on ptys (``PtyDevice``: it keeps every byte it sent), an HL7 monitor over MLLP
  (:class:`tests.faults.witness.Monitor`: it writes what it sent and what was acknowledged),
  and now and then a file in the drop folder.
- The link: a real Mosquitto on a free port, the reference receiver (``edge-agent receive``)
  beside it, and between the agent and the broker a TCP fault proxy
  (:mod:`tests.faultproxy`). The day (:func:`schedule`): online, the link down a long while
  (connections reset and refused), online, flapping, the broker restarted, online, a
  half-open blackhole (only the keepalive can tell), online; then the devices stop and the
  backlog drains.
- Nurses: a console session (cookie and CSRF token as a browser gets them) polls ``/live``
  every second and opens a patient, gives readings to them and closes, all day long.
- Figures (:mod:`tests.day.figures`), offline beside online: readings stored per second by
  the streaming devices, event-loop lag (the agent's heartbeat, ``ask_any``), ``/live``
  latency, the agent's CPU (``/proc/PID/stat``), seconds from a link loss to the console and
  ``edge-agent status`` saying offline, seconds from the link's return until what was stored
  before it is acknowledged.
- The check: the bytes each pty device sent are decoded again with the agent's own decoder
  and compared with the unit's store, device by device (nothing missing, nothing extra); the
  HL7 monitor's acknowledged readings must be at central (``tests.faults.checker``); every
  reading of the unit at central exactly once, seqs contiguous; every dropped file in
  central's object store by its sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from drivers.base import MessageComplete
from drivers.registry import driver
from drivers.simulators.base import PtyDevice
from edge_agent.models import Measurement
from edge_agent.service.demo import DEMO_TEST_MAP
from edge_agent.service.heartbeat import ask_any
from tests.broker import MosquittoBroker, free_port
from tests.day import figures
from tests.day.figures import DayFigures, Link, Sample, Window, Witnessed
from tests.faultproxy import FaultProxy
from tests.faults import checker
from tests.faults.chaos import central_rows, unit_rows
from tests.faults.witness import Monitor, Witness, read_witness

ROOT: Final = Path(__file__).resolve().parents[2]
UNIT: Final = "mmu-day"
MONITOR: Final = "monitor-hl7"
DROP_DEVICE: Final = "ecg-drop"
STREAMING: Final = ("oximeter-nonin", "oximeter-cms50")  # fixed rates: the offline figure
# (device id, kind, options) of the pty devices
PTY_DEVICES: Final[tuple[tuple[str, str, dict[str, Any]], ...]] = (
    ("oximeter-nonin", "nonin", {"data_format": 7}),
    ("oximeter-cms50", "cms50", {}),
    ("analyser-astm", "astm", {"test_map": "astm-test-map.json"}),
    ("scale", "scale", {}),
    ("gps", "nmea", {}),
)
NEGATIVES: Final = ("freeze",)
POLL_S: Final = 1.0  # the console's and the heartbeat's sampling period
HTTP_TIMEOUT_S: Final = 5.0
RECONNECT_WAIT_S: Final = 90.0  # beyond the link's reconnect backoff cap (60 s)


@dataclass(frozen=True)
class Phase:
    name: str  # online, link-down, flap-down, flap-up, broker-restart, blackhole
    link: Link
    seconds: float

    @property
    def loss(self) -> bool:
        """A long link loss whose detection is measured (flaps are too short to tell)."""
        return self.name in ("link-down", "broker-restart", "blackhole")


FAULTS: Final = ("link-down", "flap", "broker-restart", "blackhole")


def schedule(total_s: float, faults: tuple[str, ...] = FAULTS) -> list[Phase]:
    """The day: each stretch a share of ``total_s``, with a floor so that the short day still
    has every fault (the blackhole lasts beyond the keepalive's 1.5 x 5 s). ``faults``: the
    ones to play (the others and the online stretch after them are left out)."""

    def part(share: float, floor: float) -> float:
        return max(floor, share * total_s)

    flap_total = part(0.12, 6.0)
    cycle = max(3.0, min(20.0, total_s / 60))  # one flap: down a third, up two thirds
    flaps: list[Phase] = []
    spent = 0.0
    while spent + cycle <= flap_total + 1e-9:
        flaps += [
            Phase("flap-down", "offline", cycle / 3),
            Phase("flap-up", "online", 2 * cycle / 3),
        ]
        spent += cycle
    chosen = [Phase("online", "online", part(0.08, 3.0))]
    if "link-down" in faults:
        chosen += [
            Phase("link-down", "offline", part(0.22, 8.0)),
            Phase("online", "online", part(0.08, 3.0)),
        ]
    if "flap" in faults:
        chosen += flaps
    if "broker-restart" in faults:
        chosen += [
            Phase("broker-restart", "offline", part(0.08, 3.0)),
            Phase("online", "online", part(0.08, 3.0)),
        ]
    if "blackhole" in faults:
        chosen += [Phase("blackhole", "offline", part(0.20, 10.0))]
    return [*chosen, Phase("online", "online", part(0.14, 3.0))]


@dataclass
class DayConfig:
    minutes: float = 20.0
    negative: str | None = None
    keepalive_s: int = 5
    seed: int = 0
    drain_timeout: float = 120.0
    hl7_gap: float = 1.0  # seconds between the monitor's messages
    files_every: float = 0.0  # seconds between dropped files (0: about 8 in the day)
    faults: tuple[str, ...] = FAULTS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (``/proc/PID/stat``), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def store_counts(path: Path) -> tuple[int, int]:
    """(readings of the streaming devices, highest seq); zeros before the store exists."""
    if not path.exists():
        return 0, 0
    marks = ", ".join("?" for _ in STREAMING)
    try:
        with read_only(path) as conn:
            streaming = conn.execute(
                f"SELECT count(*) FROM readings WHERE device_id IN ({marks})", STREAMING
            ).fetchone()[0]
            top = conn.execute("SELECT coalesce(max(seq), 0) FROM readings").fetchone()[0]
    except sqlite3.Error:
        return 0, 0
    return int(streaming), int(top)


def unsent_up_to(path: Path, seq: int) -> int | None:
    try:
        with read_only(path) as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM readings WHERE sent_at IS NULL AND seq <= ?", [seq]
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return None


class ProxyThread:
    """The fault proxy on its own event loop, switched from the day's thread."""

    def __init__(self, upstream_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = FaultProxy(upstream_port)
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy", daemon=True)

    def start(self) -> int:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self.proxy.port

    def set_mode(self, mode: str) -> None:
        self.loop.call_soon_threadsafe(self.proxy.set_mode, mode)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class Process:
    """A subprocess in its own session, stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=subprocess_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # a frozen agent does not stop on SIGTERM either
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Nurse(threading.Thread):
    """A tablet on the console: polls ``/live`` every second, opens a patient, gives them
    readings, closes; notes how long each poll took and when the link tile said offline."""

    def __init__(self, port: int, day: Day) -> None:
        super().__init__(name="nurse", daemon=True)
        self.port, self.day = port, day
        self.host = f"127.0.0.1:{port}"
        self.cookie = ""
        self.csrf = ""
        self.actions: dict[str, int] = {}
        self.polls = 0
        self.patients = 0

    def _request(
        self, method: str, path: str, body: str | None = None
    ) -> tuple[int, str, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            headers = {"Host": self.host}
            if self.cookie:
                headers["Cookie"] = self.cookie
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace"), response
        finally:
            conn.close()

    def log_in(self) -> bool:
        try:
            status, page, response = self._request("GET", "/")
        except OSError:
            return False
        sid = re.search(r"sid=([^;]+)", response.getheader("set-cookie") or "")
        token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
        if status != 200 or sid is None or token is None:
            return False
        self.cookie, self.csrf = f"sid={sid.group(1)}", token.group(1)
        return True

    def act(self, what: str, **form: Any) -> None:
        pairs: list[tuple[str, str]] = []
        for key, value in form.items():
            pairs += [(key, v) for v in value] if isinstance(value, list) else [(key, value)]
        try:
            status, _, _ = self._request(
                "POST", f"/patient/{what}", urlencode([*pairs, ("csrf", self.csrf)])
            )
        except OSError:
            status = 0
        key = f"{what} {'ok' if status == 200 else status or 'timeout'}"
        self.actions[key] = self.actions.get(key, 0) + 1

    def run(self) -> None:
        day = self.day
        while not self.log_in():
            if day.done.wait(0.2):
                return
        step = 0
        while not day.done.is_set():
            started = time.monotonic()
            try:
                status, live, _ = self._request("GET", "/live")
            except OSError:  # a timeout: the console did not answer (a frozen loop)
                status, live = 0, ""
            took = time.monotonic() - started
            self.polls += 1
            day.live_samples.append(Sample(day.link, (took if status else HTTP_TIMEOUT_S) * 1000))
            tile = re.search(r'data-key="link" data-status="(\w+)"', live)
            if tile is not None and tile.group(1) != "ok":
                day.saw_offline("console")
            step += 1
            if step % 4 == 0 and not day.closing.is_set():
                self._nurse_step(step // 4, live)
            day.done.wait(max(0.0, POLL_S - (time.monotonic() - started)))

    def _nurse_step(self, n: int, live: str) -> None:
        """open, assign, assign, close: a patient every four steps."""
        if n % 4 == 1:
            self.patients += 1
            # a simulated patient's identifier (no real person)
            self.act("open", identifier=f"DAY-{self.patients:06d}", system="platform")
        elif n % 4 in (2, 3):
            ids = re.findall(r'name="reading" value="([^"]+)"', live)[:3]
            self.act("assign", reading=ids)
        else:
            self.act("close")


class StatusWatcher(threading.Thread):
    """After each link loss: ``edge-agent status --json`` again and again until its link tile
    says offline (or the loss ends)."""

    def __init__(self, config: Path, day: Day) -> None:
        super().__init__(name="status", daemon=True)
        self.config, self.day = config, day
        self.wanted = threading.Event()
        self.runs = 0

    def run(self) -> None:
        day = self.day
        while not day.done.is_set():
            if not self.wanted.wait(0.2):
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "status",
                    "--json",
                    "--lang",
                    "en",
                    "--config",
                    str(self.config),
                ],
                cwd=ROOT,
                env=subprocess_env(),
                capture_output=True,
                timeout=60,
                check=False,
            )
            self.runs += 1
            with contextlib.suppress(ValueError):
                tiles = json.loads(out.stdout).get("tiles", [])
                link = next((t for t in tiles if t.get("key") == "link"), None)
                if link is not None and link.get("status") != "ok":
                    day.saw_offline("status")


class Heart(threading.Thread):
    """The agent's heartbeat every second: its loop lag now (or a frozen loop)."""

    def __init__(self, store: Path, day: Day) -> None:
        super().__init__(name="heart", daemon=True)
        self.store, self.day = store, day
        self.last: dict[str, Any] | None = None

    def run(self) -> None:
        day = self.day
        while not day.done.is_set():
            started = time.monotonic()
            live = ask_any(self.store)
            loop = (live.answer or {}).get("loop")
            sync = (live.answer or {}).get("sync")
            day.connected = bool(
                live.answering and isinstance(sync, dict) and sync.get("connected")
            )
            if day.connected and day.returned_at is not None:
                day.reconnects.append(time.monotonic() - day.returned_at)
                day.returned_at = None
            if live.answering and isinstance(loop, dict):
                self.last = loop
                day.lag_samples.append(Sample(day.link, float(loop.get("lag_ms", 0.0))))
            elif day.agent_started:
                day.lag_samples.append(Sample(day.link, figures.NOT_ANSWERING_MS))
            day.done.wait(max(0.0, POLL_S - (time.monotonic() - started)))


@dataclass
class Loss:
    at: float
    console: float | None = None
    status: float | None = None


@dataclass
class Day:
    """What the day's threads record (appends and assignments only: no lock needed)."""

    link: Link = "online"
    agent_started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)  # the nurses stop
    connected: bool = False  # the agent's own word (its heartbeat)
    returned_at: float | None = None  # the link came back, the agent not reconnected yet
    reconnects: list[float] = field(default_factory=list)
    lag_samples: list[Sample] = field(default_factory=list)
    live_samples: list[Sample] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    current: Loss | None = None  # the long link loss under way

    def saw_offline(self, who: str) -> None:
        loss = self.current
        if loss is not None and getattr(loss, who) is None:
            setattr(loss, who, time.monotonic() - loss.at)


class VanDay:
    def __init__(self, cfg: DayConfig, workdir: Path) -> None:
        if cfg.negative is not None and cfg.negative not in NEGATIVES:
            raise ValueError(f"negative control {cfg.negative!r}: use one of {NEGATIVES}")
        self.cfg, self.workdir = cfg, workdir
        self.day = Day()
        self.phases = schedule(cfg.minutes * 60, cfg.faults)
        (workdir / "broker").mkdir(exist_ok=True)
        self.broker = MosquittoBroker(workdir / "broker", extra_config="autosave_interval 1")
        self.proxy = ProxyThread(self.broker.port)
        self.store = workdir / "unit.db"
        self.central = workdir / "central.db"
        self.central_files = workdir / "central.files"
        self.drop = workdir / "drop"
        self.drop.mkdir(exist_ok=True)
        self.mllp_port, self.console_port = free_port(), free_port()
        self.sims: dict[str, PtyDevice] = {}
        self.kinds: dict[str, tuple[str, dict[str, Any]]] = {}
        self.witness = Witness(workdir / "witness.jsonl")
        self.stop_new, self.abort = threading.Event(), threading.Event()
        self.monitor = Monitor(
            0,
            self.mllp_port,
            self.witness,
            seed=cfg.seed,
            gap=cfg.hl7_gap,
            ack_timeout=3.0,
            stop_new=self.stop_new,
            abort=self.abort,
        )
        self.dropped: list[str] = []  # sha256 of each file dropped
        self.windows: list[Window] = []
        self.drains: list[float] = []
        self.agent: Process | None = None
        self.receiver = Process(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "receive",
                "--broker",
                f"127.0.0.1:{self.broker.port}",
                "--db",
                str(self.central),
                "--client-id",
                "receiver-day",
                "--files-dir",
                str(self.central_files),
            ],
            workdir / "receiver.log",
        )

    # --- set-up -----------------------------------------------------------------------------
    def _config(self, proxy_port: int) -> Path:
        test_map = self.workdir / "astm-test-map.json"
        test_map.write_text(json.dumps(DEMO_TEST_MAP), encoding="utf-8")
        text = (
            f'[unit]\nid = "{UNIT}"\nlanguage = "en"\n'
            f'[store]\npath = "{self.store}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {proxy_port}\ntls = false\n'
            f"keepalive_s = {self.cfg.keepalive_s}\n"
            "[sync]\nack_timeout_s = 5.0\n"
            f"[console]\nenabled = true\nport = {self.console_port}\n"
            f'[[files.watch]]\ndevice = "{DROP_DEVICE}"\npath = "{self.drop}"\n'
            'kind = "document"\nsettle_s = 0.5\npoll_s = 0.5\n'
            f'[[devices]]\nid = "{MONITOR}"\nkind = "hl7-mllp"\n'
            f'listen = "127.0.0.1:{self.mllp_port}"\n'
        )
        for seed, (dev_id, kind, options) in enumerate(PTY_DEVICES, start=self.cfg.seed * 10):
            if "test_map" in options:
                options = {**options, "test_map": str(test_map)}
            simulator = driver(kind).simulator
            assert simulator is not None
            self.kinds[dev_id] = (kind, options)
            self.sims[dev_id] = PtyDevice(
                simulator(options, seed), link=self.workdir / f"tty-{dev_id}"
            )
            text += (
                f'[[devices]]\nid = "{dev_id}"\nkind = "{kind}"\n'
                f'port = "{self.sims[dev_id].path}"\n'
            )
            if options:
                text += "options = " + _inline(options) + "\n"
        config = self.workdir / "agent.toml"
        config.write_text(text, encoding="utf-8")
        config.chmod(0o600)
        return config

    def _agent_argv(self, config: Path) -> list[str]:
        module = "tests.day.frozen_agent" if self.cfg.negative == "freeze" else "edge_agent"
        return [sys.executable, "-m", module, "run", "--config", str(config)]

    # --- the day ----------------------------------------------------------------------------
    def run(self) -> DayFigures:
        self.broker.start()
        proxy_port = self.proxy.start()
        config = self._config(proxy_port)
        self.agent = Process(self._agent_argv(config), self.workdir / "agent.log")
        nurse = Nurse(self.console_port, self.day)
        status = StatusWatcher(config, self.day)
        heart = Heart(self.store, self.day)
        final_loop: dict[str, Any] | None = None
        drained = False
        try:
            self.receiver.start()
            for sim in self.sims.values():
                sim.start()
            pid = self.agent.start()
            self._wait(lambda: ask_any(self.store).answering, 60, "the agent answering")
            self.day.agent_started = True
            self.monitor.start()
            for thread in (nurse, status, heart):
                thread.start()
            self._wait(lambda: self.monitor.acked > 0, 60, "the monitor's first ACK")
            self._wait(lambda: self.day.connected, 60, "the agent connected to the broker")
            self._live_day(pid, status)
            drained = self._end_of_day()
            final_loop = heart.last
        finally:
            self.day.done.set()
            self.abort.set()
            self.monitor.join(10)
            for sim in self.sims.values():
                sim.stop()
            if self.agent is not None:
                self.agent.stop(20.0 if self.cfg.negative is None else 3.0)
            self.receiver.stop()
            self.proxy.stop()
            self.broker.stop()
            self.witness.close()
            for thread in (nurse, status, heart):
                if thread.is_alive():
                    thread.join(30)
        return self._figures(final_loop, nurse, drained)

    @staticmethod
    def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)  # polling real processes, bounded by the deadline

    def _live_day(self, pid: int, status: StatusWatcher) -> None:
        total = sum(p.seconds for p in self.phases)
        every = self.cfg.files_every or max(2.0, total / 8)
        next_file = time.monotonic() + every / 2
        for phase in self.phases:
            self._enter(phase, status)
            start = time.monotonic()
            count0, _ = store_counts(self.store)
            cpu0 = cpu_seconds(pid)
            end = start + phase.seconds
            # A long loss starts from a connected agent: an online stretch lasts until the
            # agent has reconnected (its backoff), at most RECONNECT_WAIT_S more.
            wait = phase.name == "online" and self.cfg.negative is None
            latest = end + RECONNECT_WAIT_S
            while (now := time.monotonic()) < end or (
                wait and not self.day.connected and now < latest
            ):
                if now >= next_file:
                    self._drop_file()
                    next_file = now + every
                time.sleep(min(0.2, max(0.01, end - now)))  # the day's clock: a schedule
            count1, _ = store_counts(self.store)
            self.windows.append(
                Window(
                    phase.link, time.monotonic() - start, count1 - count0, cpu_seconds(pid) - cpu0
                )
            )
            self._leave(phase, status)

    def _enter(self, phase: Phase, status: StatusWatcher) -> None:
        day = self.day
        if phase.link == "offline":
            if phase.loss:
                day.current = Loss(time.monotonic())
                day.losses.append(day.current)
            day.link = "offline"
            if phase.name == "broker-restart":
                self.broker.stop()
            else:
                self.proxy.set_mode("blackhole" if phase.name == "blackhole" else "reset")
            if phase.loss:
                status.wanted.set()
        else:
            day.link = "online"

    def _leave(self, phase: Phase, status: StatusWatcher) -> None:
        if phase.link != "offline":
            return
        status.wanted.clear()
        self.day.current = None
        self.day.returned_at = time.monotonic()
        _, top = store_counts(self.store)
        if phase.name == "broker-restart":
            self.broker.start()
        else:
            self.proxy.set_mode("pass")
        if phase.loss:
            self._watch_drain(top)

    def _watch_drain(self, top: int) -> None:
        returned = time.monotonic()

        def watch() -> None:
            while not self.day.done.is_set():
                if unsent_up_to(self.store, top) == 0:
                    self.drains.append(time.monotonic() - returned)
                    return
                self.day.done.wait(0.2)

        threading.Thread(target=watch, name="drain", daemon=True).start()

    def _drop_file(self) -> None:
        n = len(self.dropped) + 1
        body = f"%PDF-1.4\n% ecg of the day, document {n}\n".encode() + os.urandom(2048)
        tmp = self.workdir / f"ecg-{n:04d}.pdf.tmp"
        tmp.write_bytes(body)
        tmp.replace(self.drop / f"ecg-{n:04d}.pdf")  # appears whole in the watched folder
        self.dropped.append(hashlib.sha256(body).hexdigest())

    def _end_of_day(self) -> bool:
        """The devices stop (mid-message is fine: the decoders drop what is incomplete on
        both sides), the store takes what they sent, central takes the backlog."""
        self.day.closing.set()
        self.stop_new.set()
        for sim in self.sims.values():
            sim.paused.set()
        timeout = self.cfg.drain_timeout if self.cfg.negative is None else 8.0
        deadline = time.monotonic() + timeout
        self.monitor.join(max(0.0, deadline - time.monotonic()))
        # the agent reads what is still in the ptys, then the ports close (a stream's last
        # second is complete only at the end of the stream, on both sides)
        before_eof = {dev: len(self._decoded(dev, eof=False)) for dev in self.sims}
        while time.monotonic() < min(deadline, time.monotonic() + 15.0):
            stored = self._stored_by_device()
            if all(stored.get(d, 0) >= n for d, n in before_eof.items()):
                break
            time.sleep(0.2)  # the agent reading the ptys' last bytes, bounded
        for sim in self.sims.values():
            sim.stop()
        expected = {dev: len(self._decoded(dev)) for dev in self.sims}
        while time.monotonic() < deadline:
            stored = self._stored_by_device()
            files_ok = all(self._at_central(sha) for sha in self.dropped)
            _, top = store_counts(self.store)
            if (
                not self.monitor.is_alive()
                and files_ok
                and unsent_up_to(self.store, top) == 0
                and all(stored.get(d, 0) >= n for d, n in expected.items())
            ):
                return True
            time.sleep(0.2)  # waiting for the drain, bounded by the deadline
        return False

    # --- the check --------------------------------------------------------------------------
    def _decoded(self, dev_id: str, eof: bool = True) -> list[tuple[str, float | None]]:
        """What a pty device sent, decoded again with the agent's own decoder, each completed
        message acknowledged at once (as after a commit), a record sent again (the same
        source key: an analyser's resend) counted once, as the store keeps it once."""
        kind, options = self.kinds[dev_id]
        make = driver(kind).decoder
        assert make is not None
        decoder = make(options)
        sent = bytes(self.sims[dev_id].sent)
        step = 1 if kind == "astm" else max(1, len(sent))
        seen: set[str] = set()
        out: list[tuple[str, float | None]] = []
        chunks = [sent[at : at + step] for at in range(0, len(sent), step)]
        for chunk in [*chunks, b""] if eof else chunks:  # b"": the port closed
            for event in decoder.receive_data(chunk):
                if isinstance(event, MessageComplete):
                    decoder.acknowledge(event.message_id, stored=True)
                    decoder.data_to_send()
                elif isinstance(event, Measurement):
                    if event.source_key is not None:
                        if event.source_key in seen:
                            continue
                        seen.add(event.source_key)
                    out.append((event.quantity, event.value))
        return out

    def _stored_by_device(self) -> dict[str, int]:
        if not self.store.exists():
            return {}
        try:
            with read_only(self.store) as conn:
                return {
                    str(d): int(n)
                    for d, n in conn.execute(
                        "SELECT device_id, count(*) FROM readings GROUP BY device_id"
                    )
                }
        except sqlite3.Error:
            return {}

    def _at_central(self, sha: str) -> bool:
        return (self.central_files / "objects" / sha[:2] / sha).exists()

    def _check(self) -> tuple[Witnessed, dict[str, int]]:
        with read_only(self.store) as conn:
            rows = conn.execute(
                "SELECT id, seq, device_id, quantity, value, sent_at FROM readings"
            ).fetchall()
        by_device: dict[str, int] = {}
        for _, _, dev, _, _, _ in rows:
            by_device[dev] = by_device.get(dev, 0) + 1
        central: list[tuple[str, int]] = []
        if self.central.exists():
            with read_only(self.central) as conn:
                central = [
                    (str(i), int(s))
                    for i, s in conn.execute(
                        "SELECT id, seq FROM observations WHERE unit = ?", [UNIT]
                    )
                ]
        out = figures.exactly_once({str(r[0]): int(r[1]) for r in rows}, central)
        if out.lost or out.duplicated or out.unexpected or out.seq_gaps:
            out.notes.append(
                f"unit -> central: {out.lost} not at central, {out.duplicated} "
                f"duplicated, {out.unexpected} unknown to the unit, "
                f"{out.seq_gaps} seq gaps"
            )
        out.unsent = sum(1 for r in rows if r[5] is None)
        # the pty devices: what each sent against what the unit stored from it
        for dev_id in self.sims:
            sent = self._decoded(dev_id)
            stored = [(str(q), v) for _, _, d, q, v, _ in rows if d == dev_id]
            missing, extra = figures.multiset_diff(sent, stored)
            out.sent += len(sent)
            out.lost += missing
            out.duplicated += extra
            if missing or extra:
                out.notes.append(
                    f"{dev_id}: sent {len(sent)}, stored {len(stored)} "
                    f"({missing} missing, {extra} extra)"
                )
        # the HL7 monitor: every acknowledged reading at central, once
        history = checker.read_history(read_witness(self.witness.path))
        hl7_ids = {str(r[0]) for r in rows if r[2] == MONITOR}
        c_rows, epoch = central_rows(self.central)
        classes = checker.classify(
            history,
            [r for r in c_rows if r.id in hl7_ids],
            [r for r in unit_rows(self.store, epoch) if r.id in hl7_ids],
        )
        out.sent += len(history.sent)
        out.lost += classes.lost
        out.duplicated += classes.duplicated_by_content + classes.duplicated_by_id
        out.unexpected += classes.unexpected
        if not classes.valid:
            out.notes.append(
                f"{MONITOR}: lost {classes.lost} (first {classes.lost_examples}), "
                f"unexpected {classes.unexpected}, duplicated "
                f"{classes.duplicated_by_content + classes.duplicated_by_id}"
            )
        out.files_dropped = len(self.dropped)
        out.files_lost = sum(1 for sha in self.dropped if not self._at_central(sha))
        return out, by_device

    def _figures(
        self, final_loop: dict[str, Any] | None, nurse: Nurse, drained: bool
    ) -> DayFigures:
        for dev_id, sim in self.sims.items():  # the devices' own record, kept beside the logs
            (self.workdir / f"sent-{dev_id}.bin").write_bytes(bytes(sim.sent))
        witnessed, by_device = self._check()
        if not drained:
            witnessed.notes.append("the backlog did not drain before the deadline")
        losses = self.day.losses
        return DayFigures(
            minutes=round(sum(p.seconds for p in self.phases) / 60, 2),
            negative=self.cfg.negative,
            keepalive_s=self.cfg.keepalive_s,
            readings_per_s=figures.rates(self.windows),
            loop_lag_p99_ms=figures.split_p99(self.day.lag_samples),
            live_p99_ms=figures.split_p99(self.day.live_samples),
            cpu_percent=figures.cpu(self.windows),
            console_offline_s=[round(x.console, 2) for x in losses if x.console is not None],
            status_offline_s=[round(x.status, 2) for x in losses if x.status is not None],
            drain_s=[round(x, 2) for x in self.drains],
            reconnect_s=[round(x, 2) for x in self.day.reconnects],
            agent_loop=final_loop,
            witnessed=witnessed,
            readings_total=sum(by_device.values()),
            by_device=by_device,
            nurse_actions=dict(nurse.actions),
            live_polls=nurse.polls,
            link_losses=len(losses),
            detections_missed=sum(1 for x in losses if x.console is None or x.status is None),
            faults=sorted({p.name for p in self.phases if p.link == "offline"}),
        )


def _inline(options: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items()) + " }"


def run_day(cfg: DayConfig, workdir: Path | None = None) -> DayFigures:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return VanDay(cfg, workdir).run()
    with tempfile.TemporaryDirectory(prefix="edge-day-") as tmp:
        return VanDay(cfg, Path(tmp)).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/day",
        description="A van's day, compressed: the real agent, devices, Mosquitto, the "
        "receiver and the console, the link down, flapping, a broker restart and a "
        "blackhole; figures offline beside online, and 0 lost, 0 duplicated.",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=20.0,
        help="length of the day (the short day in the suite is 0.65)",
    )
    p.add_argument(
        "--keepalive",
        type=int,
        default=5,
        help="the agent's MQTT keepalive (s): a blackhole is noticed after 1.5 x this",
    )
    p.add_argument(
        "--negative",
        choices=NEGATIVES,
        help="put the offline freeze back: the day must report FAIL (exit 0 when it does)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="keep logs, stores and the witness here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    cfg = DayConfig(
        minutes=args.minutes, negative=args.negative, keepalive_s=args.keepalive, seed=args.seed
    )
    result = run_day(cfg, args.workdir)
    print(json.dumps(result.as_dict()) if args.json else result.text())
    if args.negative:
        return 0 if not result.passed else 1
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
