"""The agent's heartbeat: a question the running agent answers from its event loop.

Why: a status file (or a pid in the store) outlives a frozen or hung agent, and the screens
then say "running, connected" about a process that reads nothing. ``start``, ``status``,
``sync status`` and the console ask the agent instead, with a short timeout.

How: a unix stream socket beside the store (``<store>.agent.sock``; ``<store>.sync.sock`` for
a sync-only service), mode 0600 (the store's owner only; no network, no port to choose). The
client sends one line (``status``); the agent answers one JSON line from its event loop and
closes. Three outcomes, told apart:

- ``answering``: the answer (pid, loop lag figures, each device's state and silence);
- ``not_answering``: the socket accepted the connection (the kernel does that for a stopped
  or stuck process too) but no answer came within the timeout: the agent is frozen;
- ``not_running``: no socket, or nobody listens on it (a crashed agent's leftover file);
- ``forbidden``: the socket belongs to another user (run the command as the agent's user).

The answer holds no patient data: device ids, states and times, loop timings.

A socket path longer than ``sun_path`` (108 bytes) is reached through ``/proc/self/fd/<dir>``:
the folder is opened and the short path names the socket inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

TIMEOUT_S: Final = 2.0  # how long the screens wait for an answer
QUESTION: Final = b"status\n"
MAX_PATH: Final = 100  # below sun_path's 108 bytes (with its NUL)

Role = Literal["agent", "sync"]
State = Literal["answering", "not_answering", "not_running", "forbidden"]


def socket_path(store: Path, role: Role = "agent") -> Path:
    return store.with_name(f"{store.name}.{role}.sock")


@dataclass(frozen=True)
class Liveness:
    state: State
    answer: dict[str, Any] | None = None

    @property
    def answering(self) -> bool:
        return self.state == "answering"


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A name ``bind``/``connect`` accept for ``path`` (a short alias when it is too long)."""
    if len(os.fsencode(path)) <= MAX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def ask(path: Path, timeout: float = TIMEOUT_S) -> Liveness:
    """Ask the agent listening at ``path``; never waits longer than ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            with _reachable(path) as name:
                sock.connect(name)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return Liveness("not_running")
        except PermissionError:
            return Liveness("forbidden")
        except TimeoutError:  # the backlog is full: nobody takes the connections
            return Liveness("not_answering")
        except OSError:
            return Liveness("not_running")
        data = b""
        try:
            sock.sendall(QUESTION)
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return Liveness("not_answering")
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return Liveness("not_answering")
        except OSError:  # reset: the agent died while answering
            return Liveness("not_running")
    try:
        answer = json.loads(data)
    except ValueError:
        return Liveness("not_answering")
    return Liveness("answering", answer) if isinstance(answer, dict) else Liveness("not_answering")


def ask_any(store: Path, timeout: float = TIMEOUT_S) -> Liveness:
    """The whole agent, else a sync-only service; the best of their answers."""
    found = ask(socket_path(store, "agent"), timeout)
    if found.state == "not_running" and socket_path(store, "sync").exists():
        return ask(socket_path(store, "sync"), timeout)
    return found


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _reachable(path) as name:
            sock.bind(name)
        os.chmod(path, 0o600)  # before listen: nobody could connect yet
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(path: Path, answer: Callable[[], dict[str, Any]], stop: asyncio.Event) -> None:
    """Answer the heartbeat at ``path`` until ``stop``. A leftover socket (a crashed agent)
    is replaced; one another live agent answers on is left alone (this one is not asked)."""
    if path.exists():
        if (await asyncio.to_thread(ask, path, 1.0)).state == "answering":
            log.error("heartbeat: another agent answers at %s; this one is not asked", path)
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    sock = _bind(path)
    inode = path.stat().st_ino

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await reader.readline()
                writer.write(json.dumps(answer()).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(handle, sock=sock)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()
