"""The chaos harness (``scripts/chaos``): the agent, a real Mosquitto and the reference receiver
as subprocesses under random SIGKILLs, HL7 monitors as the external witness, then heal, drain
and check (:mod:`tests.faults.checker`).

- The agent is ``edge-agent run`` (through :mod:`tests.faults.hooked_agent`) with one HL7 v2
  MLLP listener device and sync to the broker; the receiver is ``edge-agent receive`` with a
  SQLite central store.
- Power cuts: each agent start runs on the lazy VFS (:mod:`tests.faults.lazyvfs`) with
  probability ``power_cut_ratio``; killing such an agent drops every write it had not synced.
  Limits: only the store's SQLite files are lazy (not the broker's or central's files); the
  broker and the receiver are killed as processes (a van's power cut does not reach central).
- After every agent kill: ``PRAGMA integrity_check`` on its store (central's after receiver
  kills and at the end), read-only: the WAL the killed agent left is not checkpointed away, so
  the next agent starts on it, as in the field (``starts_on_a_left_wal`` counts them).
- Heal and drain: the monitors stop sending new messages and finish the one in hand; a clean
  agent (no lazy VFS, no negative hook) syncs until its store has nothing unsent.
- Negative controls (``negative=``): ``ack-before-commit`` and ``sync-normal`` (see the hook
  module) must show lost acknowledged readings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from tests.broker import MosquittoBroker, free_port
from tests.faults import checker
from tests.faults.hooked_agent import LAZY_ENV, NEGATIVE_ENV, NEGATIVES
from tests.faults.witness import Monitor, Witness, read_witness

UNIT: Final = "mmu-chaos"
DEVICE: Final = "monitor-chaos"
ROOT: Final = Path(__file__).resolve().parents[2]
TARGETS: Final = ("agent", "broker", "receiver")


@dataclass
class ChaosConfig:
    seconds: float = 60.0  # fault phase, at most
    kills: int | None = None  # end the fault phase once this many kills ...
    power_cuts: int = 0  # ... and at least this many power cuts were done
    power_cut_ratio: float = 0.5  # agent starts on the lazy VFS
    targets: tuple[str, ...] = TARGETS
    weights: tuple[float, ...] = (2.0, 1.0, 1.0)
    pause: tuple[float, float] = (0.2, 1.2)  # seconds between kills (after the agent is up)
    downtime: tuple[float, float] = (0.0, 0.3)  # a killed process stays down this long
    monitors: int = 2
    gap: float = 0.02  # seconds between a monitor's messages
    ack_timeout: float = 3.0  # a monitor resends after this long without an ACK
    drain_timeout: float = 120.0
    negative: str | None = None
    seed: int = 0


@dataclass
class Summary:
    seconds: float = 0.0
    negative: str | None = None
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGETS, 0))
    power_cuts: int = 0
    messages_sent: int = 0
    messages_acked: int = 0
    transmissions: int = 0
    resends: int = 0
    readings_sent: int = 0
    readings_central: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    integrity_checks: int = 0
    integrity_failures: int = 0
    starts_on_a_left_wal: int = 0  # agent starts that found the WAL a killed agent left
    drained: bool = False
    epoch_column: str | None = None
    valid: bool = False

    @property
    def negative_caught(self) -> bool:
        return self.classes.get("lost", 0) > 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.negative:
            out["negative_caught"] = self.negative_caught
        return out

    def text(self) -> str:
        kills = ", ".join(f"{k} {v}" for k, v in self.kills.items())
        classes = ", ".join(f"{k} {v}" for k, v in self.classes.items())
        lines = [
            f"chaos: {self.seconds:.0f} s, kills: {kills}; power cuts {self.power_cuts}",
            f"messages: sent {self.messages_sent}, acked (AA) {self.messages_acked}, "
            f"transmissions {self.transmissions}, resends {self.resends}",
            f"readings: sent {self.readings_sent}, at central {self.readings_central}",
            f"classes: {classes}",
            f"integrity_check: {self.integrity_checks} run, {self.integrity_failures} failed; "
            f"drained: {self.drained}; seq grouped by {self.epoch_column or 'unit'}; "
            f"agent starts on a WAL left by a kill: {self.starts_on_a_left_wal}",
        ]
        if self.lost_examples:
            lines.append(f"lost (first MSH-10s): {', '.join(self.lost_examples)}")
        if self.negative:
            verdict = "CAUGHT" if self.negative_caught else "NOT CAUGHT"
            lines.append(f"negative control {self.negative}: {verdict}")
        else:
            lines.append("verdict: " + ("valid" if self.valid else "INVALID"))
        return "\n".join(lines)


def integrity_ok(path: Path) -> bool:
    """``PRAGMA integrity_check`` through a read-only connection: it never checkpoints, so the
    WAL a killed (or power-cut) agent left stays for the next agent to start on, as in a van
    after consecutive cuts (a read-write connection's close would checkpoint and remove it)."""
    if not path.exists():
        return True  # not created yet: nothing to corrupt
    with contextlib.closing(
        sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
    ) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return rows == [("ok",)]


def wal_left(path: Path) -> bool:
    """A WAL with frames in it beside the store (what the next start has to recover from)."""
    wal = path.with_name(path.name + "-wal")
    return wal.exists() and wal.stat().st_size > 0


class Supervised:
    """A subprocess in its own session: SIGKILL of its whole group (the fault), or a clean
    stop (SIGTERM, then SIGKILL after 30 s)."""

    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


class Agent(Supervised):
    """``edge-agent run`` as a subprocess, in its own process group."""

    def __init__(self, workdir: Path, broker_port: int, mllp_port: int) -> None:
        self.workdir = workdir
        self.store = workdir / "unit.db"
        self.config = workdir / "agent.toml"
        self.config.write_text(
            f'[unit]\nid = "{UNIT}"\n'
            f'[store]\npath = "{self.store}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\ntls = false\n'
            "keepalive_s = 5\n"
            "[sync]\nbatch_size = 50\nack_timeout_s = 2.0\nmax_in_flight = 4\n"
            f'[[devices]]\nid = "{DEVICE}"\nkind = "hl7-mllp"\n'
            f'listen = "127.0.0.1:{mllp_port}"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.lazy = False

    def start(self, *, lazy: bool, negative: str | None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop(LAZY_ENV, None)
        env.pop(NEGATIVE_ENV, None)
        if lazy:
            env[LAZY_ENV] = str(self.store)
        if negative:
            env[NEGATIVE_ENV] = negative
        self.lazy = lazy
        with (self.workdir / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.faults.hooked_agent",
                    "run",
                    "--config",
                    str(self.config),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def unsent(self) -> int | None:
        """Readings the unit has not seen acknowledged by central (None: store not there)."""
        if not self.store.exists():
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
            ) as conn:
                return int(
                    conn.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[
                        0
                    ]
                )
        except sqlite3.Error:
            return None


class ReceiverProcess(Supervised):
    def __init__(self, workdir: Path, broker_port: int) -> None:
        self.workdir = workdir
        self.db = workdir / "central.db"
        self.broker_port = broker_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "receiver.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "receive",
                    "--broker",
                    f"127.0.0.1:{self.broker_port}",
                    "--db",
                    str(self.db),
                    "--client-id",
                    "receiver-chaos",
                    "--gap-timeout",
                    "5",
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


class Chaos:
    def __init__(self, cfg: ChaosConfig, workdir: Path) -> None:
        if cfg.negative is not None and cfg.negative not in NEGATIVES:
            raise ValueError(f"negative control {cfg.negative!r}: use one of {NEGATIVES}")
        self.cfg = cfg
        self.workdir = workdir
        self.rng = random.Random(cfg.seed)
        self.summary = Summary(negative=cfg.negative)
        (workdir / "broker").mkdir(exist_ok=True)
        self.broker = MosquittoBroker(workdir / "broker", extra_config="autosave_interval 1")
        self.mllp_port = free_port()
        self.agent = Agent(workdir, self.broker.port, self.mllp_port)
        self.receiver = ReceiverProcess(workdir, self.broker.port)
        self.witness = Witness(workdir / "witness.jsonl")
        self.nemesis = Witness(workdir / "nemesis.jsonl")  # the faults, in order, timestamped
        self.stop_new = threading.Event()
        self.abort = threading.Event()
        self.monitors = [
            Monitor(
                i,
                self.mllp_port,
                self.witness,
                seed=cfg.seed,
                gap=cfg.gap,
                ack_timeout=cfg.ack_timeout,
                stop_new=self.stop_new,
                abort=self.abort,
            )
            for i in range(cfg.monitors)
        ]

    # --- phases ---------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.monotonic()
        try:
            self.broker.start()
            self.receiver.start()
            self._start_agent(faulty=True)
            for monitor in self.monitors:
                monitor.start()
            self._faults(started)
            self._heal_and_drain()
        finally:
            self.abort.set()
            for monitor in self.monitors:
                monitor.join(10)
            self.agent.stop()
            self.receiver.stop()
            self.broker.stop()
            self.witness.close()
            self.nemesis.close()
        self._integrity(self.agent.store)
        self._integrity(self.receiver.db)
        self._check()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _start_agent(self, *, faulty: bool) -> None:
        lazy = faulty and self.rng.random() < self.cfg.power_cut_ratio
        self.agent.start(lazy=lazy, negative=self.cfg.negative if faulty else None)
        self.nemesis.record(t=time.time(), op="start", target="agent", lazy=lazy)

    def _acks(self) -> int:
        return sum(m.acked for m in self.monitors)

    def _wait_agent_up(self, acks_before: int, timeout: float = 8.0) -> None:
        """Until a monitor got an AA from the new agent (or the timeout: kill it anyway)."""
        deadline = time.monotonic() + timeout
        while self._acks() == acks_before and time.monotonic() < deadline:
            self.abort.wait(0.02)

    def _done(self, started: float) -> bool:
        s, cfg = self.summary, self.cfg
        if time.monotonic() - started >= cfg.seconds:
            return True
        return (
            cfg.kills is not None
            and sum(s.kills.values()) >= cfg.kills
            and s.power_cuts >= cfg.power_cuts
        )

    def _faults(self, started: float) -> None:
        cfg = self.cfg
        self._wait_agent_up(0, timeout=30.0)
        while not self._done(started):
            time.sleep(self.rng.uniform(*cfg.pause))
            target = self.rng.choices(cfg.targets, cfg.weights[: len(cfg.targets)])[0]
            self._kill(target)
            time.sleep(self.rng.uniform(*cfg.downtime))
            acks = self._acks()
            self._restart(target, faulty=True)
            if target == "agent":
                self._wait_agent_up(acks)

    def _kill(self, target: str) -> None:
        self.summary.kills[target] += 1
        self.nemesis.record(
            t=time.time(), op="kill", target=target, power_cut=target == "agent" and self.agent.lazy
        )
        if target == "agent":
            self.summary.power_cuts += self.agent.lazy
            self.agent.kill()
            self._integrity(self.agent.store)
            self.summary.starts_on_a_left_wal += wal_left(self.agent.store)
        elif target == "broker":
            self.broker.kill()
        else:
            self.receiver.kill()
            self._integrity(self.receiver.db)

    def _restart(self, target: str, *, faulty: bool) -> None:
        if target == "agent":
            self._start_agent(faulty=faulty)
        elif target == "broker":
            self.broker.start()
        else:
            self.receiver.start()

    def _integrity(self, path: Path) -> None:
        self.summary.integrity_checks += 1
        try:
            ok = integrity_ok(path)
        except sqlite3.Error:
            ok = False
        self.summary.integrity_failures += not ok

    def _heal_and_drain(self) -> None:
        """The last fault is an agent kill; then a clean agent, and wait until all is synced."""
        self._kill("agent")
        self._restart("agent", faulty=False)
        self.stop_new.set()
        deadline = time.monotonic() + self.cfg.drain_timeout
        for monitor in self.monitors:
            monitor.join(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            if all(not m.is_alive() for m in self.monitors) and self.agent.unsent() == 0:
                self.summary.drained = True
                return
            time.sleep(0.2)

    # --- check ----------------------------------------------------------------------------
    def _check(self) -> None:
        s = self.summary
        history = checker.read_history(read_witness(self.witness.path))
        central, epoch = central_rows(self.receiver.db)
        unit = unit_rows(self.agent.store, epoch)
        classes = checker.classify(history, central, unit)
        s.epoch_column = epoch
        s.messages_sent, s.messages_acked = history.messages, len(history.acked)
        s.resends = history.resends
        s.transmissions = sum(m.transmissions for m in self.monitors)
        s.readings_sent, s.readings_central = len(history.sent), len(central)
        s.classes = {k: v for k, v in asdict(classes).items() if k != "lost_examples"}
        s.lost_examples = classes.lost_examples
        s.valid = classes.valid and s.integrity_failures == 0 and s.drained


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def central_rows(path: Path) -> tuple[list[checker.CentralRow], str | None]:
    if not path.exists():
        return [], None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        cols = _columns(conn, "observations")
        if not cols:
            return [], None
        epoch = next((c for c in checker.EPOCH_COLUMNS if c in cols), None)
        pick = epoch or "NULL"
        rows = conn.execute(f"SELECT id, unit, seq, {pick}, resource FROM observations")
        return [
            checker.central_row(i, u, s, None if e is None else str(e), r) for i, u, s, e, r in rows
        ], epoch


def unit_rows(path: Path, epoch: str | None) -> list[checker.UnitRow]:
    """The unit's readings (id, seq) with their store epoch: a per-row ``epoch`` column, or
    the store's one epoch (``store_identity``), when central groups seqs by epoch."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = _columns(conn, "readings")
        if not columns:
            return []
        rows = conn.execute(
            f"SELECT id, seq, {epoch if epoch in columns else 'NULL'} FROM readings"
        ).fetchall()
        store_epoch: str | None = None
        if epoch is not None and epoch not in columns and _columns(conn, "store_identity"):
            found = conn.execute("SELECT epoch FROM store_identity").fetchone()
            store_epoch = None if found is None else str(found[0])
    return [
        checker.UnitRow(i, int(s), str(e) if e is not None else store_epoch) for i, s, e in rows
    ]


def run_chaos(cfg: ChaosConfig, workdir: Path | None = None) -> Summary:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return Chaos(cfg, workdir).run()
    with tempfile.TemporaryDirectory(prefix="edge-chaos-") as tmp:
        return Chaos(cfg, Path(tmp)).run()


def _pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="Kill the agent, Mosquitto and the receiver at random (power cuts "
        "included), witness what HL7 monitors got acknowledged, then check central.",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="fault phase length, at most")
    p.add_argument("--kills", type=int, help="end the fault phase after this many kills")
    p.add_argument("--power-cuts", type=int, default=0, help="... and this many power cuts")
    p.add_argument(
        "--power-cut-ratio",
        type=float,
        default=0.5,
        help="share of agent starts on the lazy VFS (killing them cuts power)",
    )
    p.add_argument(
        "--pause", type=_pair, default=(0.2, 1.2), metavar="LO,HI", help="seconds between kills"
    )
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="processes to kill, comma-separated (agent, broker, receiver)",
    )
    p.add_argument("--monitors", type=int, default=2)
    p.add_argument(
        "--negative",
        choices=NEGATIVES,
        help="run a negative control (exit 0 when the harness catches it)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="keep logs, stores and witness file here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    cfg = ChaosConfig(
        seconds=args.seconds,
        kills=args.kills,
        power_cuts=args.power_cuts,
        power_cut_ratio=args.power_cut_ratio,
        pause=args.pause,
        monitors=args.monitors,
        negative=args.negative,
        seed=args.seed,
    )
    targets = tuple(t for t in args.targets.split(",") if t)
    if not targets or any(t not in TARGETS for t in targets):
        p.error(f"--targets: choose among {', '.join(TARGETS)}")
    cfg.targets = targets
    cfg.weights = tuple(dict(zip(TARGETS, cfg.weights, strict=True))[t] for t in targets)
    if args.negative:  # the controls are about the agent: kill it only, cut power often
        cfg.targets, cfg.weights = ("agent",), (1.0,)
        if args.negative == "sync-normal":
            cfg.power_cut_ratio = 1.0
    summary = run_chaos(cfg, args.workdir)
    print(json.dumps(summary.as_dict()) if args.json else summary.text())
    if args.negative:
        return 0 if summary.negative_caught else 1
    return 0 if summary.valid else 1


if __name__ == "__main__":
    sys.exit(main())
