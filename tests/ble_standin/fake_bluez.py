"""A fake BlueZ (``org.bluez``) D-Bus service for testing code that uses the
real, unmodified ``bleak`` library on a machine without Bluetooth.

Pieces:

* :class:`PrivateSystemBus` starts a private ``dbus-daemon`` with a permissive
  policy and points ``DBUS_SYSTEM_BUS_ADDRESS`` at it (bleak always talks to
  the *system* bus).
* :class:`FakeBlueZ` owns the name ``org.bluez`` on that bus and serves the
  objects bleak's BlueZ backend uses: the ObjectManager (dbus-fast answers
  ``GetManagedObjects`` itself), ``/org/bluez/hciN`` (Adapter1), one
  ``.../dev_XX_..`` per peripheral (Device1) and, once connected, GattService1 /
  GattCharacteristic1 / GattDescriptor1 objects with BlueZ's path layout.
* :class:`FakePeripheral` is the device model: advertising data, a GATT table
  (:class:`Service` / :class:`Characteristic` / :class:`Descriptor`) and hooks
  (``on_write``, ``on_read``, ``on_subscribe``); the test drives it with
  ``notify()``, ``indicate()``, ``disconnect()``.

Everything is written with dbus-fast's ``ServiceInterface`` (the library bleak
itself uses). Behaviour follows BlueZ 5.66+ ``src/device.c``, ``src/adapter.c``
and ``src/gatt-client.c`` where bleak can observe it; see the README for the
known differences.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBytes, DBusDict, DBusObjectPath, DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

log = logging.getLogger("fake_bluez")
P = TypeVar("P", bound="FakePeripheral")
IfaceT = TypeVar("IfaceT", bound="_Iface")

# D-Bus signatures for dbus-fast, as typed annotations (dbus-fast reads the DBusSignature;
# mypy sees the Python type). Methods without a reply must still say so: a bare "-> None"
# would be read as the signature "None".
NoReply = Annotated[None, DBusSignature("")]
FdAndMtu = Annotated[list[int], DBusSignature("hq")]
Strings = Annotated[list[str], DBusSignature("as")]

BASE_UUID = "0000{:04x}-0000-1000-8000-00805f9b34fb"


def uuid128(u: str | int) -> str:
    """'2a37', 0x2A37 or a full UUID -> lower-case 128-bit string."""
    if isinstance(u, int):
        return BASE_UUID.format(u)
    u = u.lower()
    if len(u) == 4:
        return BASE_UUID.format(int(u, 16))
    if len(u) == 8:
        return f"{u}-0000-1000-8000-00805f9b34fb"
    return u


# --------------------------------------------------------------------------
# Private "system" bus
# --------------------------------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

# bleak runs `bluetoothctl --version` once per process; without it bleak only
# logs a warning and assumes BlueZ >= 5.55. This stub silences the warning.
BLUETOOTHCTL_STUB = "#!/bin/sh\necho 'bluetoothctl: 5.66'\n"


class PrivateSystemBus:
    """Runs ``dbus-daemon`` with a permissive policy on a socket in a temp dir
    and exports ``DBUS_SYSTEM_BUS_ADDRESS``. Use as a (sync) context manager.

    ``stub_bluetoothctl``: put a fake ``bluetoothctl`` first on ``PATH`` when
    no real one is installed (the Debian ``bluez`` package provides the real
    one; it does not need a running daemon for ``--version``).

    ``export_env=False`` leaves ``os.environ`` alone; the caller applies :attr:`env` where
    it wants (a session-long daemon, environment set per test).
    """

    def __init__(self, stub_bluetoothctl: bool = True, export_env: bool = True) -> None:
        self.stub_bluetoothctl = stub_bluetoothctl
        self.export_env = export_env
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.address: str | None = None
        self.tmpdir: str | None = None
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> str:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError("dbus-daemon not found: apt-get install dbus-daemon")
        self.tmpdir = tempfile.mkdtemp(prefix="fake-bluez-")
        conf = os.path.join(self.tmpdir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(socket=os.path.join(self.tmpdir, "bus.sock")))
        self.proc = subprocess.Popen(
            [daemon, f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # the daemon prints its address once it is listening
        assert self.proc.stdout is not None  # stdout=PIPE
        line = self.proc.stdout.readline().strip()
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon did not start")
        self.address = line
        env = {"DBUS_SYSTEM_BUS_ADDRESS": line}
        if self.stub_bluetoothctl and shutil.which("bluetoothctl") is None:
            bindir = os.path.join(self.tmpdir, "bin")
            os.mkdir(bindir)
            stub = os.path.join(bindir, "bluetoothctl")
            with open(stub, "w") as f:
                f.write(BLUETOOTHCTL_STUB)
            os.chmod(stub, 0o755)
            env["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        self.env = env
        for k, v in env.items() if self.export_env else ():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        return line

    def stop(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PrivateSystemBus:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Device model
# --------------------------------------------------------------------------


class AttError(Exception):
    """Raise from a read/write hook to answer with an ATT error code."""

    READ_NOT_PERMITTED = 0x02
    WRITE_NOT_PERMITTED = 0x03
    INSUFFICIENT_AUTHENTICATION = 0x05
    REQUEST_NOT_SUPPORTED = 0x06
    INVALID_OFFSET = 0x07
    INSUFFICIENT_AUTHORIZATION = 0x08
    INVALID_ATTRIBUTE_VALUE_LENGTH = 0x0D
    INSUFFICIENT_ENCRYPTION = 0x0F
    PROCEDURE_ALREADY_IN_PROGRESS = 0xFE
    CCCD_IMPROPERLY_CONFIGURED = 0xFD

    def __init__(self, code: int) -> None:
        super().__init__(f"ATT error 0x{code:02x}")
        self.code = code


def _att_to_dbus(code: int) -> DBusError:
    """Same mapping as create_gatt_dbus_error() in BlueZ src/gatt-client.c."""
    E = "org.bluez.Error."
    table = {
        0x02: (E + "NotPermitted", "Read not permitted"),
        0x03: (E + "NotPermitted", "Write not permitted"),
        0x05: (E + "NotPermitted", "Not paired"),
        0x0F: (E + "NotPermitted", "Not paired"),
        0x0C: (E + "NotPermitted", "Not paired"),
        0x07: (E + "InvalidArguments", "Invalid offset"),
        0x0D: (E + "InvalidArguments", "Invalid Length"),
        0x08: (E + "NotAuthorized", "Not Authorized"),
        0x06: (E + "NotSupported", "Operation is not supported"),
    }
    name, text = table.get(code, (E + "Failed", f"Operation failed with ATT error: 0x{code:02x}"))
    return DBusError(name, text)


Hook = Callable[..., Any | Awaitable[Any]]


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


@dataclass
class Descriptor:
    uuid: str | int
    flags: tuple[str, ...] = ("read",)
    value: bytes = b""
    on_read: Hook | None = None  # (peripheral, descriptor) -> bytes
    on_write: Hook | None = None  # (peripheral, descriptor, value)
    # filled in by FakePeripheral
    handle: int = 0
    path: str = ""


@dataclass
class Characteristic:
    uuid: str | int
    flags: tuple[str, ...]
    value: bytes = b""
    descriptors: list[Descriptor] = field(default_factory=list)
    on_read: Hook | None = None  # (peripheral, char) -> bytes
    on_write: Hook | None = None  # (peripheral, char, value, with_response)
    handle: int = 0  # declaration handle (BlueZ path uses it)
    path: str = ""
    cccd: int = 0  # 0, 1 (notify) or 2 (indicate)

    @property
    def can_notify(self) -> bool:
        return "notify" in self.flags or "indicate" in self.flags


@dataclass
class Service:
    uuid: str | int
    characteristics: list[Characteristic]
    primary: bool = True
    handle: int = 0
    path: str = ""


class FakePeripheral:
    """A simulated LE peripheral. Subclass it (or pass hooks) to model a device.

    Timing knobs (seconds): ``adv_interval`` between advertisement reports while
    the adapter is discovering, ``connect_delay`` before Connected=True,
    ``discovery_delay`` before the GATT objects and ServicesResolved=True appear,
    ``disconnect_delay`` before a central's Disconnect() takes effect.
    """

    def __init__(
        self,
        address: str,
        name: str | None = None,
        services: Iterable[Service] = (),
        *,
        address_type: str = "public",
        rssi: int = -60,
        tx_power: int | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        service_data: dict[str, bytes] | None = None,
        service_uuids: Iterable[str | int] | None = None,
        appearance: int | None = None,
        connectable: bool = True,
        adv_interval: float = 0.1,
        connect_delay: float = 0.0,
        discovery_delay: float = 0.0,
        disconnect_delay: float = 0.0,
        mtu: int = 247,
    ) -> None:
        self.address = address.upper()
        self.name = name
        self.address_type = address_type
        self.rssi = rssi
        self.tx_power = tx_power
        self.manufacturer_data = dict(manufacturer_data or {})
        self.service_data = {uuid128(k): v for k, v in (service_data or {}).items()}
        self.service_uuids = [uuid128(u) for u in (service_uuids or [])]
        self.appearance = appearance
        self.connectable = connectable
        self.advertising = True
        self.adv_interval = adv_interval
        self.connect_delay = connect_delay
        self.discovery_delay = discovery_delay
        self.disconnect_delay = disconnect_delay
        self.mtu = mtu
        self.services: list[Service] = list(services)
        # error injection: (dbus error name, message) for the next Connect()
        self.fail_next_connect: tuple[str, str] | None = None
        self.connected = False
        self.connect_count = 0
        self.written: list[tuple[str, bytes, bool]] = []  # (uuid, value, with_response)
        self._device: _Device1 | None = None  # set by FakeBlueZ
        self.known = False  # set by FakeBlueZ.add_peripheral
        self._assign_handles()

    # -- GATT table ---------------------------------------------------------
    def _assign_handles(self) -> None:
        h = 1
        for s in self.services:
            s.uuid = uuid128(s.uuid)
            s.handle = h
            h += 1
            for c in s.characteristics:
                c.uuid = uuid128(c.uuid)
                c.handle = h  # declaration; value is h + 1
                h += 2
                cccd = uuid128(0x2902)
                if c.can_notify and not any(uuid128(d.uuid) == cccd for d in c.descriptors):
                    c.descriptors.insert(0, Descriptor(0x2902, ("read", "write"), b"\x00\x00"))
                for d in c.descriptors:
                    d.uuid = uuid128(d.uuid)
                    d.handle = h
                    h += 1

    def char(self, uuid: str | int) -> Characteristic:
        u = uuid128(uuid)
        for s in self.services:
            for c in s.characteristics:
                if c.uuid == u:
                    return c
        raise KeyError(uuid)

    # -- hooks for subclasses -----------------------------------------------
    async def on_connect(self) -> None: ...
    async def on_disconnect(self) -> None: ...
    async def on_subscribe(self, char: Characteristic, enabled: bool) -> None: ...

    async def handle_read(self, char: Characteristic) -> bytes:
        if char.on_read:
            return bytes(await _maybe_await(char.on_read(self, char)))
        if "read" not in char.flags:
            raise AttError(AttError.READ_NOT_PERMITTED)
        return char.value

    async def handle_write(self, char: Characteristic, value: bytes, with_response: bool) -> None:
        self.written.append((uuid128(char.uuid), value, with_response))
        if char.on_write:
            await _maybe_await(char.on_write(self, char, value, with_response))
            return
        if not ({"write", "write-without-response"} & set(char.flags)):
            raise AttError(AttError.WRITE_NOT_PERMITTED)
        char.value = value

    # -- driving the device from a test -------------------------------------
    def subscribed(self, uuid: str | int) -> bool:
        return self.char(uuid).cccd != 0

    async def notify(self, uuid: str | int, value: bytes) -> bool:
        """Send a notification; returns False (and drops it) if the central has
        not enabled notifications/indications (CCCD == 0), as a device would."""
        c = self.char(uuid)
        if not self.connected or c.cccd == 0 or self._device is None:
            log.debug("dropping notification on %s (not subscribed)", c.uuid)
            return False
        c.value = bytes(value)
        self._device.deliver_notification(c, c.value)
        return True

    async def indicate(self, uuid: str | int, value: bytes) -> bool:
        # On D-Bus indications look exactly like notifications (BlueZ confirms).
        ok = await self.notify(uuid, value)
        await asyncio.sleep(0)
        return ok

    async def disconnect(self) -> None:
        """Peripheral-initiated disconnect (link loss / remote user terminated)."""
        if self._device is not None:
            await self._device.drop_connection()

    def set_advertisement(self, **kw: Any) -> None:
        """Change advertising fields (rssi, manufacturer_data, service_data, name, ...)."""
        for k, v in kw.items():
            if k == "service_data":
                v = {uuid128(a): b for a, b in v.items()}
            setattr(self, k, v)
        if self._device is not None:
            self._device.refresh_adv_props()


# --------------------------------------------------------------------------
# dbus-fast plumbing
# --------------------------------------------------------------------------

# Sender (unique bus name) of the method call being dispatched. Set by a
# message handler that runs before dbus-fast dispatches to the ServiceInterface
# method; async methods see it because their task copies the context.
_sender: contextvars.ContextVar[str] = contextvars.ContextVar("sender", default="")

_tasks: set[asyncio.Task[None]] = set()


def _background(job: Awaitable[None]) -> None:
    """Run ``job`` without awaiting it, keeping a reference until it ends."""
    task = asyncio.ensure_future(job)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_prop_class_cache: dict[tuple[type, tuple[str, ...]], type] = {}


def _make_prop(name: str, sig: str, writable: bool) -> Any:
    def getter(self: _Iface) -> Any:
        return self.props[name]

    getter.__name__ = getter.__qualname__ = name
    getter.__annotations__ = {"return": sig}
    access = PropertyAccess.READWRITE if writable else PropertyAccess.READ
    prop = dbus_property(access=access)(getter)
    if writable:

        def setter(self: _Iface, value: Any) -> None:
            self.set(name, value)
            self.on_property_set(name, value)

        setter.__name__ = setter.__qualname__ = name
        setter.__annotations__ = {"value": sig}
        prop = prop.setter(setter)
    return prop


class _Iface(ServiceInterface):
    """A ServiceInterface whose D-Bus properties are the keys of ``props``.

    BlueZ omits optional properties (Name, RSSI, TxPower, ManufacturerData, ...)
    when it has no value; dbus-fast properties are class attributes, so each
    distinct property set gets its own generated subclass (see ``create``).
    """

    NAME = ""
    SIGNATURES: ClassVar[dict[str, str]] = {}
    WRITABLE: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, props: dict[str, Any]) -> None:
        super().__init__(self.NAME)
        self.props = props

    @classmethod
    def create(cls: type[IfaceT], props: dict[str, Any], *args: Any, **kw: Any) -> IfaceT:
        key = (cls, tuple(sorted(props)))
        sub = _prop_class_cache.get(key)
        if sub is None:
            ns = {n: _make_prop(n, cls.SIGNATURES[n], n in cls.WRITABLE) for n in props}
            sub = type(f"{cls.__name__}_{len(_prop_class_cache)}", (cls,), ns)
            _prop_class_cache[key] = sub
        made: IfaceT = sub(props, *args, **kw)
        return made

    def set(self, name: str, value: Any, emit: bool = True) -> None:
        """Update a property and emit PropertiesChanged (BlueZ emits for every
        Value update, even if unchanged; for others only on change)."""
        if name not in self.props:
            raise KeyError(f"{self.NAME}.{name} was not exported; it cannot appear later")
        changed = self.props.get(name) != value
        self.props[name] = value
        if emit and (changed or name == "Value"):
            self.emit_properties_changed({name: value})

    def on_property_set(self, name: str, value: Any) -> None: ...


class _BlueZBus(MessageBus):
    """dbus-fast emits one InterfacesAdded per exported interface, from the
    object's own path. BlueZ emits one signal per object, from "/", and
    BlueZ's own client (bluetoothctl) ignores anything else. bleak accepts both;
    we imitate BlueZ. (Overrides a private dbus-fast hook.)"""

    OM = "org.freedesktop.DBus.ObjectManager"

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        pass

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        pass

    def add_object(self, path: str, *ifaces: _Iface) -> None:
        for i in ifaces:
            self.export(path, i)
        body = {
            i.name: {k: Variant(i.SIGNATURES[k], v) for k, v in i.props.items()} for i in ifaces
        }
        self.send(Message.new_signal("/", self.OM, "InterfacesAdded", "oa{sa{sv}}", [path, body]))

    def remove_object(self, path: str) -> None:
        names = list(self._path_exports.get(path, {}))
        if names:
            self.unexport(path)
            self.send(Message.new_signal("/", self.OM, "InterfacesRemoved", "oas", [path, names]))


# Services that bluetoothd's built-in profiles claim (gap, deviceinfo, battery,
# hog, scanparam, midi). BlueZ <= 5.79 does not export them on D-Bus at all;
# 5.80+ exports them read-only (main.conf [GATT] ExportClaimedServices).
CLAIMED_BY_BLUEZ = {uuid128(u) for u in (0x1800, 0x180A, 0x180F, 0x1812, 0x1813)} | {
    "03b80e5a-ede8-4b33-a751-6ce34ec4c700"
}


def _err(name: str, text: str) -> DBusError:
    return DBusError(f"org.bluez.Error.{name}", text)


class _GattDescriptor1(_Iface):
    NAME = "org.bluez.GattDescriptor1"
    SIGNATURES: ClassVar[dict[str, str]] = {
        "UUID": "s",
        "Characteristic": "o",
        "Value": "ay",
        "Flags": "as",
    }

    def __init__(self, props: dict[str, Any], dev: _Device1, desc: Descriptor) -> None:
        super().__init__(props)
        self.dev, self.desc = dev, desc
        self.read_only = False

    @dbus_method(name="ReadValue")
    async def read_value(self, options: DBusDict) -> DBusBytes:
        self.dev.require_connected()
        d = self.desc
        try:
            value = bytes(await _maybe_await(d.on_read(self.dev.p, d))) if d.on_read else d.value
        except AttError as e:
            raise _att_to_dbus(e.code) from None
        self.set("Value", value)
        return value

    @dbus_method(name="WriteValue")
    async def write_value(self, value: DBusBytes, options: DBusDict) -> NoReply:
        self.dev.require_connected()
        if getattr(self, "read_only", False):
            raise _err("NotAuthorized", "Not Authorized")
        try:
            if self.desc.on_write:
                await _maybe_await(self.desc.on_write(self.dev.p, self.desc, bytes(value)))
            else:
                self.desc.value = bytes(value)
        except AttError as e:
            raise _att_to_dbus(e.code) from None


class _GattCharacteristic1(_Iface):
    NAME = "org.bluez.GattCharacteristic1"
    SIGNATURES: ClassVar[dict[str, str]] = {
        "UUID": "s",
        "Service": "o",
        "Value": "ay",
        "Notifying": "b",
        "Flags": "as",
        "WriteAcquired": "b",
        "NotifyAcquired": "b",
        "MTU": "q",
    }

    def __init__(self, props: dict[str, Any], dev: _Device1, char: Characteristic) -> None:
        super().__init__(props)
        self.dev, self.char = dev, char
        self.read_only = False  # claimed service exported read-only
        self.sessions: set[str] = set()  # senders with StartNotify sessions
        self.notify_sock: socket.socket | None = None  # AcquireNotify (our end)
        self._peer_fd: int | None = None

    # -- notify sessions ------------------------------------------------------
    async def _set_cccd(self, enabled: bool) -> None:
        c = self.char
        new = (1 if "notify" in c.flags else 2) if enabled else 0
        if new != c.cccd:
            c.cccd = new
            for d in c.descriptors:  # what a read of the CCCD returns
                if d.uuid == uuid128(0x2902):
                    d.value = new.to_bytes(2, "little")
            await self.dev.p.on_subscribe(c, enabled)

    def _subscribed(self) -> bool:
        return bool(self.sessions) or self.notify_sock is not None

    async def refresh_subscription(self) -> None:
        want = self._subscribed() and self.dev.p.connected
        if "Notifying" in self.props:
            self.set("Notifying", bool(self.sessions) and self.dev.p.connected)
        await self._set_cccd(want)

    def deliver(self, value: bytes) -> None:
        if self.sessions:
            self.set("Value", value)
        if self.notify_sock is not None:
            try:
                self.notify_sock.send(value)
            except OSError:
                self._release_acquired()

    def _release_acquired(self) -> None:
        if self.notify_sock is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.notify_sock.fileno())
        self.notify_sock.close()
        self.notify_sock = None
        if self._peer_fd is not None:
            os.close(self._peer_fd)
            self._peer_fd = None
        self.set("NotifyAcquired", False)
        _background(self.refresh_subscription())

    # -- methods ------------------------------------------------------------------
    @dbus_method(name="ReadValue")
    async def read_value(self, options: DBusDict) -> DBusBytes:
        self.dev.require_connected()
        offset = options["offset"].value if "offset" in options else 0
        try:
            value = await self.dev.p.handle_read(self.char)
        except AttError as e:
            raise _att_to_dbus(e.code) from None
        if offset > len(value):
            raise _att_to_dbus(AttError.INVALID_OFFSET)
        # BlueZ stores the read value in its cache and emits Value changed,
        # so a StartNotify subscriber also "sees" reads (a known quirk).
        self.set("Value", value)
        return value[offset:]

    @dbus_method(name="WriteValue")
    async def write_value(self, value: DBusBytes, options: DBusDict) -> NoReply:
        self.dev.require_connected()
        if self.read_only:
            raise _err("NotAuthorized", "Not Authorized")
        if self.props.get("WriteAcquired"):
            raise _err("NotPermitted", "Write acquired")
        wtype = options["type"].value if "type" in options else None
        flags = self.char.flags
        if wtype is None:
            wtype = "request" if "write" in flags else "command"
        if wtype == "command":
            # BlueZ sends a Write Command whatever the flags say; the device
            # gives no response, so errors are invisible to the central
            with contextlib.suppress(AttError):
                await self.dev.p.handle_write(self.char, bytes(value), False)
            return
        try:
            await self.dev.p.handle_write(self.char, bytes(value), True)
        except AttError as e:
            raise _att_to_dbus(e.code) from None

    @dbus_method(name="StartNotify")
    async def start_notify(self) -> NoReply:
        sender = _sender.get()
        self.dev.require_connected()
        if self.notify_sock is not None:
            raise _err("NotPermitted", "Notify acquired")
        if not self.char.can_notify:
            raise _err("NotSupported", "Operation is not supported")
        if sender in self.sessions:
            return
        self.sessions.add(sender)
        await self.refresh_subscription()

    @dbus_method(name="StopNotify")
    async def stop_notify(self) -> NoReply:
        sender = _sender.get()
        if sender not in self.sessions:
            raise _err("Failed", "No notify session started")
        self.sessions.discard(sender)
        await self.refresh_subscription()

    @dbus_method(name="AcquireNotify")
    async def acquire_notify(self, options: DBusDict) -> FdAndMtu:
        self.dev.require_connected()
        if not self.char.can_notify:
            raise _err("NotSupported", "Operation is not supported")
        if self.notify_sock is not None:
            raise _err("NotPermitted", "Notify acquired")
        if self.sessions:
            raise _err("InProgress", "Operation already in progress")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.notify_sock = ours
        self._peer_fd = theirs.detach()
        loop = asyncio.get_running_loop()
        # client closed its end (stop_notify) -> EOF -> readable
        loop.add_reader(ours.fileno(), self._on_notify_sock_event)
        # our copy of the client's end must stay open until dbus-fast has
        # written the reply (it passes fd numbers, not dups), then be closed,
        # or we would never see the client's close.
        loop.call_later(0.01, self._close_peer_fd_when_sent)
        self.set("NotifyAcquired", True)
        await self.refresh_subscription()
        return [self._peer_fd, self.dev.p.mtu]

    def _close_peer_fd_when_sent(self) -> None:
        writer = getattr(self.dev.bluez.bus, "_writer", None)  # dbus-fast internals
        if writer is not None and (writer.buf is not None or writer.messages):
            asyncio.get_running_loop().call_later(0.01, self._close_peer_fd_when_sent)
            return
        if self._peer_fd is not None:
            os.close(self._peer_fd)
            self._peer_fd = None

    def _on_notify_sock_event(self) -> None:
        try:
            data = self.notify_sock.recv(1) if self.notify_sock else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._release_acquired()

    @dbus_method(name="AcquireWrite")
    async def acquire_write(self, options: DBusDict) -> FdAndMtu:
        # Enough for bleak's _acquire_mtu(): hand out a socket, report MTU.
        self.dev.require_connected()
        if "write-without-response" not in self.char.flags:
            raise _err("NotSupported", "Operation is not supported")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.dev.keep_alive.append(ours)
        fd = theirs.detach()
        self.dev.keep_fds.append(fd)
        return [fd, self.dev.p.mtu]

    @dbus_method(name="Confirm")
    def confirm(self) -> NoReply:
        pass


class _GattService1(_Iface):
    NAME = "org.bluez.GattService1"
    SIGNATURES: ClassVar[dict[str, str]] = {
        "UUID": "s",
        "Device": "o",
        "Primary": "b",
        "Includes": "ao",
    }


class _Device1(_Iface):
    NAME = "org.bluez.Device1"
    SIGNATURES: ClassVar[dict[str, str]] = {
        "Address": "s",
        "AddressType": "s",
        "Name": "s",
        "Alias": "s",
        "Class": "u",
        "Appearance": "q",
        "Icon": "s",
        "Paired": "b",
        "Bonded": "b",
        "Trusted": "b",
        "Blocked": "b",
        "LegacyPairing": "b",
        "RSSI": "n",
        "TxPower": "n",
        "Connected": "b",
        "UUIDs": "as",
        "Modalias": "s",
        "Adapter": "o",
        "ManufacturerData": "a{qv}",
        "ServiceData": "a{sv}",
        "ServicesResolved": "b",
        "AdvertisingFlags": "ay",
        "AdvertisingData": "a{yv}",
        "WakeAllowed": "b",
    }
    WRITABLE = frozenset({"Alias", "Trusted", "Blocked", "WakeAllowed"})

    def __init__(
        self,
        props: dict[str, Any],
        bluez: FakeBlueZ,
        adapter: _Adapter1,
        p: FakePeripheral,
        path: str,
    ) -> None:
        super().__init__(props)
        self.bluez, self.adapter, self.p, self.path = bluez, adapter, p, path
        self.gatt_paths: list[str] = []
        self.gatt_exported = False
        self.chars: dict[str, _GattCharacteristic1] = {}
        self.keep_alive: list[socket.socket] = []
        self.keep_fds: list[int] = []
        self.stale_adv: set[str] = set()
        self.reports = 0
        self._connect_task: asyncio.Task[None] | None = None
        self._discovery_task: asyncio.Task[None] | None = None

    @staticmethod
    def adv_props(p: FakePeripheral) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if p.name is not None:
            props["Name"] = p.name
        props["RSSI"] = p.rssi
        if p.tx_power is not None:
            props["TxPower"] = p.tx_power
        if p.manufacturer_data:
            props["ManufacturerData"] = {
                k: Variant("ay", v) for k, v in p.manufacturer_data.items()
            }
        if p.service_data:
            props["ServiceData"] = {k: Variant("ay", v) for k, v in p.service_data.items()}
        props["UUIDs"] = list(p.service_uuids)
        return props

    @classmethod
    def build(cls, bluez: FakeBlueZ, adapter: _Adapter1, p: FakePeripheral) -> _Device1:
        path = f"{adapter.path}/dev_{p.address.replace(':', '_')}"
        props: dict[str, Any] = {
            "Address": p.address,
            "AddressType": p.address_type,
            "Alias": p.name if p.name is not None else p.address.replace(":", "-"),
            "Paired": False,
            "Bonded": False,
            "Trusted": False,
            "Blocked": False,
            "LegacyPairing": False,
            "Connected": False,
            "Adapter": adapter.path,
            "ServicesResolved": False,
            "AdvertisingFlags": b"\x06",
        }
        if p.appearance is not None:
            props["Appearance"] = p.appearance
        props.update(cls.adv_props(p))
        # every property that may ever appear must exist from the start
        # (dbus-fast properties are fixed per class); see README.
        for k in ("ManufacturerData", "ServiceData"):
            props.setdefault(k, {})
        return cls.create(props, bluez, adapter, p, path)

    def refresh_adv_props(self, rssi_jitter: int = 0) -> None:
        """Emit PropertiesChanged for advertising fields that changed (and for
        RSSI/TxPower after they were invalidated when discovery stopped)."""
        force, self.stale_adv = self.stale_adv, set()
        adv = self.adv_props(self.p)
        adv["RSSI"] = self.p.rssi + rssi_jitter
        adv.setdefault("ManufacturerData", {})
        adv.setdefault("ServiceData", {})
        changed = {}
        for k, v in adv.items():
            if k not in self.props:
                continue
            old = self.props[k]
            if k in ("ManufacturerData", "ServiceData"):
                same = {a: bytes(b.value) for a, b in old.items()} == {
                    a: bytes(b.value) for a, b in v.items()
                }
            else:
                same = old == v
            if not same or k in force:
                self.props[k] = v
                changed[k] = v
        if changed:
            self.emit_properties_changed(changed)

    def require_connected(self) -> None:
        if not self.p.connected:
            raise _err("Failed", "Not connected")

    # -- GATT objects ----------------------------------------------------------
    def export_gatt(self) -> None:
        if self.gatt_exported:
            return
        bus = self.bluez.running_bus()
        mode = self.bluez.claimed_services
        for s in self.p.services:
            claimed = s.uuid in CLAIMED_BY_BLUEZ and mode != "read-write"
            if claimed and mode == "hide":
                continue
            s.path = f"{self.path}/service{s.handle:04x}"
            so = _GattService1.create(
                {"UUID": s.uuid, "Device": self.path, "Primary": s.primary, "Includes": []}
            )
            bus.add_object(s.path, so)
            self.gatt_paths.append(s.path)
            for c in s.characteristics:
                c.path = f"{s.path}/char{c.handle:04x}"
                props: dict[str, Any] = {
                    "UUID": c.uuid,
                    "Service": s.path,
                    "Value": b"",
                    "Flags": list(c.flags),
                    "MTU": self.p.mtu,
                }
                if c.can_notify:
                    props["Notifying"] = False
                    props["NotifyAcquired"] = False
                if "write-without-response" in c.flags:
                    props["WriteAcquired"] = False
                co = _GattCharacteristic1.create(props, self, c)
                co.read_only = claimed
                bus.add_object(c.path, co)
                self.gatt_paths.append(c.path)
                self.chars[c.path] = co
                for d in c.descriptors:
                    d.path = f"{c.path}/desc{d.handle:04x}"
                    do = _GattDescriptor1.create(
                        {
                            "UUID": d.uuid,
                            "Characteristic": c.path,
                            "Value": b"",
                            "Flags": list(d.flags),
                        },
                        self,
                        d,
                    )
                    do.read_only = claimed
                    bus.add_object(d.path, do)
                    self.gatt_paths.append(d.path)
        self.gatt_exported = True

    def unexport_gatt(self) -> None:
        # children first, like BlueZ
        for path in reversed(self.gatt_paths):
            self.bluez.running_bus().remove_object(path)
        self.gatt_paths.clear()
        self.chars.clear()
        self.gatt_exported = False

    def deliver_notification(self, c: Characteristic, value: bytes) -> None:
        co = self.chars.get(c.path)
        if co is not None:
            co.deliver(value)

    # -- connection state machine -------------------------------------------
    async def _service_discovery(self) -> None:
        await asyncio.sleep(self.p.discovery_delay)
        if not self.p.connected:
            return
        self.export_gatt()
        # BlueZ re-registers notify sessions of clients still on the bus
        for co in self.chars.values():
            await co.refresh_subscription()
        self.set("ServicesResolved", True)

    async def drop_connection(self) -> None:
        if not self.p.connected:
            return
        self.p.connected = False
        if self._discovery_task:
            self._discovery_task.cancel()
        for co in self.chars.values():
            co._release_acquired()
            await co.refresh_subscription()  # Notifying=False, CCCD cleared
        for s in self.keep_alive:
            s.close()
        for fd in self.keep_fds:
            os.close(fd)
        self.keep_alive.clear()
        self.keep_fds.clear()
        self.set("ServicesResolved", False)
        self.set("Connected", False)
        if not self.bluez.gatt_cache:
            self.unexport_gatt()
        await self.p.on_disconnect()

    async def do_connect(self) -> None:
        p = self.p
        if p.connected:
            return
        if self._connect_task is not None:
            raise _err("InProgress", "In Progress")
        if p.fail_next_connect is not None:
            name, text = p.fail_next_connect
            p.fail_next_connect = None
            if text == "le-connection-abort-by-local":
                # BlueZ >= 5.62: the link came up and was dropped again, so
                # Connected flips True -> False before the error (bleak waits
                # for that before it retries).
                self.set("Connected", True)
                self.set("Connected", False)
            raise DBusError(name, text)
        self._connect_task = asyncio.current_task()
        try:
            if not p.connectable:
                await asyncio.Event().wait()  # until Disconnect() cancels it
            await asyncio.sleep(p.connect_delay)
        except asyncio.CancelledError:
            # device_request_disconnect(): pending Connect fails like this
            raise _err("Failed", "br-connection-canceled") from None
        finally:
            self._connect_task = None
        p.connected = True
        p.connect_count += 1
        self.set("Connected", True)
        await p.on_connect()
        # BlueZ replies to Connect once ATT is up; GATT discovery continues and
        # ends with ServicesResolved=True (src/device.c att_connect_cb).
        self._discovery_task = asyncio.ensure_future(self._service_discovery())

    # NB: dbus_method-decorated methods must not be called from Python (the
    # decorator drops the return value / coroutine); call do_connect() etc.
    @dbus_method(name="Connect")
    async def connect(self) -> NoReply:
        await self.do_connect()

    @dbus_method(name="Disconnect")
    async def disconnect(self) -> NoReply:
        # BlueZ: cancels a pending Connect; succeeds if not connected; else
        # replies once the link is down.
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self.p.connected:
            await asyncio.sleep(self.p.disconnect_delay)
            await self.drop_connection()

    @dbus_method(name="Pair")
    async def pair(self) -> NoReply:
        if self.props["Paired"]:
            raise _err("AlreadyExists", "Already Exists")
        if not self.p.connected:
            await self.do_connect()
        self.set("Paired", True)
        self.set("Bonded", True)

    @dbus_method(name="CancelPairing")
    def cancel_pairing(self) -> NoReply:
        pass

    def sender_gone(self, name: str) -> None:
        for co in self.chars.values():
            if name in co.sessions:
                co.sessions.discard(name)
                _background(co.refresh_subscription())


class _Adapter1(_Iface):
    NAME = "org.bluez.Adapter1"
    SIGNATURES: ClassVar[dict[str, str]] = {
        "Address": "s",
        "AddressType": "s",
        "Name": "s",
        "Alias": "s",
        "Class": "u",
        "Powered": "b",
        "PowerState": "s",
        "Discoverable": "b",
        "DiscoverableTimeout": "u",
        "Pairable": "b",
        "PairableTimeout": "u",
        "Discovering": "b",
        "UUIDs": "as",
        "Modalias": "s",
        "Roles": "as",
        "ExperimentalFeatures": "as",
        "Manufacturer": "q",
        "Version": "y",
    }
    WRITABLE = frozenset(
        {"Alias", "Powered", "Discoverable", "DiscoverableTimeout", "Pairable", "PairableTimeout"}
    )

    def __init__(self, props: dict[str, Any], bluez: FakeBlueZ, path: str) -> None:
        super().__init__(props)
        self.bluez, self.path = bluez, path
        self.discovery_clients: set[str] = set()
        self.filters: dict[str, dict[str, Any]] = {}  # sender -> filter
        self._scan_task: asyncio.Task[None] | None = None
        self._cleanup_task: asyncio.Task[None] | None = None

    def on_property_set(self, name: str, value: Any) -> None:
        if name == "Powered":
            self.set("PowerState", "on" if value else "off")

    @dbus_method(name="SetDiscoveryFilter")
    def set_discovery_filter(self, filt: DBusDict) -> NoReply:
        sender = _sender.get()
        f = {k: v.value for k, v in filt.items()}
        if f:
            self.filters[sender] = f
        else:
            self.filters.pop(sender, None)

    @dbus_method(name="GetDiscoveryFilters")
    def get_discovery_filters(self) -> Strings:
        return [
            "UUIDs",
            "RSSI",
            "Pathloss",
            "Transport",
            "DuplicateData",
            "Discoverable",
            "Pattern",
        ]

    @dbus_method(name="StartDiscovery")
    def start_discovery(self) -> NoReply:
        if not self.props["Powered"]:
            raise _err("NotReady", "Resource Not Ready")
        sender = _sender.get()
        if sender in self.discovery_clients:
            raise _err("InProgress", "Operation already in progress")
        self.discovery_clients.add(sender)
        if self._cleanup_task:
            self._cleanup_task.cancel()
            self._cleanup_task = None
        if self._scan_task is None:
            self.set("Discovering", True)
            self._scan_task = asyncio.ensure_future(self._scan())

    @dbus_method(name="StopDiscovery")
    def stop_discovery(self) -> NoReply:
        sender = _sender.get()
        if not self.props["Powered"]:
            raise _err("NotReady", "Resource Not Ready")
        if sender not in self.discovery_clients:
            raise _err("Failed", "No discovery started")
        self._drop_discovery_client(sender)

    def _drop_discovery_client(self, sender: str) -> None:
        self.discovery_clients.discard(sender)
        self.filters.pop(sender, None)
        if not self.discovery_clients and self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
            self.set("Discovering", False)
            # BlueZ drops RSSI/TxPower of devices when discovery stops and
            # removes temporary (unpaired, unconnected) devices after
            # TemporaryTimeout.
            for dev in self.bluez.devices_on(self):
                gone: list[str] = [k for k in ("RSSI", "TxPower") if k in dev.props]
                if gone and not dev.p.connected:
                    dev.emit_properties_changed({}, gone)
                    dev.stale_adv.update(gone)
            if self.bluez.temporary_timeout is not None:
                self._cleanup_task = asyncio.ensure_future(
                    self._remove_temporary(self.bluez.temporary_timeout)
                )

    async def _remove_temporary(self, after: float) -> None:
        await asyncio.sleep(after)
        for dev in list(self.bluez.devices_on(self)):
            if not dev.p.connected and not dev.props["Paired"] and not dev.props["Trusted"]:
                self.bluez.remove_device_object(dev)

    def _passes_filters(self, p: FakePeripheral) -> bool:
        if not self.filters:
            return True
        for f in self.filters.values():  # BlueZ merges filters: union
            uuids = {uuid128(u) for u in f.get("UUIDs", [])}
            if uuids and not uuids & (set(p.service_uuids) | set(p.service_data)):
                continue
            if "RSSI" in f and p.rssi < f["RSSI"]:
                continue
            return True
        return False

    async def _scan(self) -> None:
        next_due: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for p in self.bluez.peripherals_on(self):
                if not p.advertising or p.connected or not self._passes_filters(p):
                    continue
                if next_due.get(p.address, 0) > now:
                    continue
                next_due[p.address] = now + p.adv_interval
                dev = self.bluez.device_for(p)
                if dev is None:
                    self.bluez.export_device(self, p)  # InterfacesAdded
                else:
                    # each report carries a slightly different RSSI, which is
                    # what makes BlueZ emit PropertiesChanged for known devices
                    dev.reports += 1
                    dev.refresh_adv_props(rssi_jitter=-(dev.reports % 2))
            await asyncio.sleep(0.01)

    @dbus_method(name="RemoveDevice")
    async def remove_device(self, device: DBusObjectPath) -> NoReply:
        dev = self.bluez.device_by_path(device)
        if dev is None or dev.adapter is not self:
            raise _err("DoesNotExist", "Does Not Exist")
        if dev.p.connected:
            await dev.drop_connection()
        self.bluez.remove_device_object(dev)


class FakeBlueZ:
    """Serves ``org.bluez`` on the (private) system bus. Async context manager.

    ``gatt_cache``: BlueZ's default ``Cache=always`` keeps the GATT objects on
    D-Bus after a disconnect; set False to remove them (``Cache=no``).
    ``temporary_timeout``: seconds after the last StopDiscovery before
    unpaired, unconnected devices are removed (BlueZ default 30); None = never.
    ``claimed_services``: what happens to GAP/DIS/Battery/HID/ScanParam/MIDI
    services, which bluetoothd's own plugins claim: "hide" (BlueZ <= 5.79,
    e.g. Debian 12's 5.66: not on D-Bus at all), "read-only" (BlueZ >= 5.80
    default: writes fail NotAuthorized), "read-write".
    """

    def __init__(
        self,
        adapters: Iterable[str] = ("hci0",),
        *,
        gatt_cache: bool = True,
        temporary_timeout: float | None = 30.0,
        claimed_services: str = "hide",
    ) -> None:
        assert claimed_services in ("hide", "read-only", "read-write")
        self.claimed_services = claimed_services
        self.adapter_names = list(adapters)
        self.gatt_cache = gatt_cache
        self.temporary_timeout = temporary_timeout
        self.bus: _BlueZBus | None = None
        self.adapters: dict[str, _Adapter1] = {}
        self._peripherals: dict[str, tuple[FakePeripheral, str]] = {}  # addr -> (p, adapter)
        self._devices: dict[str, _Device1] = {}  # addr -> object

    def running_bus(self) -> _BlueZBus:
        if self.bus is None:
            raise RuntimeError("FakeBlueZ is not started")
        return self.bus

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> FakeBlueZ:
        bus = _BlueZBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        await bus.connect()
        self.bus = bus
        bus.add_message_handler(self._on_message)
        for i, name in enumerate(self.adapter_names):
            path = f"/org/bluez/{name}"
            a = _Adapter1.create(
                {
                    "Address": f"00:1A:7D:DA:71:{i:02X}",
                    "AddressType": "public",
                    "Name": f"fake-{name}",
                    "Alias": f"fake-{name}",
                    "Class": 0x7C0104,
                    "Powered": True,
                    "PowerState": "on",
                    "Discoverable": False,
                    "DiscoverableTimeout": 180,
                    "Pairable": True,
                    "PairableTimeout": 0,
                    "Discovering": False,
                    "UUIDs": [],
                    "Modalias": "usb:v1D6Bp0246d0542",
                    "Roles": ["central", "peripheral"],
                    "Manufacturer": 2,
                    "Version": 12,
                },
                self,
                path,
            )
            bus.add_object(path, a)
            self.adapters[name] = a
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"],
            )
        )
        reply = await bus.request_name("org.bluez")
        log.debug("request_name: %s", reply)
        for p, ad in self._peripherals.values():
            if p.known:
                self.export_device(self.adapters[ad], p)
        return self

    async def stop(self) -> None:
        for a in self.adapters.values():
            for t in (a._scan_task, a._cleanup_task):
                if t:
                    t.cancel()
        for dev in list(self._devices.values()):
            for t in (dev._connect_task, dev._discovery_task):
                if t:
                    t.cancel()
            for co in dev.chars.values():
                if co.notify_sock is not None:
                    co._release_acquired()
        if self.bus is not None:
            self.bus.disconnect()
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # dbus-fast
            self.bus = None

    async def __aenter__(self) -> FakeBlueZ:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.METHOD_CALL:
            _sender.set(msg.sender or "")
        elif (
            msg.message_type == MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.sender == "org.freedesktop.DBus"
        ):
            name, _old, new = msg.body
            if name.startswith(":") and not new:
                # client left the bus: BlueZ drops its discovery + notify sessions
                for a in self.adapters.values():
                    if name in a.discovery_clients:
                        a._drop_discovery_client(name)
                for dev in self._devices.values():
                    dev.sender_gone(name)
        return None  # never "handled": let dbus-fast dispatch

    # -- peripherals ----------------------------------------------------------------
    def add_peripheral(self, p: P, adapter: str = "hci0", known: bool = False) -> P:
        """Register a device. ``known=True``: the device object exists before any
        scan (like a paired/previously seen device); otherwise it appears on
        D-Bus (InterfacesAdded) the first time a scan "hears" it."""
        self._peripherals[p.address] = (p, adapter)
        p.known = known
        if known and self.bus is not None:
            self.export_device(self.adapters[adapter], p)
        return p

    def peripherals_on(self, a: _Adapter1) -> list[FakePeripheral]:
        return [p for p, ad in self._peripherals.values() if self.adapters.get(ad) is a]

    def devices_on(self, a: _Adapter1) -> list[_Device1]:
        return [d for d in self._devices.values() if d.adapter is a]

    def device_for(self, p: FakePeripheral) -> _Device1 | None:
        return self._devices.get(p.address)

    def device_by_path(self, path: str) -> _Device1 | None:
        return next((d for d in self._devices.values() if d.path == path), None)

    def export_device(self, a: _Adapter1, p: FakePeripheral) -> _Device1:
        dev = _Device1.build(self, a, p)
        p._device = dev
        self._devices[p.address] = dev
        self.running_bus().add_object(dev.path, dev)
        return dev

    def remove_device_object(self, dev: _Device1) -> None:
        dev.unexport_gatt()
        self.running_bus().remove_object(dev.path)
        self._devices.pop(dev.p.address, None)
        dev.p._device = None
