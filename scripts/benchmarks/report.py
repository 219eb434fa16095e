"""Pure: the figures' table rows, the issue's targets, verdicts, and the text/JSON output.
Nothing here measures; :func:`verdicts` and :func:`table` take the measured dictionaries."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Metrics = Mapping[str, Any]
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Line:
    """One line of the table: a value beside its baseline, and the target it answers."""

    figure: str
    label: str
    value: str  # metric keys in the figure's dictionary
    baseline: str | None = None
    ratio: str | None = None
    target: tuple[str, str, float] | None = None  # (metric, op, limit)


LINES: tuple[Line, ...] = (
    Line(
        "drain",
        "agent drain, readings/s vs naive paho loop",
        "readings_per_s",
        "naive_readings_per_s",
        "ratio_naive",
        ("ratio_naive", ">=", 5.0),
    ),
    Line(
        "drain",
        "agent drain vs tight batched loop",
        "readings_per_s",
        "batched_readings_per_s",
        "ratio_batched",
        ("ratio_batched", ">=", 0.5),
    ),
    Line(
        "drain",
        "alerts cost (3% alerts vs none)",
        "readings_per_s",
        "no_alerts_readings_per_s",
        "alerts_cost",
        ("alerts_cost", "<", 0.20),
    ),
    Line(
        "drain",
        "agent drain (10% alerts) vs stop-and-wait loop (codec, batch, marking)",
        "alerts_10pct_readings_per_s",
        "stop_and_wait_readings_per_s",
        "ratio_stop_and_wait",
        ("ratio_stop_and_wait", ">=", 0.8),
    ),
    Line(
        "drain",
        "drain at 1/10 the backlog, readings/s",
        "drain_10k_readings_per_s",
        "readings_per_s",
        "drain_10k_ratio",
    ),
    Line(
        "ingest",
        "store path, 5 producers, readings/s vs raw executemany",
        "readings_per_s",
        "raw_executemany_per_s",
        "ratio_raw",
        ("ratio_raw", ">=", 0.3),
    ),
    Line("ingest", "store path, 1 producer, readings/s", "one_producer_per_s"),
    Line(
        "ingest",
        "store path, 5 producers vs 1 txn per reading (5 threads)",
        "readings_per_s",
        "raw_txn_per_reading_per_s",
        "ratio_txn_per_reading",
    ),
    Line(
        "ingest",
        "store path, 5 producers, SQLCipher vs plain store, readings/s",
        "encrypted_readings_per_s",
        "readings_per_s",
        "ratio_encrypted",
    ),
    Line("latency", "device-to-durable p50 ms vs one fsync'd commit", "p50_ms", "commit_p50_ms"),
    Line(
        "latency",
        "device-to-durable p99 ms vs one fsync'd commit",
        "p99_ms",
        "commit_p99_ms",
        "ratio_p99",
        ("ratio_p99", "<=", 3.0),
    ),
    Line(
        "wire",
        "B/reading at full batches vs 1 JSON Observation/msg",
        "full_batch_bytes_per_reading",
        "naive_bytes_per_reading",
        "ratio_naive",
        ("full_batch_bytes_per_reading", "<=", 40.0),
    ),
    Line(
        "wire",
        "B/reading at full batches vs compact binary bound",
        "full_batch_bytes_per_reading",
        "compact_bytes_per_reading",
        "ratio_compact",
    ),
    Line(
        "wire",
        "B/reading live, five simulated devices, shipped [sync], signed acks",
        "live_bytes_per_reading",
        target=("live_bytes_per_reading", "<=", 60.0),
    ),
    Line("wire", "B/reading live, up (unit to broker)", "live_up_bytes_per_reading"),
    Line("wire", "B/reading live, down (acks, PUBACKs to the unit)", "live_down_bytes_per_reading"),
    Line(
        "help",
        "--help ms over bare python",
        "help_overhead_ms",
        "python_ms",
        target=("help_overhead_ms", "<=", 100.0),
    ),
    Line(
        "footprint",
        "--help ms over bare python",
        "help_overhead_ms",
        "python_ms",
        target=("help_overhead_ms", "<=", 100.0),
    ),
    Line("footprint", "RSS MB of run, five devices", "rss_mb", target=("rss_mb", "<=", 60.0)),
    Line(
        "footprint",
        "idle CPU % of run, no devices",
        "idle_cpu_percent",
        target=("idle_cpu_percent", "<=", 0.1),
    ),
    Line(
        "footprint",
        "CPU ms/reading of run vs naive loop",
        "cpu_ms_per_reading",
        "naive_cpu_ms_per_reading",
        "ratio_cpu_naive",
        ("ratio_cpu_naive", "<=", 2.0),
    ),
    Line(
        "slowlink",
        "drain s at 64 kbit/s vs the bytes' own time",
        "seconds",
        "bytes_seconds",
        "ratio_bytes_time",
        ("ratio_bytes_time", "<=", 1.2),
    ),
    Line(
        "history",
        "one ack ms, store with history vs without",
        "ack_ms_history",
        "ack_ms_empty",
        "ratio_ack",
    ),
    Line(
        "history",
        "drain readings/s, store with history vs without",
        "history_readings_per_s",
        "empty_readings_per_s",
        "ratio_history",
        ("ratio_history", ">=", 0.9),
    ),
    Line(
        "history",
        "agent CPU us/reading drained, with history vs without",
        "cpu_us_per_reading",
        "empty_cpu_us_per_reading",
        target=("cpu_us_per_reading", "<=", 60.0),
    ),
    Line(
        "history",
        "agent ceiling readings/s (central acks, stores nothing)",
        "ceiling_readings_per_s",
        "history_readings_per_s",
        "ratio_ceiling",
    ),
    Line("scale", "central readings/s, many units, 2 receivers", "central_readings_per_s"),
    Line(
        "scale",
        "slowest unit's lag s (backlog fully acked)",
        "slowest_lag_s",
        "fastest_s",
        target=("slowest_lag_s", "<=", 10.0),
    ),
    Line(
        "central",
        "PostgreSQL central vs SQLite central, readings/s",
        "postgres_readings_per_s",
        "sqlite_readings_per_s",
        "ratio",
        ("ratio", ">=", 1.0),
    ),
    Line("central", "PostgreSQL server CPU s per 100k readings", "postgres_server_cpu_s_per_100k"),
    Line(
        "storm",
        "reconnect storm: central readings/s, 2 receivers, PostgreSQL",
        "central_readings_per_s",
    ),
    Line(
        "storm",
        "reconnect storm: slowest unit's backlog acked, s",
        "slowest_unit_s",
        "fastest_unit_s",
    ),
)


def verdicts(figures: Mapping[str, Metrics]) -> list[dict[str, Any]]:
    """Every target of a measured figure: its value and whether it is met."""
    out = []
    for line in LINES:
        metrics = figures.get(line.figure)
        if line.target is None or metrics is None:
            continue
        metric, op, limit = line.target
        value = metrics.get(metric)
        met = None if value is None else OPS[op](float(value), limit)
        out.append(
            {
                "figure": line.figure,
                "metric": metric,
                "op": op,
                "limit": limit,
                "value": value,
                "met": met,
            }
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(figures: Mapping[str, Metrics], errors: Mapping[str, str]) -> str:
    header = ("figure", "measure", "value", "baseline", "ratio", "target", "")
    rows: list[tuple[str, ...]] = []
    for line in LINES:
        metrics = figures.get(line.figure)
        if metrics is None:
            continue
        target, verdict = "", ""
        if line.target is not None:
            metric, op, limit = line.target
            target = f"{metric} {op} {limit:g}"
            value = metrics.get(metric)
            verdict = (
                "-" if value is None else ("met" if OPS[op](float(value), limit) else "MISSED")
            )
        rows.append(
            (
                line.figure,
                line.label,
                _fmt(metrics.get(line.value)),
                _fmt(metrics.get(line.baseline)) if line.baseline else "",
                _fmt(metrics.get(line.ratio)) if line.ratio else "",
                target,
                verdict,
            )
        )
    for name, message in errors.items():
        rows.append((name, f"not measured: {message}", "", "", "", "", "ERROR"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text = [
        " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def as_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, sort_keys=False)
