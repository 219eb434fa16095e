"""DNS rebinding: the console answers only requests naming the unit itself, on every bind.

The decision (:func:`check_host`) is a table; the refusal is checked over real HTTP against the
console served by uvicorn, bound to 0.0.0.0 and to 127.0.0.1, with a patient open in a real
store: a forged ``Host`` (a page of another site rebound to this computer, a loopback client
that needs no PIN) gets 421 before any handler runs, and reads and changes nothing."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import ssl
from pathlib import Path

import pytest

from edge_agent.console.actions import open_encounter
from edge_agent.console.hosts import (
    HostVerdict,
    UnitHosts,
    allowed_names,
    check_host,
    interface_addresses,
)
from edge_agent.store.writer import Store
from tests.broker import free_port
from tests.console.test_web import IDENTIFIER, Served
from tests.console.unit import lan_tls, unit_config

ALLOWED = allowed_names(
    "192.168.8.20", {"mmu-01", "mmu-01.local"}, {"10.0.0.7", "fe80::1"}, ["van-12.lan"]
)


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        ("127.0.0.1:8470", HostVerdict.OK),
        ("localhost:8470", HostVerdict.OK),
        ("LOCALHOST.:8470", HostVerdict.OK),  # case and the root's trailing dot
        ("[::1]:8470", HostVerdict.OK),
        ("localhost", HostVerdict.OK),  # no port: the name decides
        ("192.168.8.20:8470", HostVerdict.OK),  # the bind address
        ("mmu-01:8470", HostVerdict.OK),
        ("mmu-01.local:8470", HostVerdict.OK),
        ("10.0.0.7:8470", HostVerdict.OK),  # an interface address
        ("[fe80::1]:8470", HostVerdict.OK),
        ("[FE80:0::1]:8470", HostVerdict.OK),
        ("van-12.lan:8470", HostVerdict.OK),  # [console] allowed_hosts
        ("evil.example:8470", HostVerdict.UNKNOWN),
        ("evil.example", HostVerdict.UNKNOWN),
        ("127.0.0.1.evil.example:8470", HostVerdict.UNKNOWN),
        ("mmu-01.evil.example:8470", HostVerdict.UNKNOWN),
        ("127.0.0.2:8470", HostVerdict.UNKNOWN),
        ("0.0.0.0:8470", HostVerdict.UNKNOWN),  # the wildcard is not a name of the unit
        ("127.0.0.1:8471", HostVerdict.WRONG_PORT),
        (None, HostVerdict.MISSING),
        ("", HostVerdict.MALFORMED),
        ("::1", HostVerdict.MALFORMED),  # IPv6 unbracketed
        ("[::1", HostVerdict.MALFORMED),
        ("localhost:http", HostVerdict.MALFORMED),
        ("localhost:0", HostVerdict.MALFORMED),
        ("localhost@evil.example", HostVerdict.MALFORMED),
        ("local host", HostVerdict.MALFORMED),
    ],
)
def test_host_table(header: str | None, verdict: HostVerdict) -> None:
    assert check_host(header, ALLOWED, 8470) is verdict


def test_wildcard_bind_adds_no_name() -> None:
    assert (
        allowed_names("0.0.0.0", [], [], [])
        == allowed_names("::", [], [], [])
        == {"localhost", "127.0.0.1", "::1"}
    )


def test_names_read_again_when_unknown_at_most_every_ten_seconds() -> None:
    now = [0.0]
    addresses = [{"10.0.0.7"}]
    hosts = UnitHosts(
        "0.0.0.0", 8470, clock=lambda: now[0], read_names=set, read_addresses=lambda: addresses[0]
    )
    addresses[0] = {"10.0.0.9"}  # a new DHCP lease
    assert hosts.check("10.0.0.9:8470") is HostVerdict.UNKNOWN  # read less than 10 s ago
    now[0] = 10.0
    assert hosts.check("10.0.0.9:8470") is HostVerdict.OK
    assert hosts.check("10.0.0.7:8470") is HostVerdict.UNKNOWN


def test_interface_addresses_include_loopback() -> None:
    assert "127.0.0.1" in interface_addresses()


def raw_request(served: Served, data: bytes) -> bytes:
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(socket.create_connection(("127.0.0.1", served.port), timeout=10))
        c = served.settings.console
        if c.tls:  # off loopback the console speaks HTTPS only
            conn = stack.enter_context(
                ssl.create_default_context(cafile=c.cert_file).wrap_socket(
                    conn, server_hostname="127.0.0.1"
                )
            )
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1"])
def test_forged_host_refused_before_any_handler(tmp_path: Path, bind: str) -> None:
    port = free_port()
    cfg = unit_config(
        tmp_path,
        extra=(
            f'[console]\nenabled = true\nhost = "{bind}"\nport = {port}\npin = "4821"\n'
            'allowed_hosts = ["van-12.lan"]\n' + lan_tls(tmp_path)
        ),
    )
    store = tmp_path / "unit.db"
    with Store(store, "mmu-01"):
        pass
    assert open_encounter(store, IDENTIFIER, "urn:oid:1.2.3").ok
    with Served(cfg) as served:
        served.host = "127.0.0.1"  # connect from this computer: a client that needs no PIN
        own = {"Host": f"127.0.0.1:{port}"}
        status, page, headers = served.request("GET", "/", headers=own)
        assert status == 200 and "csrf-token" in page
        cookies = {}
        for value in headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            cookies[name] = rest.split(";")[0]
        token = page.split('name="csrf-token" content="')[1].split('"')[0]
        # The rebound page: another site's name, this computer's address.
        evil = {"Host": f"evil.example:{port}"}
        for path in ("/", "/live", "/static/console.js", "/nowhere"):
            status, body, headers = served.request("GET", path, headers=evil)
            assert status == 421, (path, status)
            assert IDENTIFIER[-3:] not in body and "csrf" not in body
            assert "allowed_hosts" in body and headers["cache-control"] == "no-store"
        for what in ("close", "open"):
            status, body, _ = served.request(
                "POST",
                f"/patient/{what}",
                cookies=cookies,
                body={"csrf": token, "identifier": "SOMEONE-ELSE"},
                headers={**evil, "X-CSRF-Token": token},
            )
            assert status == 421
        db = sqlite3.connect(store)
        assert db.execute("SELECT count(*) FROM encounters").fetchone()[0] == 1
        assert (
            db.execute("SELECT count(*) FROM encounters WHERE closed_at IS NULL").fetchone()[0] == 1
        )
        db.close()
        assert served.request("GET", "/", headers={"Host": f"127.0.0.1:{port + 1}"})[0] == 421
        # The unit's own names and addresses, and the configured one, are served.
        names = ["127.0.0.1", "localhost", "[::1]", "van-12.lan", socket.gethostname()]
        if bind != "0.0.0.0":
            names.append(bind)
        names += sorted(f"[{a}]" if ":" in a else a for a in interface_addresses())
        for name in names:
            assert served.request("GET", "/live", headers={"Host": f"{name}:{port}"})[0] == 200, (
                name
            )
        # HTTP/1.0 without a Host header: 400 with the reason, not the page.
        answer = raw_request(served, b"GET / HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"no Host header" in answer
