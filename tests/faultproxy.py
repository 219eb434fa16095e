"""A TCP fault proxy between the agent and the broker (Toxiproxy's toxics, in-process).

Bytes only, so it works under TLS too. Modes, switchable while connections are open:
``pass``; ``latency`` (each chunk delayed); ``blackhole`` (nothing forwarded either way, the
sockets stay open: a half-open link that only keepalive can detect); ``reset`` (every
connection closed with RST, and new ones refused the same way). ``limit_bps`` caps throughput
in each direction (a 2G uplink). ``corrupt_once(pattern)`` flips a byte of the next occurrence of
``pattern`` on its way to the broker (a segment damaged in transit).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.latency = 0.0
        self.limit_bps: float | None = None
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._corrupt: bytes | None = None
        self.corrupted = 0
        self.up_bytes = 0  # client -> upstream, as forwarded (whole MQTT packets, every topic)
        self.down_bytes = 0  # upstream -> client

    @property
    def total(self) -> int:
        return self.up_bytes + self.down_bytes

    def corrupt_once(self, pattern: bytes) -> None:
        self._corrupt = pattern

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "reset":
            for writer in list(self._writers):
                _reset(writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, upstream=True), self._pipe(up_reader, writer)
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool = False
    ) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                pattern = self._corrupt
                if upstream and pattern:
                    # The pattern's last byte is in this chunk even when it began in the last.
                    found = (tail + data).find(pattern)
                    if found >= 0:
                        at = found + len(pattern) - 1 - len(tail)
                        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                        self._corrupt, self.corrupted = None, self.corrupted + 1
                    tail = (tail + data)[-(len(pattern) - 1) :] if len(pattern) > 1 else b""
                while self.mode == "blackhole":  # hold the bytes, keep the socket open
                    await asyncio.sleep(0.05)
                if self.mode == "reset":
                    return
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.limit_bps:
                    await asyncio.sleep(len(data) * 8 / self.limit_bps)
                if upstream:
                    self.up_bytes += len(data)
                else:
                    self.down_bytes += len(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # SO_LINGER 0: close sends RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
