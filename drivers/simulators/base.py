"""Play a device model on a pseudo-terminal, for tests, the demo and training.

A model is pure (no clock, no I/O): ``output()`` returns the next bytes the device sends,
``receive(data)`` takes what the agent wrote back. :class:`PtyDevice` owns the pty and the
pacing. ``unplug()`` closes the pty master (the driver sees the port vanish) and ``replug()``
creates a new one behind the same stable symlink, as udev does for ``/dev/serial/by-id``.
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
import threading
import tty
from pathlib import Path
from typing import Protocol


class DeviceModel(Protocol):
    @property
    def interval(self) -> float:
        """Seconds between two outputs."""
        ...

    def output(self) -> bytes:
        """The next bytes the device sends (may be empty)."""
        ...

    def receive(self, data: bytes) -> None:
        """Bytes the agent sent to the device (commands, ACK/NAK)."""
        ...


class PtyDevice:
    def __init__(self, model: DeviceModel, link: Path | None = None) -> None:
        self.model = model
        self.link = link
        self.sent = bytearray()  # every byte written, for checkers
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._path = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.paused = threading.Event()

    @property
    def path(self) -> str:
        """The port a driver opens: the stable link when there is one."""
        return str(self.link) if self.link is not None else self._path

    @property
    def pty(self) -> str:
        """The current pseudo-terminal itself (changes on replug)."""
        return self._path

    def start(self) -> PtyDevice:
        self._open()
        self._thread = threading.Thread(target=self._run, name="pty-device", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def unplug(self) -> None:
        with self._lock:
            self._close()

    def replug(self) -> None:
        with self._lock:
            self._open()

    def __enter__(self) -> PtyDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> None:
        master, slave = os.openpty()
        # Raw at once: with the default line discipline the pty would echo the device's own
        # output back to it and translate CR/LF before a driver has configured the port.
        tty.setraw(slave, termios.TCSANOW)
        self._path = os.ttyname(slave)
        # Close our end of the slave: the master then reports POLLHUP until a driver opens
        # the port, and the model waits for it like a device waiting for DTR. (pyserial
        # flushes the input queue when it opens a port, so bytes sent earlier would be lost.)
        os.close(slave)
        self._master, self._slave = master, None
        os.set_blocking(master, False)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._path)
            tmp.replace(self.link)

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
                if master is not None and not self.paused.is_set():
                    self._exchange(master)
            self._stop.wait(self.model.interval)

    def _exchange(self, master: int) -> None:
        poller = select.poll()
        poller.register(master, select.POLLIN | select.POLLHUP)
        if any(ev & select.POLLHUP for _, ev in poller.poll(0)):
            return  # nobody has the port open: the device waits
        try:
            while select.select([master], [], [], 0)[0]:
                data = os.read(master, 4096)
                if not data:
                    break
                self.model.receive(data)
            out = self.model.output()
            if out:
                os.write(master, out)
                self.sent += out
        except OSError:
            pass  # nobody has the port open yet, or it was just unplugged
