"""Which ``Host`` headers the console answers (DNS rebinding), on every bind.

A page from another site whose name is rebound to 127.0.0.1 (or to the unit's LAN address)
reaches the console from the nurse's own browser, as a loopback client that needs no PIN; only
the ``Host`` header still names the other site. So every request must name the unit itself:
``localhost``, ``127.0.0.1``, ``[::1]``, the bind address, the computer's host names and its
interface addresses, or a name of ``[console] allowed_hosts``. Anything else is refused before
any handler runs (:class:`HostGuard`): 421 for another name, 400 for a missing or malformed
header.

:func:`check_host` and :func:`allowed_names` are pure; :func:`unit_names` and
:func:`interface_addresses` read the machine (the host name, ``/proc/net``: no DNS), and
:class:`UnitHosts` reads them again, at most every ``REFRESH_S``, when a name is not known (a
DHCP lease that changed the van's address).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")
REFRESH_S: Final = 10.0


class HostVerdict(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no Host header (HTTP/1.0)
    MALFORMED = "malformed"
    UNKNOWN = "unknown"  # a name that is not the unit's: DNS rebinding, or a name to allow
    WRONG_PORT = "wrong-port"


REFUSALS: Final = {
    HostVerdict.MISSING: (400, "Bad request: no Host header."),
    HostVerdict.MALFORMED: (400, "Bad request: malformed Host header."),
    HostVerdict.UNKNOWN: (
        421,
        "Misdirected request: this console answers only to the unit's own "
        "names and addresses. If this name is the unit's, add it to "
        "[console] allowed_hosts.",
    ),
    HostVerdict.WRONG_PORT: (421, "Misdirected request: this console does not serve that port."),
}


def normalise(name: str) -> str:
    """A host name or address as compared: lower case, no trailing dot, no IPv6 brackets, an
    IP address in its canonical form."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def allowed_names(
    bind: str, names: Iterable[str], addresses: Iterable[str], extra: Iterable[str]
) -> frozenset[str]:
    """Every name the console answers: loopback, the bind address (not a wildcard), the unit's
    host names and interface addresses, and the configured ``allowed_hosts``."""
    found = {normalise(n) for n in (*LOOPBACK_NAMES, *names, *addresses, *extra) if n.strip()}
    if bind not in ("0.0.0.0", "::", ""):
        found.add(normalise(bind))
    found.discard("")
    return frozenset(found)


def split_host(header: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]``; None when malformed."""
    header = header.strip()
    if not header or any(c.isspace() or c in "/\\@?#" for c in header):
        return None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[: end + 1], header[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif header.count(":") == 1:
        name, port_text = header.split(":")
    elif ":" in header:
        return None  # a bare IPv6 address must be bracketed in a Host header
    else:
        name, port_text = header, None
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def check_host(header: str | None, allowed: frozenset[str], port: int) -> HostVerdict:
    """Is this ``Host`` header one of the unit's names, on the console's port (or none)?"""
    if header is None:
        return HostVerdict.MISSING
    parts = split_host(header)
    if parts is None:
        return HostVerdict.MALFORMED
    name, given = parts
    if normalise(name) not in allowed:
        return HostVerdict.UNKNOWN
    if given is not None and given != port:
        return HostVerdict.WRONG_PORT
    return HostVerdict.OK


# --- the machine's names (I/O) -------------------------------------------------------------
def unit_names() -> set[str]:
    """The computer's host names: its name and ``<name>.local`` (mDNS, how a tablet on the
    van's Wi-Fi may reach it). No DNS lookup (an offline van's resolver may hang, and this runs
    on the agent's event loop): a fully qualified name goes in ``allowed_hosts``."""
    host = socket.gethostname()
    return {host, f"{host.split('.')[0]}.local"} if host else set()


def interface_addresses(proc: Path = Path("/proc/net")) -> set[str]:
    """The addresses of the computer's interfaces: every local IPv4 address of the kernel's
    routing trie and every IPv6 address (files of ``/proc``: no DNS, no subprocess)."""
    found: set[str] = set()
    try:
        previous = ""
        for line in (proc / "fib_trie").read_text().splitlines():
            if "/32 host LOCAL" in line and previous.strip().startswith("|--"):
                found.add(previous.strip()[3:].strip())
            previous = line
    except OSError:
        pass
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            word = line.split()[0] if line.split() else ""
            if len(word) == 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(word))))
    except (OSError, ValueError):
        pass
    return found


@dataclass
class UnitHosts:
    """The allowed names, read again (at most every ``REFRESH_S``) when a name is unknown."""

    bind: str
    port: int
    extra: tuple[str, ...] = ()
    clock: Callable[[], float] = time.monotonic
    read_names: Callable[[], set[str]] = unit_names
    read_addresses: Callable[[], set[str]] = interface_addresses

    def __post_init__(self) -> None:
        self._read_at = self.clock()
        self.allowed = self._read()

    def _read(self) -> frozenset[str]:
        return allowed_names(self.bind, self.read_names(), self.read_addresses(), self.extra)

    def check(self, header: str | None) -> HostVerdict:
        verdict = check_host(header, self.allowed, self.port)
        if verdict is HostVerdict.UNKNOWN and self.clock() - self._read_at >= REFRESH_S:
            self._read_at = self.clock()
            self.allowed = self._read()
            verdict = check_host(header, self.allowed, self.port)
        return verdict


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HostGuard:
    """ASGI middleware, outermost: refuse a request naming another host before any handler."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], hosts: UnitHosts
    ) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        header = values[0].decode("latin-1") if len(values) == 1 else None
        verdict = (
            self.hosts.check(header) if len(values) <= 1 else HostVerdict.MALFORMED
        )  # two Host headers: refuse, do not pick one
        if verdict is HostVerdict.OK:
            await self.app(scope, receive, send)
            return
        status, text = REFUSALS[verdict]
        body = (text + "\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
