"""Errors reach users as one line with the fix and the documented exit code, never a traceback.

Exit codes: 0 ok, 1 check failed, 2 usage, 3 config, 4 store, 5 link.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.errors import StoreError
from edge_agent.models import measurement
from edge_agent.store.writer import Store

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def one_line_error(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Fix: " in lines[0], output
    return lines[0]


def config(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "unit.toml"
    path.write_text(f'[unit]\nid = "mmu-1"\n{body}', encoding="utf-8")
    return path


def a_store(path: Path, readings: int = 300) -> bytes:
    with Store(path, "mmu-1") as store:  # one commit: pages enough to truncate
        store.append("ox", [measurement("spo2", 97.0)] * readings).result()
    return path.read_bytes()


def test_db_stats_with_a_wrong_store_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "var" / "unit.db"
    cfg = config(tmp_path, f'[store]\npath = "{missing}"\n')
    for command in (["db", "stats"], ["sync", "status"], ["sync", "now"]):
        result = runner.invoke(app, [*command, "--config", str(cfg)])
        assert result.exit_code == 4, result.output
        line = one_line_error(result.output)
        assert f"no store at {missing}" in line and "[store] path" in line
        result = runner.invoke(app, [*command, "--db", str(missing)])
        assert result.exit_code == 4 and f"no store at {missing}" in result.output
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header"])
def test_db_stats_on_a_damaged_store_is_a_store_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "unit.db"
    good = a_store(path)
    if damage == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        path.write_bytes(b"not SQLite at all" + good[17:])
    damaged = path.read_bytes()
    result = runner.invoke(app, ["db", "stats", "--db", str(path)])
    assert result.exit_code == 4, result.output
    line = one_line_error(result.output)
    assert "cannot read the store" in line and "backup" in line
    assert path.read_bytes() == damaged


def test_damaged_store_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    good = a_store(path)
    path.write_bytes(good[: len(good) // 2])
    proc = cli("db", "stats", "--db", str(path))
    assert proc.returncode == 4
    assert "cannot read the store" in one_line_error(proc.stderr)


def test_an_unwritable_store_folder_is_a_store_error(tmp_path: Path) -> None:
    # A folder in the path that is a file: unwritable for every user, root included.
    blocker = tmp_path / "var"
    blocker.write_text("")
    cfg = config(tmp_path, f'[store]\npath = "{blocker}/lib/unit.db"\n')
    proc = cli("run", "--config", str(cfg))
    assert proc.returncode == 4, proc.stderr
    line = one_line_error(proc.stderr)
    assert "cannot create the store" in line and "[store] path" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_store_folder_is_a_store_error(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    folder.mkdir(mode=0o555)
    cfg = config(tmp_path, f'[store]\npath = "{folder}/unit.db"\n')
    proc = cli("run", "--config", str(cfg))
    assert proc.returncode == 4, proc.stderr
    assert "agent's user" in one_line_error(proc.stderr)


def test_a_config_path_that_is_a_folder_or_not_utf8(tmp_path: Path) -> None:
    proc = cli("db", "stats", "--config", str(tmp_path))
    assert proc.returncode == 3
    assert "is a directory" in one_line_error(proc.stderr)
    latin1 = tmp_path / "unit.toml"
    latin1.write_bytes('[unit]\nid = "mmu-1"\n# unité mobile\n'.encode("latin-1"))
    result = runner.invoke(app, ["db", "stats", "--config", str(latin1)])
    assert result.exit_code == 3
    assert "not UTF-8" in one_line_error(result.output)


def test_a_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    proc = cli("db", "stats", "--config", str(cfg), env={"EDGE_AGENT_STORE__GROUP_MAX": "lots"})
    assert proc.returncode == 3
    line = one_line_error(proc.stderr)
    assert line.startswith("error: environment variable EDGE_AGENT_STORE__GROUP_MAX: ")
    assert "unset EDGE_AGENT_STORE__GROUP_MAX" in line and str(cfg) not in line


def test_run_with_an_unknown_device_kind_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f'[store]\npath = "{tmp_path}/unit.db"\n'
        '[[devices]]\nid = "ox"\nkind = "nonin"\nport = "/dev/null"\n'
        '[[devices]]\nid = "bp"\nkind = "blood-pressure"\naddress = "C0:FF:EE:00:10:01"\n',
    )
    proc = cli("run", "--config", str(cfg))
    assert proc.returncode == 3, proc.stderr
    line = one_line_error(proc.stderr)
    assert f"{cfg}: devices[1] 'bp'.kind: unknown device kind 'blood-pressure'" in line
    assert 'did you mean "ble-blood-pressure"' in line
    assert not (tmp_path / "unit.db").exists()


def test_run_on_a_damaged_store_quarantines_it_and_keeps_running(tmp_path: Path) -> None:
    """The unit must keep acquiring: the damaged file is moved aside (never deleted), a new
    store takes its place, and no traceback reaches the technician."""
    import signal
    import time

    store = tmp_path / "unit.db"
    damaged = os.urandom(8192)
    store.write_bytes(damaged)
    cfg = config(tmp_path, f'[store]\npath = "{store}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("unit.db.corrupt-*")) or not store.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no quarantine within 30 s"
            time.sleep(0.05)
        with Store(store, "mmu-01") as fresh:  # a working store is in place
            assert fresh.stats()["readings_total"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    (quarantined,) = [
        p
        for p in tmp_path.glob("unit.db.corrupt-*")
        if p.suffix != ".db-wal" and not p.name.endswith(("-wal", "-shm"))
    ]
    assert quarantined.read_bytes() == damaged


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (PermissionError(13, "Permission denied", "/var/lib/edge-agent"), "agent's user"),
        (sqlite3.OperationalError("unable to open database file"), "folder is writable"),
    ],
)
def test_store_open_errors_become_store_errors(error: Exception, says: str) -> None:
    # What a read-only folder gives a non-root user (the test above is skipped for root).
    from edge_agent.cli.service import open_store

    def make() -> Store:
        raise error

    with pytest.raises(StoreError, match=says) as info:
        open_store(make, Path("/var/lib/edge-agent/unit.db"))
    assert info.value.exit_code == 4 and "Fix: " in str(info.value)
