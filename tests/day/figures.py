"""The figures of a van's day (:mod:`tests.day.van`), pure: samples in, figures, verdict and
table out (no clock, no I/O).

Every figure is printed beside its own baseline from the same run: offline against online.
Goals (the day reports FAIL when one is missed): readings stored per second while offline at
least 95 % of the online rate; event-loop lag p99 at most 100 ms; console ``/live`` p99 at
most 500 ms; the console and ``edge-agent status`` say offline at most 10 s after the link is
lost. CPU and the backlog's drain time have no goal: they are reported.

A sample taken while the agent does not answer its heartbeat counts as a lag of
:data:`NOT_ANSWERING_MS` (a frozen loop has no figures of its own to give).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

Link = Literal["online", "offline"]

RATE_GOAL: Final = 0.95  # offline readings/s over online readings/s, at least
LAG_P99_GOAL_MS: Final = 100.0
LIVE_P99_GOAL_MS: Final = 500.0
DETECT_GOAL_S: Final = 10.0
NOT_ANSWERING_MS: Final = 2000.0  # the heartbeat's timeout: a sample of a frozen loop


def p99(values: Iterable[float]) -> float | None:
    """The 99th percentile (nearest rank); None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Window:
    """A stretch of the day with the link in one state: the streaming devices' readings
    stored and the agent's CPU seconds over its wall seconds."""

    link: Link
    seconds: float
    readings: int
    cpu_s: float


@dataclass(frozen=True)
class Sample:
    link: Link
    value_ms: float


@dataclass
class Split:
    """One figure, offline beside its online baseline."""

    offline: float | None
    online: float | None

    def ratio(self) -> float | None:
        if self.offline is None or not self.online:
            return None
        return self.offline / self.online


def rates(windows: Sequence[Window]) -> Split:
    """Readings stored per second, offline and online."""
    return Split(*(_per_second(windows, link, "readings") for link in ("offline", "online")))


def cpu(windows: Sequence[Window]) -> Split:
    """The agent's CPU, % of one core, offline and online."""
    split = [_per_second(windows, link, "cpu_s") for link in ("offline", "online")]
    return Split(*(None if v is None else 100.0 * v for v in split))


def _per_second(windows: Sequence[Window], link: Link, what: str) -> float | None:
    chosen = [w for w in windows if w.link == link]
    seconds = sum(w.seconds for w in chosen)
    if seconds <= 0:
        return None
    return float(sum(getattr(w, what) for w in chosen)) / seconds


def split_p99(samples: Sequence[Sample]) -> Split:
    return Split(
        p99(s.value_ms for s in samples if s.link == "offline"),
        p99(s.value_ms for s in samples if s.link == "online"),
    )


@dataclass
class Witnessed:
    """What the external witnesses saw against what the unit and central hold."""

    sent: int = 0  # readings the devices sent (decoded from their own bytes, HL7 acked)
    lost: int = 0  # sent (acknowledged) and not at central
    duplicated: int = 0  # at central (or in the unit's store) more than the device sent it
    unexpected: int = 0  # stored but never sent by any device
    seq_gaps: int = 0  # holes in central's sequence numbers of the unit
    unsent: int = 0  # still unsent in the unit's store after the drain
    files_dropped: int = 0
    files_lost: int = 0  # dropped in the watched folder, not in central's object store
    notes: list[str] = field(default_factory=list)  # the first discrepancies, no patient data

    @property
    def exactly_once(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.seq_gaps
            or self.unsent
            or self.files_lost
        )


def multiset_diff(sent: Iterable[Any], stored: Iterable[Any]) -> tuple[int, int]:
    """(missing, extra): what was sent and is not stored, what is stored beyond what was
    sent (a duplicate, or something never sent)."""
    a, b = Counter(sent), Counter(stored)
    return sum((a - b).values()), sum((b - a).values())


def exactly_once(unit: Mapping[str, int], central: Sequence[tuple[str, int]]) -> Witnessed:
    """The unit's readings (id -> seq) against central's rows (id, seq): every reading at
    central exactly once under its own seq, seqs contiguous from 1."""
    out = Witnessed()
    ids = Counter(i for i, _ in central)
    out.duplicated += sum(n - 1 for n in ids.values() if n > 1)
    held = dict(central)
    out.lost += sum(1 for i in unit if i not in held)
    out.unexpected += sum(1 for i in held if i not in unit)
    out.duplicated += sum(1 for i, s in held.items() if i in unit and unit[i] != s)
    seqs = sorted({s for _, s in central})
    out.seq_gaps = (seqs[-1] - len(seqs)) if seqs else 0
    return out


@dataclass
class DayFigures:
    minutes: float
    negative: str | None
    keepalive_s: int
    readings_per_s: Split
    loop_lag_p99_ms: Split
    live_p99_ms: Split
    cpu_percent: Split
    console_offline_s: list[float]  # per link loss: seconds until /live said offline
    status_offline_s: list[float]  # ... until `edge-agent status` said offline
    drain_s: list[float]  # per link return: seconds until what was stored before it was sent
    reconnect_s: list[float]  # per link return: seconds until the agent said connected
    agent_loop: dict[str, Any] | None  # the agent's own figures at the end (p99, max, stalls)
    witnessed: Witnessed
    readings_total: int = 0
    by_device: dict[str, int] = field(default_factory=dict)
    nurse_actions: dict[str, int] = field(default_factory=dict)
    live_polls: int = 0
    link_losses: int = 0
    detections_missed: int = 0  # link losses the console or status never reported
    faults: list[str] = field(default_factory=list)

    def goals(self) -> dict[str, bool]:
        ratio = self.readings_per_s.ratio()
        detections = self.console_offline_s + self.status_offline_s
        return {
            "offline_rate": ratio is not None and ratio >= RATE_GOAL,
            "loop_lag": _within(self.loop_lag_p99_ms, LAG_P99_GOAL_MS),
            "console_live": _within(self.live_p99_ms, LIVE_P99_GOAL_MS),
            "offline_detected": (
                not self.detections_missed and bool(detections) and max(detections) <= DETECT_GOAL_S
            ),
            "exactly_once": self.witnessed.exactly_once,
        }

    @property
    def passed(self) -> bool:
        return all(self.goals().values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["readings_per_s"]["ratio"] = self.readings_per_s.ratio()
        out["goals"] = self.goals()
        out["exactly_once"] = self.witnessed.exactly_once
        out["verdict"] = "PASS" if self.passed else "FAIL"
        return out

    def text(self) -> str:
        g = self.goals()
        ok = {True: "ok", False: "MISSED"}
        rate = self.readings_per_s
        ratio = rate.ratio()
        rows = [
            ("figure", "offline", "online (baseline)", "goal", ""),
            (
                "readings stored /s (streaming devices)",
                _f(rate.offline, 2),
                _f(rate.online, 2),
                f"ratio >= {RATE_GOAL} (is {_f(ratio, 3)})",
                ok[g["offline_rate"]],
            ),
            (
                "event-loop lag p99 (ms)",
                _f(self.loop_lag_p99_ms.offline, 1),
                _f(self.loop_lag_p99_ms.online, 1),
                f"<= {LAG_P99_GOAL_MS:.0f}",
                ok[g["loop_lag"]],
            ),
            (
                "console /live p99 (ms)",
                _f(self.live_p99_ms.offline, 1),
                _f(self.live_p99_ms.online, 1),
                f"<= {LIVE_P99_GOAL_MS:.0f}",
                ok[g["console_live"]],
            ),
            (
                "agent CPU (% of a core)",
                _f(self.cpu_percent.offline, 1),
                _f(self.cpu_percent.online, 1),
                "-",
                "",
            ),
            (
                "link loss -> console offline (s)",
                _span(self.console_offline_s),
                "-",
                f"<= {DETECT_GOAL_S:.0f}",
                ok[g["offline_detected"]],
            ),
            (
                "link loss -> `status` offline (s)",
                _span(self.status_offline_s),
                "-",
                f"<= {DETECT_GOAL_S:.0f}",
                ok[g["offline_detected"]],
            ),
            ("link return -> reconnected (s)", "-", _span(self.reconnect_s), "-", ""),
            ("link return -> backlog drained (s)", "-", _span(self.drain_s), "-", ""),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            f"a van's day: {self.minutes:g} min, {self.link_losses} link losses "
            f"({', '.join(self.faults)}), keepalive {self.keepalive_s} s"
            + (f", negative control: {self.negative}" if self.negative else "")
        ]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        w = self.witnessed
        loop = self.agent_loop or {}
        lines.append(
            "the agent's loop figures in its last heartbeat answer: "
            f"p99 {loop.get('p99_ms', '-')} ms, "
            f"max {loop.get('max_ms', '-')} ms, stalls {loop.get('stalls', '-')}"
        )
        lines.append(
            f"readings: {self.readings_total} stored ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.by_device.items()))
            + ")"
        )
        lines.append(
            "nurses: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.nurse_actions.items()))
            + f"; /live polls {self.live_polls}"
        )
        lines.append(
            f"witness: {w.sent} readings sent by the devices; lost {w.lost}, duplicated "
            f"{w.duplicated}, unexpected {w.unexpected}, seq gaps {w.seq_gaps}, unsent "
            f"{w.unsent}; files dropped {w.files_dropped}, lost {w.files_lost} "
            f"-> {'exactly once' if w.exactly_once else 'NOT exactly once'}"
        )
        lines += [f"  {n}" for n in w.notes]
        if self.detections_missed:
            lines.append(f"link losses never reported offline: {self.detections_missed}")
        lines.append(
            "verdict: "
            + (
                "PASS"
                if self.passed
                else "FAIL (" + ", ".join(k for k, v in g.items() if not v) + ")"
            )
        )
        return "\n".join(lines)


def _within(split: Split, goal: float) -> bool:
    values = [v for v in (split.offline, split.online) if v is not None]
    return bool(values) and max(values) <= goal


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _span(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"max {max(values):.1f} (n={len(values)}, min {min(values):.1f})"
