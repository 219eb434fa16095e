"""The I/O shell every figure shares: a throwaway folder, a real Mosquitto, real receivers
(``edge-agent receive`` subprocesses), a byte-counting TCP proxy, store fixtures, and the
bounded waits. Everything started here is stopped by :meth:`Bench.close`, also on Ctrl-C.

The harness touches the project only through its public APIs (``Store``, ``SyncDaemon``,
``Receiver`` via its CLI, ``codec.encode_batch``, ``Supervisor``/``StoreSink``, the
simulators), so it keeps working while their internals change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from edge_agent.models import Measurement, measurement
from edge_agent.settings import BrokerSettings, Settings, StoreSettings, SyncSettings, UnitSettings
from edge_agent.store import device_facts
from edge_agent.store.writer import Store
from tests.broker import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """A figure could not be measured (a deadline passed, a process did not start)."""


def python_env() -> dict[str, str]:
    """The environment for subprocesses: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def agent_cmd(*args: str) -> list[str]:
    """``edge-agent ARGS`` from this checkout (``python -m edge_agent`` is the console script)."""
    return [sys.executable, "-m", "edge_agent", *args]


# --- readings --------------------------------------------------------------------------------
# (quantity, a normal value, a value outside the catalogue's alert range, jitter)
QUANTITIES: tuple[tuple[str, float, float, float], ...] = (
    ("spo2", 97.0, 86.0, 2.0),  # alert range [90, 100]
    ("pulse_rate", 72.0, 145.0, 8.0),  # alert range [40, 130]
    ("systolic_bp", 125.0, 195.0, 10.0),  # alert range [90, 180]
    ("body_temperature", 36.9, 39.8, 0.3),
)


def make_readings(n: int, alert_share: float, seed: int = 1) -> list[Measurement]:
    """``n`` readings over four quantities; ``alert_share`` of them outside the alert range.
    The alerts are spread evenly (every k-th reading), so a prefix has the same share."""
    rng = random.Random(seed)
    every = round(1 / alert_share) if alert_share > 0 else 0
    out = []
    for i in range(n):
        quantity, normal, alert, jitter = QUANTITIES[i % len(QUANTITIES)]
        value = alert if every and i % every == every - 1 else normal + rng.uniform(-1, 1) * jitter
        out.append(measurement(quantity, round(value, 1), raw=b"\x01\x02" * 12))
    return out


def fill_store(path: Path, unit: str, readings: list[Measurement], chunk: int = 500) -> None:
    """Insert through the real store (several readings per append, like a device packet)."""
    with Store(path, unit) as store:
        futures = [
            store.append("dev-" + str(i // chunk % 5), readings[i : i + chunk])
            for i in range(0, len(readings), chunk)
        ]
        for fut in futures:
            fut.result(timeout=300)
        for i in range(5):  # each device told us everything (the FHIR Device's largest shape)
            store.call(partial(device_facts.save, device_id=f"dev-{i}", values=BENCH_FACTS))


BENCH_FACTS: dict[str, str | int | None] = {
    "serial": "SN20260417",
    "system_id": "74-E8-FF-FE-FF-05-1C-00",
    "mac": "00-1C-05-FF-E8-74",
    "manufacturer": "Nonin Medical, Inc.",
    "model": "3230",
    "firmware": "r2.1",
    "mdc_type": 528388,
}


def settings_for(unit: str, store_path: Path, broker_port: int, **sync: Any) -> Settings:
    """The agent's settings: defaults everywhere except the store path and a plain broker."""
    return Settings(
        unit=UnitSettings(id=unit, language="en"),
        store=StoreSettings(path=store_path),
        broker=BrokerSettings(host="127.0.0.1", port=broker_port, tls=False),
        sync=SyncSettings(**sync),
    )


# --- waits -----------------------------------------------------------------------------------
async def until(
    check: Callable[[], bool], deadline_s: float, what: str, every: float = 0.05
) -> float:
    """Wait for ``check()``, polling; seconds waited. BenchError after ``deadline_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline_s:
            raise BenchError(f"{what}: not done after {deadline_s:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic() - start


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of stat(5)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, summed by Python thread name without its
    number (``store-reader_0`` -> ``store-reader``; paho's network loop is ``paho``; the
    main thread runs the event loop); threads Python does not know are ``other``."""
    import re
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "other")
        name = (
            "event-loop"
            if name == "MainThread"
            else "paho"
            if name.startswith("paho")
            else re.sub(r"[_-]\d+$", "", name)
        )
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


# --- the bench: folder, broker, receivers, cleanup ----------------------------------------------
class Bench:
    """One run's resources; ``with Bench() as bench:`` stops them all on the way out."""

    def __init__(
        self, keep: bool = False, progress: Callable[[str], None] = lambda _: None
    ) -> None:
        self.progress = progress
        self.root = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        self.keep = keep
        self._broker: MosquittoBroker | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._counter = 0

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fresh(self, name: str) -> Path:
        """A new empty folder for one measurement."""
        self._counter += 1
        path = self.root / f"{self._counter:03d}-{name}"
        path.mkdir()
        return path

    def unit(self, name: str) -> str:
        """A unit id never used before on this broker (sessions persist per client id)."""
        self._counter += 1
        return f"bench-{name}-{self._counter}"

    @property
    def broker(self) -> MosquittoBroker:
        """The run's Mosquitto, started on first use (subscribe logging: receivers' readiness)."""
        if self._broker is None:
            folder = self.fresh("mosquitto")
            self._broker = MosquittoBroker(
                folder, extra_config="log_type subscribe\nlog_type error\nlog_type warning\n"
            ).start()
        return self._broker

    def spawn(self, cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        """A child process, stopped at the end of the run (SIGTERM, then SIGKILL)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=python_env(), cwd=REPO, **kw
            )
        self._procs.append(proc)
        return proc

    def stop_process(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        return int(proc.returncode)

    async def receivers(
        self,
        central: Path | str,
        count: int = 1,
        group: str = "receivers",
        broker: MosquittoBroker | None = None,
        signing_key: Path | None = None,
    ) -> list[subprocess.Popen[bytes]]:
        """``count`` real receivers (``edge-agent receive``) sharing ``group``, into one
        central (a SQLite file, or a ``postgresql://`` URL), on ``broker`` (default: the
        run's), signing their acks with ``signing_key`` if given; returns once the broker has
        logged each one's subscription."""
        broker = broker or self.broker
        logs = central.parent if isinstance(central, Path) else self.fresh("receivers")
        extra = [] if isinstance(central, Path) else ["--no-files"]
        if signing_key is not None:
            extra += ["--signing-key", str(signing_key)]
        procs = []
        for _ in range(count):
            self._counter += 1
            cid = f"bench-receiver-{self._counter}"
            procs.append(
                self.spawn(
                    agent_cmd(
                        "receive",
                        "--broker",
                        f"127.0.0.1:{broker.port}",
                        "--db",
                        str(central),
                        "--group",
                        group,
                        "--client-id",
                        cid,
                        *extra,
                    ),
                    logs / f"{cid}.log",
                )
            )
            marker = f" {cid} 1 $share/{group}/"

            def subscribed(marker: str = marker, proc: subprocess.Popen[bytes] = procs[-1]) -> bool:
                if proc.poll() is not None:
                    raise BenchError(f"receiver exited with {proc.returncode}")
                return marker in broker.log.read_text(errors="replace")

            await until(subscribed, 60, "receiver subscription", every=0.1)
        self.progress(f"bench: broker on 127.0.0.1:{broker.port}, {count} receiver(s) subscribed")
        return procs

    def close(self) -> None:
        for proc in list(self._procs):
            with contextlib.suppress(Exception):
                self.stop_process(proc)
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Interrupt:
    """Ctrl-C (SIGINT) and SIGTERM stop the run, whatever the bench inherited.

    The bench installs its own handlers: a parent that ignores SIGINT (a background job of a
    non-interactive shell, ``nohup``) would otherwise pass the ignore on and Ctrl-C would do
    nothing. A signal is recorded first, then cancels the run's main task, so it takes effect at
    the task's next ``await`` and never in the middle of starting or stopping a process; one
    that arrives before the run, after it or while a cancellation is swallowed (Python 3.11's
    ``wait_for`` when its inner task ends at that moment) is still seen through ``signum``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self) -> None:
        """Called in the run's main task: the task a signal cancels."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self.signum is not None and self._task is not None:
            self._task.cancel()

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)  # also wakes a loop blocked in select()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def bounded(coro: Awaitable[Any], seconds: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        raise BenchError(f"{what}: not done after {seconds:.0f} s") from None


# --- simulated devices -------------------------------------------------------------------------
def simulated_devices(folder: Path, count: int = 5) -> tuple[list[Any], list[Any]]:
    """``count`` of the demo van's devices (not the analyser, which needs a test map) playing
    on ptys: (started PtyDevices, their DeviceSettings). Stop the PtyDevices when done."""
    from drivers.registry import driver
    from drivers.simulators.base import PtyDevice
    from edge_agent.service.demo import DEMO_DEVICES
    from edge_agent.settings import DeviceSettings

    chosen = [d for d in DEMO_DEVICES if d[1] != "astm"][:count]
    sims, devices = [], []
    try:
        for seed, (dev_id, kind, options) in enumerate(chosen):
            simulator = driver(kind).simulator
            assert simulator is not None
            sim = PtyDevice(simulator(options, seed), link=folder / f"tty-{dev_id}").start()
            sims.append(sim)
            devices.append(DeviceSettings(id=dev_id, kind=kind, port=sim.path, options=options))
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    return sims, devices


@dataclass(frozen=True)
class Size:
    """How big a run is: 1.0 is the issue's sizes, ``--quick`` is 0.1."""

    scale: float = 1.0

    def n(self, full: int, minimum: int = 1) -> int:
        return max(minimum, round(full * self.scale))

    def s(self, full: float, minimum: float = 0.0) -> float:
        return max(minimum, full * self.scale)
