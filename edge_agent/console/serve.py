"""Serve the web console with uvicorn inside the agent's event loop, until ``stop``.

The socket is bound here, before uvicorn sees it: a port already taken is an ``OSError`` the
supervisor logs and retries, not uvicorn's ``sys.exit``. uvicorn's own signal handling is
off: the agent (or ``edge-agent console``) owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edge_agent.settings import Settings

if TYPE_CHECKING:
    from edge_agent.store.writer import Store

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_console(
    settings: Settings, stop: asyncio.Event, writer: Store | None = None
) -> None:
    """``writer``: the agent's store (inside the agent): the patient actions write through
    it, never through a second connection of the agent's process."""
    import uvicorn

    from edge_agent.console.app import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    c = settings.console
    if c.tls:  # off loopback: HTTPS only, never plain HTTP instead (the PIN crosses the LAN)
        from edge_agent.console.tls import require_files

        require_files(c)
    sock = bind(c.host, c.port)
    config = uvicorn.Config(
        create_app(settings, writer=writer),
        log_config=None,
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        timeout_graceful_shutdown=2,
        ssl_certfile=c.cert_file if c.tls else None,
        ssl_keyfile=c.key_file if c.tls else None,
    )
    server = _Server(config)
    log.info("console: serving on %s://%s:%s", "https" if c.tls else "http", c.host, c.port)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="console-http")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
