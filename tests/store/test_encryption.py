"""The store encrypted at rest with SQLCipher, on real files: the real Store, its readers,
recovery, ``db encrypt``, the key file's checks, the CLI and the sync path.

These tests need the SQLCipher binding (extra ``encryption``, installed by scripts/setup): they
are not skipped when it is missing, they fail (CI must run them)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError, StoreError
from edge_agent.models import measurement
from edge_agent.settings import (
    BrokerSettings,
    Settings,
    StoreSettings,
    SyncSettings,
    UnitSettings,
)
from edge_agent.store import connect as store_connect
from edge_agent.store import key as store_key
from edge_agent.store.encrypt import encrypt_store
from edge_agent.store.read import reading
from edge_agent.store.recovery import quarantined_files
from edge_agent.store.writer import Store, read_stats
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until

CANARY = "dev-CANARY-7f3a9"  # a device id: stored as text in every reading row
UNIT = "mmu-enc"


@pytest.fixture
def registry() -> Iterator[list[Path]]:
    """Stores registered with store_connect in a test are forgotten after it."""
    paths: list[Path] = []
    yield paths
    for p in paths:
        store_connect.forget(p)


def keyfile(folder: Path, name: str = "store.key") -> Path:
    out = folder / name
    store_key.write_key_file(out)
    return out


def encrypt_with(registry: list[Path], db: Path, key_file: Path, config: str = "t.toml") -> None:
    store_connect.configure(
        db, StoreSettings(path=db, encryption="sqlcipher", key_file=key_file), config
    )
    registry.append(db)


def fill(store: Store, n: int, device: str = CANARY) -> None:
    store.append(device, [measurement("spo2", 90.0 + i % 10) for i in range(n)]).result(10)


def all_bytes(db: Path) -> bytes:
    """The store's file and its WAL and shared-memory files."""
    files = [db.with_name(db.name + s) for s in ("", "-wal", "-shm")]
    return b"".join(p.read_bytes() for p in files if p.is_file())


def digest(db: Path) -> str:
    return hashlib.sha256(all_bytes(db)).hexdigest()


# --- the store ------------------------------------------------------------------------------
def test_round_trip_through_the_store_and_no_plaintext_on_disk(
    tmp_path: Path, registry: list[Path]
) -> None:
    db = tmp_path / "unit.db"
    encrypt_with(registry, db, keyfile(tmp_path))
    with Store(db, UNIT) as store:
        fill(store, 50)
        assert store.read(lambda d: d.execute("SELECT count(*) FROM readings").fetchone()[0]) == 50
        while_open = all_bytes(db)  # the main file and its WAL, as the agent runs
    with Store(db, UNIT) as store:
        fill(store, 10)
        rows = store.read(
            lambda d: d.execute("SELECT device_id, value FROM readings ORDER BY seq").fetchall()
        )
    assert len(rows) == 60 and {r[0] for r in rows} == {CANARY}
    assert [r[1] for r in rows[:10]] == [90.0 + i for i in range(10)]
    assert read_stats(db)["readings_total"] == 60  # the CLI's read-only path
    for data in (while_open, all_bytes(db)):
        assert CANARY.encode() not in data
        assert b"SQLite format 3" not in data
        assert b"CREATE TABLE" not in data


def test_a_wrong_key_is_a_store_error_and_nothing_is_quarantined(
    tmp_path: Path, registry: list[Path]
) -> None:
    db = tmp_path / "unit.db"
    encrypt_with(registry, db, keyfile(tmp_path))
    with Store(db, UNIT) as store:
        fill(store, 5)
    before = digest(db)
    encrypt_with(registry, db, keyfile(tmp_path, "other.key"))
    with pytest.raises(StoreError) as err:
        Store(db, UNIT)
    assert err.value.key == "store.wrong_key"
    assert "the store key does not open this store" in str(err.value)
    with pytest.raises(StoreError, match="the store key does not open this store"):
        read_stats(db)
    # the CLI's view without a key (encryption = "off"): refused with the hint
    store_connect.forget(db)
    with pytest.raises(StoreError, match="if this store is encrypted"):
        read_stats(db)
    assert quarantined_files(db) == []
    assert not list(tmp_path.glob("unit.db.corrupt-*"))
    assert digest(db) == before  # not a byte changed


def test_without_a_key_an_encrypted_store_is_moved_aside_never_deleted(
    tmp_path: Path, registry: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """encryption = "off" on an encrypted store: it cannot be told from random bytes, so it is
    handled as damage (the unit keeps acquiring), the file kept whole with a hint in the log."""
    db = tmp_path / "unit.db"
    encrypt_with(registry, db, keyfile(tmp_path))
    with Store(db, UNIT) as store:
        fill(store, 5)
    before = db.read_bytes()
    store_connect.forget(db)
    with caplog.at_level(logging.WARNING), Store(db, UNIT) as store:
        assert store.stats()["readings_total"] == 0
    [moved] = quarantined_files(db)
    assert moved.read_bytes() == before
    assert any("if this store is encrypted" in r.getMessage() for r in caplog.records)


def test_a_plain_store_with_a_key_configured_is_refused_not_quarantined(
    tmp_path: Path, registry: list[Path]
) -> None:
    db = tmp_path / "unit.db"
    with Store(db, UNIT) as store:
        fill(store, 3)
    encrypt_with(registry, db, keyfile(tmp_path))
    with pytest.raises(StoreError) as err:
        Store(db, UNIT)
    assert err.value.key == "store.not_encrypted" and "db encrypt" in str(err.value)
    assert quarantined_files(db) == []


def test_a_damaged_encrypted_page_is_still_recovered(tmp_path: Path, registry: list[Path]) -> None:
    """Only a first page that does not decrypt is taken for a key problem; damage elsewhere
    in an encrypted store is recovered as in a plain one (quarantine, salvage)."""
    db = tmp_path / "unit.db"
    encrypt_with(registry, db, keyfile(tmp_path))
    with Store(db, UNIT) as store:
        fill(store, 2000)
    size = db.stat().st_size
    with open(db, "r+b") as f:  # garble one page in the middle (an HMAC failure there)
        f.seek((size // 4096 // 2) * 4096 + 100)
        f.write(b"\x55" * 200)
    with Store(db, UNIT) as store:
        assert store.prepared.recovery is not None
        salvaged = store.stats()["readings_total"]
    assert 0 < salvaged <= 2000  # read from the quarantined (encrypted) file, with the key
    assert len(quarantined_files(db)) == 1


# --- the key --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = keyfile(tmp_path)
    os.chmod(key, mode)
    settings = StoreSettings(encryption="sqlcipher", key_file=key)
    with pytest.raises(ConfigError) as err:
        store_key.resolve_key(settings, "/etc/edge-agent/edge-agent.toml", environ={})
    assert str(key) in str(err.value) and f"{mode:04o}" in str(err.value)
    assert err.value.fix.startswith(f"chmod 0600 {key}")


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_is_read(tmp_path: Path, mode: int) -> None:
    key = keyfile(tmp_path)
    os.chmod(key, mode)
    got = store_key.resolve_key(
        StoreSettings(encryption="sqlcipher", key_file=key), "c", environ={}
    )
    assert got is not None and got.raw.hex() == key.read_text().strip()
    assert got.raw.hex() not in repr(got)  # never in a log line or a traceback's locals


def test_key_owner_and_mode_rules() -> None:
    assert store_key.mode_problem(0o100600, 1000, 1000) is None
    assert store_key.mode_problem(0o100400, 1000, 1000) is None
    assert "owned by uid 0" in (store_key.mode_problem(0o100600, 0, 1000) or "")
    assert "0660" in (store_key.mode_problem(0o100660, 1000, 1000) or "")


def test_the_systemd_credential_wins_over_the_key_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    cred = keyfile(creds, "store-key")
    settings = StoreSettings(encryption="sqlcipher", key_file=tmp_path / "absent.key")
    got = store_key.resolve_key(settings, "c", environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert got is not None and got.source == str(cred)
    with pytest.raises(ConfigError, match="no key file at"):
        store_key.resolve_key(settings, "c", environ={})


def test_encryption_off_needs_no_key(tmp_path: Path) -> None:
    assert store_key.resolve_key(StoreSettings(key_file=tmp_path / "none"), "c", {}) is None


def test_a_missing_binding_refuses_or_falls_back_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The binding is installed here: its import is made to fail (sys.modules entry None).
    monkeypatch.setitem(sys.modules, "sqlcipher3", None)
    monkeypatch.setitem(sys.modules, "sqlcipher3.dbapi2", None)
    settings = StoreSettings(encryption="sqlcipher", key_file=keyfile(tmp_path))
    with pytest.raises(ConfigError) as err:
        store_key.resolve_key(settings, "/etc/edge-agent/edge-agent.toml", {})
    assert "binding (sqlcipher3) is missing" in str(err.value)
    assert "pip install" in err.value.fix and 'encryption = "off"' in err.value.fix
    assert "\n" not in str(err.value)
    fallback = settings.model_copy(update={"allow_unencrypted_fallback": True})
    with caplog.at_level(logging.WARNING, logger="edge_agent.store.key"):
        assert store_key.resolve_key(fallback, "fallback.toml", {}) is None
        assert store_key.resolve_key(fallback, "fallback.toml", {}) is None
    warnings = [r for r in caplog.records if "NOT encrypted" in r.getMessage()]
    assert len(warnings) == 1


# --- db encrypt -----------------------------------------------------------------------------
def test_db_encrypt_keeps_every_reading(tmp_path: Path, registry: list[Path]) -> None:
    db = tmp_path / "unit.db"
    with Store(db, UNIT) as store:
        fill(store, 300)
        store.call(lambda d: d.execute("UPDATE readings SET sent_at = 'x' WHERE seq <= 100"))
        before = store.read(
            lambda d: d.execute(
                "SELECT seq, id, device_id, value, sent_at FROM readings ORDER BY seq"
            ).fetchall()
        )
        encrypt_with(registry, db, keyfile(tmp_path))
        key = store_connect.key_for(db)
        assert key is not None
        with pytest.raises(StoreError) as err:  # the store is open: refused, nothing changed
            encrypt_store(db, key)
        assert err.value.key == "store.in_use"
    result = encrypt_store(db, key, keep_plain=True, stamp="T")
    assert result["plain_kept"] == str(tmp_path / "unit.db.plain-T")
    assert CANARY.encode() not in all_bytes(db)
    assert CANARY.encode() in (tmp_path / "unit.db.plain-T").read_bytes()
    assert not (tmp_path / "unit.db.encrypting").exists()
    with Store(db, UNIT) as store:
        after = store.read(
            lambda d: d.execute(
                "SELECT seq, id, device_id, value, sent_at FROM readings ORDER BY seq"
            ).fetchall()
        )
        fill(store, 1)  # and it takes new readings, seqs going on
        assert store.stats()["readings_total"] == 301
    assert after == before
    with pytest.raises(StoreError) as err:
        encrypt_store(db, key)
    assert err.value.key == "store.not_plain"


# --- the command line -----------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_keygen_then_stats_and_a_wrong_key_exits_4(
    tmp_path: Path, registry: list[Path]
) -> None:
    db = tmp_path / "unit.db"
    key = tmp_path / "store.key"
    assert cli("db", "keygen", "--out", str(key)).returncode == 0
    assert (key.stat().st_mode & 0o777) == 0o600 and len(key.read_text().strip()) == 64
    again = cli("db", "keygen", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr
    encrypt_with(registry, db, key)
    with Store(db, UNIT) as store:
        fill(store, 7)
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{db}"\n'
        f'encryption = "sqlcipher"\nkey_file = "{key}"\n'
    )
    ok = cli("db", "stats", "--json", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert '"readings_total": 7' in ok.stdout
    other = keyfile(tmp_path, "other.key")
    config.write_text(config.read_text().replace(str(key), str(other)))
    bad = cli("db", "stats", "--config", str(config))
    assert bad.returncode == 4
    assert "the store key does not open this store" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_doctor_reports_encryption_and_the_key_mode() -> None:
    from edge_agent.checks.doctor import encryption_check

    ok = encryption_check("sqlcipher", "encrypted", "/k", 0o600)
    assert [(c.name, c.status) for c in ok] == [
        ("store key mode", "ok"),
        ("store encryption", "ok"),
    ]
    loose = encryption_check("sqlcipher", "encrypted", "/k", 0o644)
    assert loose[0].status == "fail" and loose[0].fix == "chmod 600 /k"
    plain = encryption_check("sqlcipher", "plain", "/k", 0o600)
    assert plain[1].status == "fail" and "db encrypt" in plain[1].fix
    assert encryption_check("off", "plain", None, None)[0].detail.startswith("off")
    assert encryption_check("off", "encrypted", None, None)[0].status == "fail"


def test_the_bundle_never_holds_the_key(tmp_path: Path, registry: list[Path]) -> None:
    import tarfile

    from edge_agent.checks.support_bundle import make_bundle

    db = tmp_path / "unit.db"
    key = keyfile(tmp_path)
    registry.append(db)
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{db}"\n'
        f'encryption = "sqlcipher"\nkey_file = "{key}"\n'
    )
    encrypt_with(registry, db, key)
    with Store(db, UNIT) as store:
        fill(store, 3)
    out = tmp_path / "bundle.tar.gz"
    make_bundle(out, config, log=tmp_path / "no.log", broker_timeout=0.2)
    secret = key.read_text().strip()
    raw = bytes.fromhex(secret)
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    store_json = members["edge-agent-bundle/store.json"].decode()
    assert '"readings_total": 3' in store_json  # the store was read, with its key
    doctor_json = members["edge-agent-bundle/doctor.json"].decode()
    assert "SQLCipher" in doctor_json
    for data in members.values():
        assert secret.encode() not in data and secret.upper().encode() not in data
        assert raw not in data


# --- the sync path --------------------------------------------------------------------------
async def test_sync_sends_an_encrypted_stores_readings_to_central(
    tmp_path: Path, registry: list[Path], mosquitto: MosquittoBroker
) -> None:
    from sync.central.receiver import Receiver
    from sync.daemon import SyncDaemon

    db = tmp_path / "unit.db"
    encrypt_with(registry, db, keyfile(tmp_path))
    cfg = Settings(
        unit=UnitSettings(id=UNIT),
        store=StoreSettings(path=db),
        broker=BrokerSettings(host="127.0.0.1", port=mosquitto.port, tls=False, keepalive_s=5),
        sync=SyncSettings(batch_size=20, ack_timeout_s=2.0, max_in_flight=3),
    )
    stop, rx_stop = asyncio.Event(), asyncio.Event()
    with Store(db, UNIT) as store:
        fill(store, 30)
        receiver = Receiver(
            "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx-enc"
        )
        rx = asyncio.create_task(receiver.run(rx_stop))
        task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
        await wait_until(lambda: store.stats()["readings_sent"] == 30, 20, "drain")
        stop.set()
        rx_stop.set()
        await asyncio.gather(task, rx)
    assert receiver.counts.stored == 30
    with reading(db) as view:  # sent_at written through the encrypted store
        assert (
            view.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0] == 0
        )


def test_the_key_credential_is_a_drop_in_written_only_with_a_key() -> None:
    from edge_agent.service.unit_files import key_dropin, unit_file

    assert "LoadCredential=store-key:/etc/edge-agent/store.key" in key_dropin()
    assert "LoadCredential" not in unit_file()  # a missing key file would fail every start
    install = (Path(__file__).resolve().parents[2] / "scripts" / "install").read_text()
    assert 'if [ -f "$ROOT/etc/edge-agent/store.key" ]' in install


def test_a_plain_store_still_opens_through_sqlite3_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos harness (tests/faults/hooked_agent.py) swaps ``sqlite3.connect`` for the lazy
    VFS and matches the store's own path: a plain store's writer and readers still call it."""
    import sqlite3

    seen: list[object] = []
    native = sqlite3.connect

    def spy(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        seen.append(database)
        conn: sqlite3.Connection = native(database, *args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    db = tmp_path / "unit.db"
    with Store(db, UNIT) as store:
        fill(store, 1)
        assert store.stats()["readings_total"] == 1
    assert seen.count(db) == 2  # the writer, then this thread's reader


def test_a_plain_agent_never_loads_the_sqlcipher_binding(tmp_path: Path) -> None:
    """The binding costs about 6 MB of RSS: only a keyed store loads it."""
    code = (
        "import sys\nfrom edge_agent.store.writer import Store\n"
        "import edge_agent.service.supervisor, sync.daemon, edge_agent.store.recovery\n"
        "import edge_agent.console.actions\n"
        f"Store({str(tmp_path / 'plain.db')!r}, 'mmu-01').close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('sqlcipher3')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
