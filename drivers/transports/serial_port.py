"""Serial transport (pyserial): open, read, decode, commit, reply; reconnect when unplugged.

Reads are event-driven (``loop.add_reader`` on the port's file descriptor) so one asyncio
loop serves every port without a thread each. A port that vanishes (USB cable pulled, the
simulator's pty closed) is reported in the device status and reopened with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import serial

from drivers.base import Sink, StreamDecoder
from drivers.runtime import dispatch
from edge_agent.backoff import Backoff
from edge_agent.errors import DeviceMisconfigured, DeviceUnavailable

log = logging.getLogger(__name__)

READ_SIZE = 4096


@dataclass(frozen=True)
class SerialParams:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


@contextlib.contextmanager
def map_serial_errors(device_id: str) -> Iterator[None]:
    """The one place pyserial/OS errors become ours: unavailable (retry) vs misconfigured."""
    try:
        yield
    except serial.SerialException as exc:
        text = str(exc)
        if "Permission denied" in text or ("could not open port" in text and "Errno 13" in text):
            raise DeviceMisconfigured(device_id, f"no permission on the port: {text}") from exc
        raise DeviceUnavailable(device_id, text) from exc
    except OSError as exc:
        raise DeviceUnavailable(device_id, str(exc)) from exc


def open_port(device_id: str, params: SerialParams) -> serial.Serial:
    with map_serial_errors(device_id):
        return serial.Serial(
            params.port,
            baudrate=params.baudrate,
            bytesize=params.bytesize,
            parity=params.parity,
            stopbits=params.stopbits,
            timeout=0,  # non-blocking: reads are driven by add_reader
            write_timeout=2,
            exclusive=True,
        )


async def run_serial(
    device_id: str,
    params: SerialParams,
    decoder_factory: Callable[[], StreamDecoder],
    sink: Sink,
    stop: asyncio.Event,
    *,
    backoff: Backoff | None = None,
    idle_timeout: float | None = None,
) -> None:
    """Run one serial device until ``stop`` is set; never raises for device trouble."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        try:
            port = open_port(device_id, params)
        except (DeviceUnavailable, DeviceMisconfigured) as exc:
            sink.device_status(device_id, "unavailable", str(exc))
            await _wait(stop, backoff.next_delay())
            continue
        sink.device_status(device_id, "connected", params.port)
        backoff.reset()
        try:
            await _pump(device_id, port, decoder_factory(), sink, stop, idle_timeout)
        except (DeviceUnavailable, DeviceMisconfigured) as exc:
            sink.device_status(device_id, "disconnected", str(exc))
            await _wait(stop, backoff.next_delay())
        finally:
            with contextlib.suppress(Exception):
                port.close()
    sink.device_status(device_id, "stopped")


async def _pump(
    device_id: str,
    port: serial.Serial,
    decoder: StreamDecoder,
    sink: Sink,
    stop: asyncio.Event,
    idle_timeout: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    fd = port.fileno()

    def on_readable() -> None:
        # One wake-up per wait: the reader is level-triggered, so leaving it registered while
        # a commit is awaited would call this on every loop turn (a busy loop).
        loop.remove_reader(fd)
        readable.set()

    try:
        await _write(device_id, port, decoder.data_to_send())
        while not stop.is_set():
            if not readable.is_set():
                loop.add_reader(fd, on_readable)
            waiter = asyncio.ensure_future(readable.wait())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in (waiter, stopper):
                task.cancel()
            if stop.is_set():
                return
            if not done:
                on_timeout = getattr(decoder, "timeout", None)
                if on_timeout is not None:
                    await dispatch(device_id, on_timeout(), sink, decoder)
                continue
            readable.clear()
            with map_serial_errors(device_id):
                data = port.read(READ_SIZE)
            if not data:
                continue
            await dispatch(device_id, decoder.receive_data(data), sink, decoder)
            await _write(device_id, port, decoder.data_to_send())
    finally:
        loop.remove_reader(fd)
        # End of stream: let the decoder reject a partial frame rather than lose it silently.
        with contextlib.suppress(Exception):
            await dispatch(device_id, decoder.receive_data(b""), sink, decoder)


async def _write(device_id: str, port: serial.Serial, data: bytes) -> None:
    if data:
        with map_serial_errors(device_id):
            port.write(data)


async def _wait(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
