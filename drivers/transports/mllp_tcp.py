"""MLLP over TCP: a listener that vital-signs monitors (or their gateway) connect to.

Per connection: a fresh :class:`~drivers.protocols.mllp.MllpDecoder`; each read is decoded,
handed to :func:`drivers.runtime.dispatch` (which commits a message's readings, then calls
``acknowledge``), and only then are the decoder's replies written, so an ``MSA|AA`` never
leaves before the COMMIT. A monitor that disconnects mid-message loses nothing we had: the
partial frame is stored as a reject and the monitor resends the un-ACKed message when it
reconnects. Binds 127.0.0.1 by default; a unit that must accept monitors on the van's LAN is
configured with ``listen = "0.0.0.0:2575"`` (HL7's registered port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from drivers.base import Sink, StreamDecoder
from drivers.protocols.hl7v2 import format_hl7_time
from drivers.protocols.mllp import MllpDecoder
from drivers.runtime import dispatch
from drivers.transports.hl7_control_ids import next_control_id
from edge_agent.backoff import Backoff

__all__ = ["DEFAULT_PORT", "MllpServer", "hl7_now", "parse_listen", "run_mllp"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2575
READ_SIZE = 65536
CLOSE_GRACE = 5.0  # seconds a connection may take to finish its commit when we stop


def hl7_now() -> str:
    """The unit's local time as HL7 TS with its offset (MSH-7 of our ACKs)."""
    return format_hl7_time(datetime.now().astimezone())


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (as in the device settings) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host or "127.0.0.1", int(port)


class MllpServer:
    """Accepts MLLP connections for one configured device until :meth:`close`.

    ``port=0`` binds a free port (tests read :attr:`port`). ``decoder_factory`` builds the
    decoder of each connection (default: an :class:`MllpDecoder` stamping ACKs with the local
    time and the process-wide control ids of :mod:`drivers.transports.hl7_control_ids`; the
    agent passes the registry's decoder, which uses the same source)."""

    def __init__(
        self,
        device_id: str,
        sink: Sink,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        decoder_factory: Callable[[], StreamDecoder] | None = None,
    ) -> None:
        self.device_id = device_id
        self.host = host
        self._port = port
        self._sink = sink
        self._factory = decoder_factory or self._default_decoder
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and listen; raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._handle, self.host, self._port)

    async def close(self) -> None:
        """Stop accepting, close open connections, wait (bounded) for their handlers."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._connections.values()):
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _default_decoder(self) -> StreamDecoder:
        return MllpDecoder(clock=hl7_now, control_ids=next_control_id)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer = _peer(writer)
        device_id, sink = self.device_id, self._sink
        decoder = self._factory()
        sink.device_status(device_id, "connected", peer)
        detail = f"{peer} closed the connection"
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                await dispatch(device_id, decoder.receive_data(data), sink, decoder)
                reply = decoder.data_to_send()
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            detail = f"{peer}: {exc or type(exc).__name__}"
        except Exception as exc:
            # A store failure outside a message commit: drop the connection; the monitor
            # resends what it has no AA for.
            log.exception("device %s: connection %s failed", device_id, peer)
            detail = f"{peer}: {exc or type(exc).__name__}"
        finally:
            try:
                # End of stream: a partial frame becomes a reject instead of vanishing.
                await dispatch(device_id, decoder.receive_data(b""), sink, decoder)
            except Exception:
                log.exception("device %s: storing the end of %s failed", device_id, peer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._connections.pop(task, None)
            sink.device_status(device_id, "disconnected", detail)


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


async def run_mllp(
    device_id: str,
    listen: str,
    sink: Sink,
    stop: asyncio.Event,
    *,
    decoder_factory: Callable[[], StreamDecoder] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Serve one device's listener until ``stop``; a bind failure (address in use) is reported
    as ``unavailable`` and retried with backoff. Never raises for device or network trouble."""
    host, port = parse_listen(listen)
    backoff = backoff or Backoff()
    while not stop.is_set():
        server = MllpServer(device_id, sink, host=host, port=port, decoder_factory=decoder_factory)
        try:
            await server.start()
        except OSError as exc:
            sink.device_status(device_id, "unavailable", f"cannot listen on {listen}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next_delay())
            continue
        backoff.reset()
        sink.device_status(device_id, "listening", f"{host}:{server.port}")
        try:
            await stop.wait()
        finally:
            await server.close()
    sink.device_status(device_id, "stopped")
