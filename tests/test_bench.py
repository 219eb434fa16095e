"""scripts/bench: the JSON it prints has the promised shape (never its speed), Ctrl-C stops
everything it started, and the pure table/target logic marks targets met or missed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench"


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    # The wrapper uses this checkout's .venv, else python3 on PATH: make that this Python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.broker
def test_quick_json_is_one_object_with_every_figure_beside_its_baseline() -> None:
    proc = subprocess.Popen(
        [str(BENCH), "help", "drain", "--quick", "--scale", "0.005", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench_env(),
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None:  # note every process it starts, to check they are gone
            seen |= descendants(proc.pid)
            assert time.monotonic() < deadline, "bench --quick took over 300 s"
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-2000:]
        assert [command(p) for p in seen if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    result = json.loads(stdout)  # exactly one JSON object: anything else fails to parse
    assert isinstance(result, dict)
    assert result["errors"] == {}
    assert result["quick"] is True and result["scale"] == 0.005
    assert set(result["figures"]) == {"help", "drain"}
    drain = result["figures"]["drain"]
    for key in (
        "readings_per_s",
        "naive_readings_per_s",
        "batched_readings_per_s",
        "ratio_naive",
        "ratio_batched",
        "no_alerts_readings_per_s",
        "alerts_cost",
        "drain_10k_readings_per_s",
        "stop_and_wait_readings_per_s",
        "ratio_stop_and_wait",
    ):
        assert isinstance(drain[key], int | float), key
    assert drain["readings"] == 500 and drain["alert_share"] == 0.03
    assert drain["readings_per_s"] > 0 and drain["naive_readings_per_s"] > 0
    assert isinstance(result["figures"]["help"]["help_overhead_ms"], int | float)
    targets = {(t["figure"], t["metric"]): t for t in result["targets"]}
    assert set(targets) == {
        ("drain", "ratio_naive"),
        ("drain", "ratio_batched"),
        ("drain", "ratio_stop_and_wait"),
        ("drain", "alerts_cost"),
        ("help", "help_overhead_ms"),
    }
    assert all(isinstance(t["met"], bool) for t in targets.values())


@pytest.mark.broker
def test_history_figure_has_each_measure_beside_its_baseline() -> None:
    proc = subprocess.run(
        [str(BENCH), "history", "--scale", "0.001", "--json"],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["errors"] == {}
    history = result["figures"]["history"]
    assert history["history_readings"] == 1000 and history["readings"] == 1581
    for key in (
        "ack_ms_empty",
        "ack_ms_history",
        "empty_readings_per_s",
        "history_readings_per_s",
        "ratio_history",
        "cpu_us_per_reading",
        "ceiling_readings_per_s",
        "ratio_ceiling",
    ):
        assert isinstance(history[key], int | float) and history[key] > 0, key
    by_thread = history["cpu_us_per_reading_by_thread"]  # 10 ms ticks: few at this size
    assert all(isinstance(v, int | float) for v in by_thread.values())
    targets = {t["metric"]: t for t in result["targets"] if t["figure"] == "history"}
    assert set(targets) == {"ratio_history", "cpu_us_per_reading"}
    assert all(isinstance(t["met"], bool) for t in targets.values())


@pytest.mark.broker
def test_interrupt_stops_the_broker_and_receivers_it_started() -> None:
    """Ctrl-C stops the bench with 130 even when it was started with SIGINT ignored (as a
    background job of a non-interactive shell is, e.g. a test runner behind ``&``). The
    signal goes once the bench has said its broker and receiver run: no sleep, no race."""
    ignoring = ["bash", "-c", 'trap "" INT; exec "$0" "$@"']
    proc = subprocess.Popen(
        [*ignoring, str(BENCH), "drain", "--scale", "0.05"],
        env=bench_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ends at EOF: the bench exited before it was ready
            lines.append(line)
            if "receiver(s) subscribed" in line:
                break
        else:
            raise AssertionError(f"bench ended before it was ready: {''.join(lines)[-2000:]}")
        seen |= descendants(proc.pid)
        names = [command(p) for p in seen if alive(p)]
        assert any("mosquitto" in n for n in names) and any(" receive " in n for n in names)
        proc.send_signal(signal.SIGINT)  # to the bench only, as if its own Ctrl-C handler ran
        rest = proc.stderr.read()  # until the bench exits (the pipe closes)
        assert proc.wait(90) == 130, rest[-2000:]
        assert "interrupted" in rest
        assert [p for p in seen if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stderr is not None:
            proc.stderr.close()


def test_targets_are_marked_met_or_missed() -> None:
    figures = {
        "drain": {
            "readings_per_s": 5000,
            "naive_readings_per_s": 1000,
            "ratio_naive": 5.0,
            "batched_readings_per_s": 20000,
            "ratio_batched": 0.25,
            "alerts_cost": 0.05,
        },
        "wire": {"full_batch_bytes_per_reading": 40.5},
    }
    found = {(v["figure"], v["metric"]): v["met"] for v in report.verdicts(figures)}
    assert found[("drain", "ratio_naive")] is True  # >= includes the limit
    assert found[("drain", "ratio_batched")] is False
    assert found[("drain", "alerts_cost")] is True
    assert found[("wire", "full_batch_bytes_per_reading")] is False
    assert found[("wire", "live_bytes_per_reading")] is None  # not measured
    assert ("scale", "slowest_lag_s") not in found  # figure not run


def test_table_shows_value_beside_baseline_and_verdict() -> None:
    text = report.table(
        {
            "latency": {
                "p50_ms": 20.0,
                "commit_p50_ms": 0.5,
                "p99_ms": 30.0,
                "commit_p99_ms": 5.0,
                "ratio_p99": 6.0,
            }
        },
        {"scale": "BenchError: not done after 600 s"},
    )
    line = next(row for row in text.splitlines() if "p99" in row)
    assert "30" in line and "5" in line and "6" in line and line.endswith("MISSED")
    assert any(row.startswith("scale") and row.endswith("ERROR") for row in text.splitlines())
