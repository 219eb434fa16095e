"""The LAN console over HTTPS (issue 21, item 5): the PIN never crosses the van's Wi-Fi in
clear. Real uvicorn with TLS on real sockets, a real Chromium for the PIN form, `console
cert` and `doctor` on a real certificate."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from edge_agent.checks import doctor
from edge_agent.cli import app
from edge_agent.console.hosts import interface_addresses
from edge_agent.console.serve import serve_console
from edge_agent.errors import ConfigError
from edge_agent.settings import load
from edge_agent.store.writer import Store
from tests.broker import free_port
from tests.console.test_web import Served, session
from tests.console.unit import lan_tls, unit_config
from tests.tls import make_ca, make_cert

TABLET = "127.0.0.3"  # another address than this computer's 127.0.0.1: a tablet on the LAN


def lan_config(tmp: Path, host: str = "127.0.0.2", tls: str | None = None) -> Path:
    port = free_port()
    with Store(tmp / "unit.db", "mmu-01"):
        pass
    return unit_config(
        tmp,
        extra=(
            f'[console]\nenabled = true\nhost = "{host}"\nport = {port}\n'
            f'pin = "4821"\n' + (lan_tls(tmp) if tls is None else tls)
        ),
    )


def set_cookies(headers: object) -> dict[str, str]:
    return {v.split("=", 1)[0]: v for v in headers.get_all("set-cookie") or []}  # type: ignore[attr-defined]


def plain_http(host: str, port: int) -> bytes:
    """A plain HTTP request to the HTTPS port: what comes back before the server hangs up."""
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_lan_console_is_https_only_and_its_cookies_are_secure(tmp_path: Path) -> None:
    with Served(lan_config(tmp_path)) as served:
        cookies, _, page = session(served, source=TABLET)
        sent = set_cookies(served.request("GET", "/", source=TABLET)[2])
        assert {"sid", "lang"} <= sent.keys() or "sid" in sent
        assert all("; secure" in v.lower() for v in sent.values()), sent
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        right = served.request(
            "POST",
            "/login",
            source=TABLET,
            cookies=cookies,
            body={"pin": "4821", "csrf": csrf.group(1)},
        )
        assert right[0] == 303
        auth = set_cookies(right[2])["auth"].lower()
        assert "; secure" in auth and "; httponly" in auth and "samesite=strict" in auth
        # No page, no PIN form, over plain HTTP on the same port: the server hangs up.
        answer = plain_http(served.host, served.port)
        assert b"HTTP/1.1 200" not in answer and b"pin" not in answer, answer[:200]


def test_loopback_console_stays_plain_http_without_secure(tmp_path: Path) -> None:
    port = free_port()
    with Store(tmp_path / "unit.db", "mmu-01"):
        pass
    cfg = unit_config(tmp_path, extra=f"[console]\nenabled = true\nport = {port}\n")
    with Served(cfg) as served:
        status, page, headers = served.request("GET", "/")
        assert status == 200 and 'id="cert-fingerprint"' not in page
        assert all("secure" not in v.lower() for v in set_cookies(headers).values())


def test_the_fingerprint_is_on_the_units_own_screen_only(tmp_path: Path) -> None:
    cfg = lan_config(tmp_path, host="0.0.0.0")
    expected = doctor.check_console_tls(load(cfg, environ={}), datetime.now(UTC))[0]
    with Served(cfg) as served:
        served.host = "127.0.0.1"  # the unit's own screen: loopback, over the same HTTPS
        status, page, _ = served.request("GET", "/")
        shown = re.search(r'id="cert-fingerprint" dir="ltr">([0-9A-F:]{95})<', page)
        assert status == 200 and shown is not None
        assert f"SHA-256 {shown.group(1)}," in expected.detail
        served.host = "127.0.0.2"
        _, page, _ = served.request("GET", "/", source=TABLET)  # a tablet: not proof of anything
        assert "cert-fingerprint" not in page


def test_no_certificate_no_console_off_loopback(tmp_path: Path) -> None:
    import asyncio

    missing = f'cert_file = "{tmp_path / "none.pem"}"\nkey_file = "{tmp_path / "none.key"}"\n'
    settings = load(lan_config(tmp_path, tls=missing), environ={})
    with pytest.raises(ConfigError) as err:
        asyncio.run(serve_console(settings, asyncio.Event()))
    assert err.value.field == "cert_file" and "console cert" in err.value.fix
    with socket.socket() as probe:  # nothing was served, not even plain HTTP
        assert probe.connect_ex(("127.0.0.2", settings.console.port)) != 0


def test_console_cert_command_and_doctor(tmp_path: Path) -> None:
    tls = f'cert_file = "{tmp_path / "tls/c.pem"}"\nkey_file = "{tmp_path / "tls/c.key"}"\n'
    cfg = lan_config(tmp_path, host="0.0.0.0", tls=tls)
    runner = CliRunner()
    done = runner.invoke(app, ["console", "cert", "-c", str(cfg)])
    assert done.exit_code == 0, done.output
    key = tmp_path / "tls/c.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "tls/c.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    assert "127.0.0.1" in names and names >= {a for a in interface_addresses() if "." in a}
    fp = ":".join(
        f"{b:02X}"
        for b in cert.fingerprint(
            __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()
        )
    )
    assert f"SHA-256 fingerprint: {fp}" in done.output
    again = runner.invoke(app, ["console", "cert", "-c", str(cfg)])
    assert again.exit_code == 3 and "--replace" in again.output  # never overwritten silently

    settings = load(cfg, environ={})
    now = datetime.now(UTC)
    checks = {c.name: c for c in doctor.check_console_tls(settings, now)}
    assert checks["console tls"].status == "ok" and fp in checks["console tls"].detail
    assert checks["console tls key mode"].status == "ok"
    late = doctor.check_console_tls(settings, now + timedelta(days=5 * 365 - 10))[0]
    assert late.status == "fail" and "console cert --replace" in late.fix
    key.chmod(0o644)
    checks = {c.name: c for c in doctor.check_console_tls(settings, now)}
    assert checks["console tls key mode"].status == "fail"
    key.unlink()
    gone = doctor.check_console_tls(settings, now)[0]
    assert gone.status == "fail" and "console cert" in gone.fix


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="chromium and chromium-driver are not installed (bash scripts/setup)",
)
def test_pin_form_over_https_in_chromium(tmp_path: Path) -> None:
    """A tablet's browser: the test CA's server certificate trusted by its SPKI hash (nothing
    else ignored), the PIN form over HTTPS, and the session cookies Secure. (With the console's
    old ``Referrer-Policy: no-referrer`` Chromium posted the form with ``Origin: null`` and the
    same-origin check refused the PIN: 403.)"""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    lan = sorted(a for a in interface_addresses() if "." in a and not a.startswith("127."))
    if not lan:
        pytest.skip("no non-loopback IPv4 address: Chromium would be a local client")
    folder = tmp_path / "pki"
    folder.mkdir()
    make_ca(folder)
    cert, key = make_cert(folder, "console", server=True)
    spki = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cfg = lan_config(tmp_path, host=lan[0], tls=f'cert_file = "{cert}"\nkey_file = "{key}"\n')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--lang=fr",
        "--ignore-certificate-errors-spki-list="
        + base64.b64encode(hashlib.sha256(spki).digest()).decode(),
    ):
        options.add_argument(arg)
    with Served(cfg) as served:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            wait = WebDriverWait(browser, 20, poll_frequency=0.1)
            browser.get(f"https://{lan[0]}:{served.port}/?lang=fr")
            box = wait.until(lambda b: b.find_element(By.NAME, "pin"), browser.page_source[:300])
            secure = browser.execute_script("return window.isSecureContext")
            assert secure is True, browser.get_cookies()
            assert {c["name"] for c in browser.get_cookies()} >= {"sid"}, browser.get_cookies()
            box.send_keys("4821")
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            wait.until(
                lambda b: b.find_elements(By.CSS_SELECTOR, "#live"), browser.page_source[:600]
            )
            cookies = {c["name"]: c for c in browser.get_cookies()}
            assert {"sid", "auth"} <= cookies.keys()
            assert all(
                c["secure"] and c["sameSite"] == "Strict"
                for c in cookies.values()
                if c["name"] in ("sid", "auth")
            ), cookies
            assert browser.current_url.startswith("https://")
        finally:
            browser.quit()
        assert b"HTTP/1.1 200" not in plain_http(lan[0], served.port)
