"""A real PostgreSQL server for tests: a throwaway cluster on a Unix socket (no TCP port),
started once per test session (per xdist worker); each test gets a fresh database. As root,
the server runs as the ``postgres`` user."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresMissing(RuntimeError):
    """initdb or pg_ctl is not installed."""


@contextlib.contextmanager
def cluster(*settings: str) -> Iterator[str]:
    """A throwaway cluster with a fresh database ``central``; yields its DSN. ``settings``:
    extra server options (``name=value``). Stopped and removed on the way out."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresMissing(
            "PostgreSQL is not installed: run the README test command "
            "(bash scripts/test), which installs it"
        )
    root = Path(tempfile.mkdtemp(prefix="edge-agent-pg-"))
    root.chmod(0o755)  # the server user must reach its socket and data folders
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        options = " ".join(
            [
                f"-c listen_addresses='' -c unix_socket_directories='{root}' -p 5432",
                *(f"-c {s}" for s in settings),
            ]
        )
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-w",
                "-l",
                str(root / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        import psycopg

        with psycopg.connect(f"host={root} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE central")
        yield f"postgresql://postgres@/central?host={root}"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Path]:
    """One throwaway cluster per test session (per xdist worker): its socket folder."""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        pytest.fail(
            "PostgreSQL is not installed: run the README test command "
            "(bash scripts/test), which installs it"
        )
    with cluster() as dsn:
        yield Path(dsn.rpartition("host=")[2])


_databases = itertools.count(1)


@pytest.fixture
def postgres(postgres_server: Path) -> Iterator[str]:
    """A DSN for a fresh, empty database of its own (dropped after the test)."""
    import psycopg

    name = f"central_{next(_databases)}"
    admin = f"host={postgres_server} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@/{name}?host={postgres_server}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
