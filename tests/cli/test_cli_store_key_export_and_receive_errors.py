"""Store keys, `db keygen`/`db encrypt`, `receive` and `central export` with bad inputs, as real
processes: one line naming the fix, the documented exit code (2 usage, 3 config, 4 store),
never a traceback; and what the nurse reads of a store its key does not open, in French, Arabic
and English."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.i18n import translator
from edge_agent.store.recovery import lock_path
from edge_agent.store.writer import Store

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """No unit config unless given (the default one points at a file that is not there)."""
    env = {**os.environ, "EDGE_AGENT_CONFIG": str(home / "absent.toml")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def one_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, out.stderr
    return errors[0]


def plain_store(path: Path) -> Path:
    with Store(path, "u1"):
        pass
    return path


def unit_config(tmp_path: Path, extra: str = "", store: str = "") -> Path:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'[unit]\nid = "u1"\n[store]\npath = "{tmp_path / "u.db"}"\n{store}{extra}',
        encoding="utf-8",
    )
    return config


def keyed(tmp_path: Path, key: Path) -> str:  # the [store] lines of an encrypted store
    return f'encryption = "sqlcipher"\nkey_file = "{key}"\n'


# --- what the nurse reads -------------------------------------------------------------------
def store_tile(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert "Traceback" not in out.stderr and out.returncode == 1, out.stderr
    tiles: dict[str, dict[str, str]] = {t["key"]: t for t in json.loads(out.stdout)["tiles"]}
    return tiles["store"]


@pytest.mark.parametrize("lang", ["fr", "ar", "en"])
def test_the_nurse_reads_a_wrong_store_key_in_her_language(tmp_path: Path, lang: str) -> None:
    plain_store(tmp_path / "u.db")
    assert cli("db", "keygen", "--out", str(tmp_path / "k1"), home=tmp_path).returncode == 0
    assert cli("db", "keygen", "--out", str(tmp_path / "k2"), home=tmp_path).returncode == 0
    config = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "k1"))
    assert cli("db", "encrypt", "-c", str(config), home=tmp_path).returncode == 0
    config = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "k2"))
    tile = store_tile(cli("status", "-c", str(config), "--lang", lang, "--json", home=tmp_path))
    tr = translator(lang)
    assert tile["status"] == "fail"
    assert (tile["detail"], tile["fix"]) == (tr("store.wrong_key"), tr("store.wrong_key.fix"))
    assert tr.has("store.wrong_key") and tr.has("store.wrong_key.fix")  # not the bare key


def test_the_nurse_reads_a_store_not_encrypted_and_a_missing_key(tmp_path: Path) -> None:
    plain_store(tmp_path / "u.db")
    assert cli("db", "keygen", "--out", str(tmp_path / "k1"), home=tmp_path).returncode == 0
    config = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "k1"))
    tile = store_tile(cli("status", "-c", str(config), "--json", home=tmp_path))
    tr = translator("fr")
    assert (tile["detail"], tile["fix"]) == (
        tr("store.not_encrypted"),
        tr("store.not_encrypted.fix"),
    )
    assert cli("db", "encrypt", "-c", str(config), home=tmp_path).returncode == 0
    config = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "gone.key"))
    tile = store_tile(cli("status", "-c", str(config), "--json", home=tmp_path))
    assert (tile["detail"], tile["fix"]) == (tr("store.key_missing"), tr("store.key_missing.fix"))
    assert all(
        tr.has(k)
        for k in (
            "store.not_encrypted",
            "store.not_encrypted.fix",
            "store.key_missing",
            "store.key_missing.fix",
        )
    )


# --- technicians' commands ------------------------------------------------------------------
def test_receive_refuses_a_files_dir_it_cannot_write_at_start(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = cli(
        "receive",
        "--db",
        "postgresql://x@127.0.0.1:1/db",
        "--broker",
        "127.0.0.1:1",
        "--files-dir",
        str(a_file / "files"),
        home=tmp_path,
    )
    line = one_line(out, 2)
    assert "--files-dir" in line and "writable folder" in line
    beside = tmp_path / "central.db"
    (tmp_path / "central.files").write_text("")  # where the files of central.db would go
    line = one_line(
        cli("receive", "--db", str(beside), "--broker", "127.0.0.1:1", home=tmp_path), 2
    )
    assert "central.files" in line and "--no-files" in line


def test_keygen_refuses_a_bad_out_as_a_usage_error(tmp_path: Path) -> None:
    key = tmp_path / "k"
    assert cli("db", "keygen", "--out", str(key), home=tmp_path).returncode == 0
    assert "choose another --out" in one_line(
        cli("db", "keygen", "--out", str(key), home=tmp_path), 2
    )
    line = one_line(cli("db", "keygen", "--out", str(key / "sub"), home=tmp_path), 2)
    assert "writable folder" in line


def test_central_export_receive_and_db_encrypt_bad_inputs_give_one_line(tmp_path: Path) -> None:
    from sync.central.store import opened

    central = tmp_path / "central.db"
    with opened(central):
        pass
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases: list[tuple[list[str], int, str]] = [
        (
            ["central", "export", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")],
            4,
            "no central store",
        ),
        (
            ["central", "export", "--db", str(tmp_path), "--out", str(tmp_path / "o")],
            4,
            "no central store",
        ),
        (
            [
                "central",
                "export",
                "--since",
                "nonsense",
                "--db",
                str(central),
                "--out",
                str(tmp_path / "o"),
            ],
            2,
            "ISO 8601",
        ),
        (
            ["central", "export", "--db", str(central), "--out", str(a_file / "o")],
            2,
            "writable folder",
        ),
        (
            ["receive", "--db", "postgresql://x@127.0.0.1:1/db", "--broker", "127.0.0.1:1"],
            2,
            "--files-dir",
        ),
        (["db", "encrypt", "--db", str(tmp_path / "u.db")], 3, "db keygen"),
    ]
    for args, code, words in cases:
        assert words in one_line(cli(*args, home=tmp_path), code), args
    bogus = unit_config(tmp_path, '[files]\nmode = "bogus"\n')
    assert "files.mode" in one_line(cli("db", "stats", "-c", str(bogus), home=tmp_path), 3)
    clock = unit_config(
        tmp_path,
        '[[devices]]\nid = "ox"\nkind = "hl7_mllp"\n'
        'listen = "127.0.0.1:2575"\nclock_offset = "nonsense"\n',
    )
    assert "clock_offset" in one_line(cli("config", "validate", "-c", str(clock), home=tmp_path), 3)
    nurse = cli("status", "-c", str(clock), home=tmp_path)
    assert nurse.returncode == 3 and "Traceback" not in nurse.stderr
    assert "clock_offset" in nurse.stderr
    plain_store(tmp_path / "u.db")
    assert cli("db", "keygen", "--out", str(tmp_path / "k"), home=tmp_path).returncode == 0
    config = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "k"))
    fd = os.open(lock_path(tmp_path / "u.db"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running agent holds it
        assert "stop the agent" in one_line(
            cli("db", "encrypt", "-c", str(config), home=tmp_path), 4
        )
    finally:
        os.close(fd)
    assert cli("db", "encrypt", "-c", str(config), home=tmp_path).returncode == 0
    assert "needs no edge-agent db encrypt" in one_line(
        cli("db", "encrypt", "-c", str(config), home=tmp_path), 4
    )
    missing = unit_config(tmp_path, store=keyed(tmp_path, tmp_path / "gone.key"))
    assert "db keygen" in one_line(cli("db", "stats", "-c", str(missing), home=tmp_path), 3)
