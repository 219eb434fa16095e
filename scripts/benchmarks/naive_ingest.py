"""The naive baseline for CPU per reading: read Nonin DF8 frames from a serial port (a pty)
and insert each reading with its own commit (WAL, synchronous=FULL). No framing recovery, no
health, no sync. Runs until SIGTERM or ``--seconds``.

Usage: python -m scripts.benchmarks.naive_ingest PORT DB [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sqlite3
import time
from datetime import UTC, datetime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port")
    parser.add_argument("db")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    conn = sqlite3.connect(args.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS readings (seq INTEGER PRIMARY KEY, device TEXT, "
        "quantity TEXT, value REAL, received_at TEXT)"
    )
    fd = os.open(args.port, os.O_RDWR | os.O_NOCTTY)
    buf = b""
    deadline = time.monotonic() + args.seconds
    while not stopping and time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        buf += os.read(fd, 4096)
        while len(buf) >= 4:
            frame, buf = buf[:4], buf[4:]
            at = datetime.now(UTC).isoformat()
            hr = ((frame[0] & 0x03) << 7) | (frame[1] & 0x7F)
            for quantity, value in (("spo2", frame[2]), ("pulse_rate", hr)):
                conn.execute(
                    "INSERT INTO readings (device, quantity, value, received_at) "
                    "VALUES (?, ?, ?, ?)",
                    ["oximeter", quantity, value, at],
                )
    os.close(fd)
    conn.close()


if __name__ == "__main__":
    main()
