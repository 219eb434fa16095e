"""The web console over real HTTP (uvicorn on a loopback port, a real store): the page and its
live part, language and direction, CSRF and cross-site refusals, DNS-rebinding refusal, the
LAN PIN, and the patient panel with and without the encounter model."""

from __future__ import annotations

import asyncio
import html
import http.client
import logging
import re
import sqlite3
import ssl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edge_agent.console.serve import serve_console
from edge_agent.errors import ConfigError
from edge_agent.i18n import translator
from edge_agent.models import measurement
from edge_agent.settings import load
from edge_agent.store.encounters import masked
from edge_agent.store.writer import Store
from tests.broker import free_port, wait_for_port
from tests.console.unit import lan_tls, unit_config

IDENTIFIER = "PAT-7781-XYZ"


class Served:
    """serve_console in a thread with its own event loop, stopped through its stop event."""

    def __init__(self, cfg: Path) -> None:
        self.settings = load(cfg, environ={})
        self.port = self.settings.console.port
        self.host = self.settings.console.host
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        await serve_console(self.settings, self._stop)

    def __enter__(self) -> Served:
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)
        wait_for_port_on(self.host, self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self._loop.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        cookies: dict[str, str] | None = None,
    ) -> tuple[int, str, http.client.HTTPMessage]:
        where = (source, 0) if source else None
        c = self.settings.console
        conn = (
            http.client.HTTPSConnection(  # off loopback: HTTPS, trusting its certificate
                self.host,
                self.port,
                timeout=10,
                source_address=where,
                context=ssl.create_default_context(cafile=c.cert_file),
            )
            if c.tls
            else http.client.HTTPConnection(self.host, self.port, timeout=10, source_address=where)
        )
        h = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        data = None
        if body is not None:
            data = urlencode(body, doseq=True)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=data, headers=h)
        response = conn.getresponse()
        text = html.unescape(response.read().decode())  # Jinja escapes the apostrophes
        conn.close()
        return response.status, text, response.headers


def wait_for_port_on(host: str, port: int) -> None:
    if host == "127.0.0.1":
        wait_for_port(port)
        return
    import socket
    import time

    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # a port that is coming up, bounded by the deadline


def session(
    served: Served, lang: str = "fr", source: str | None = None
) -> tuple[dict[str, str], str, str]:
    status, page, headers = served.request("GET", f"/?lang={lang}", source=source)
    assert status == 200
    cookies = {}
    for value in headers.get_all("set-cookie") or []:
        name, _, rest = value.partition("=")
        cookies[name] = rest.split(";")[0]
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    return cookies, token.group(1) if token else "", page


def encounters_table(store: Path) -> None:
    """The patient model's table (migration m005_encounters) is in every current store."""
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'encounters'").fetchone()
    finally:
        conn.close()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    cfg = unit_config(tmp_path, console_port=free_port(), device=str(tmp_path / "tty-none"))
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result()
        store.append("ox", [measurement("spo2", 84.0)]).result()  # an alert
    yield cfg, tmp_path / "unit.db"


@pytest.mark.parametrize("lang", ["fr", "ar", "en"])
def test_page_in_each_language_with_its_direction(unit: tuple[Path, Path], lang: str) -> None:
    tr = translator(lang)
    with Served(unit[0]) as served:
        cookies, token, page = session(served, lang)
        assert f'<html lang="{lang}" dir="{"rtl" if lang == "ar" else "ltr"}">' in page
        assert tr("web.title") in page and token
        assert 'data-key="device:ox" data-status="fail"' in page
        assert tr("fix.serial_missing", noun=tr("device.noun.nonin"), device="ox") in page
        assert tr("patient.none") in page  # the patient model is there; nobody is open
        assert 'class="reading alert"' in page and tr("reading.alert") in page
        assert tr("reading.pending") in page
        assert "http://" not in page.replace(f"http://{served.host}", "")  # no CDN
        status, live, _ = served.request("GET", "/live", cookies=cookies)
        assert status == 200 and tr("web.checklist") in live
        for asset in ("/static/console.css", "/static/console.js"):
            assert served.request("GET", asset)[0] == 200


def test_actions_refuse_without_csrf_token_or_from_another_site(unit: tuple[Path, Path]) -> None:
    cfg, store = unit
    encounters_table(store)
    with Served(cfg) as served:
        cookies, token, _ = session(served)
        form = {"identifier": IDENTIFIER}
        assert served.request("POST", "/patient/open", body=form, cookies=cookies)[0] == 403
        assert (
            served.request(
                "POST", "/patient/open", body={**form, "csrf": "0" * 64}, cookies=cookies
            )[0]
            == 403
        )
        cross = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        assert (
            served.request("POST", "/patient/open", body=form, cookies=cookies, headers=cross)[0]
            == 403
        )
        site = {"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
        assert (
            served.request("POST", "/patient/open", body=form, cookies=cookies, headers=site)[0]
            == 403
        )
        # a token from another browser session does not fit this one
        other, _, _ = session(served)
        assert (
            served.request(
                "POST", "/patient/open", body=form, cookies=other, headers={"X-CSRF-Token": token}
            )[0]
            == 403
        )
        # DNS rebinding: a page of another name reaching the console
        assert served.request("GET", "/", headers={"Host": f"evil.example:{served.port}"})[0] == 421
        assert sqlite3.connect(store).execute("SELECT count(*) FROM encounters").fetchone()[0] == 0
        ok = served.request("POST", "/patient/open", body={**form, "csrf": token}, cookies=cookies)
        assert ok[0] == 200, ok


def test_patient_panel_unavailable_without_the_encounter_model(unit: tuple[Path, Path]) -> None:
    conn = sqlite3.connect(unit[1])  # a store from before the patient model (m005)
    conn.execute("DROP TABLE encounters")
    conn.commit()
    conn.close()
    with Served(unit[0]) as served:
        cookies, token, page = session(served, "en")
        assert 'id="open-form"' not in page
        status, body, _ = served.request(
            "POST",
            "/patient/open?lang=en",
            body={"identifier": IDENTIFIER, "csrf": token},
            cookies=cookies,
        )
        assert status == 409
        assert translator("en")("action.unavailable") in body


def test_open_assign_close_with_the_encounter_model(
    unit: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, store = unit
    encounters_table(store)
    caplog.set_level(logging.DEBUG)
    with Served(cfg) as served:
        cookies, token, page = session(served)
        assert 'id="open-form"' in page and translator("fr")("patient.none") in page

        def post(what: str, **form: str | list[str]) -> tuple[int, str]:
            status, body, _ = served.request(
                "POST", f"/patient/{what}", body={**form, "csrf": token}, cookies=cookies
            )
            return status, body

        assert post("open", identifier=IDENTIFIER, system="urn:oid:1.2.3")[0] == 200
        _, live, _ = served.request("GET", "/live", cookies=cookies)
        # the nurse sees whose readings these are, masked (tests/console/test_privacy.py)
        assert masked(IDENTIFIER) in live and IDENTIFIER not in live
        ids = [r[0] for r in sqlite3.connect(store).execute("SELECT id FROM readings")]
        assert f'value="{ids[0]}"' in live  # a checkbox per reading of no patient
        status, body = post("assign", reading=ids)
        assert status == 200 and "2 mesures attribuées au patient." in body
        _, live, _ = served.request("GET", "/live", cookies=cookies)
        section = live.split('id="patient-readings"')[1].split("</ul>")[0]
        assert section.count('class="reading') == 2
        assert post("close")[0] == 200
        assert post("close") == (409, '{"ok":false,"message":"Aucun patient n\'est ouvert."}')
        assert post("open", identifier="  ")[0] == 409
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "patient open" in logged and IDENTIFIER not in logged


def test_lan_needs_a_pin_and_the_pin(tmp_path: Path) -> None:
    port = free_port()
    lan = f'[console]\nenabled = true\nhost = "127.0.0.2"\nport = {port}\n'
    with pytest.raises(ConfigError) as err:
        load(unit_config(tmp_path, extra=lan), environ={})
    assert "pin" in str(err.value)
    cfg = unit_config(tmp_path, extra=lan + 'pin = "4821"\n' + lan_tls(tmp_path))
    with Store(tmp_path / "unit.db", "mmu-01"):
        pass
    tablet = "127.0.0.3"  # another address than this computer's loopback: a tablet on the LAN
    with Served(cfg) as served:
        cookies, token, page = session(served, source=tablet)
        assert 'name="pin"' in page and "data-key" not in page
        assert served.request("GET", "/live", source=tablet, cookies=cookies)[0] == 401
        assert (
            served.request(
                "POST", "/patient/close", source=tablet, cookies=cookies, body={"csrf": token}
            )[0]
            == 401
        )
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        wrong = served.request(
            "POST",
            "/login",
            source=tablet,
            cookies=cookies,
            body={"pin": "0000", "csrf": csrf.group(1)},
        )
        assert wrong[0] == 401 and translator("fr")("web.pin_wrong") in wrong[1]
        right = served.request(
            "POST",
            "/login",
            source=tablet,
            cookies=cookies,
            body={"pin": "4821", "csrf": csrf.group(1)},
        )
        assert right[0] == 303
        auth = next(v for v in right[2].get_all("set-cookie") or [] if v.startswith("auth="))
        cookies["auth"] = auth.split(";")[0].split("=", 1)[1]
        status, page, _ = served.request("GET", "/", source=tablet, cookies=cookies)
        assert status == 200 and 'data-key="agent"' in page
        # five wrong PINs lock this tablet, even for the right one (tests/console/test_lockout.py)
        for _ in range(5):
            served.request(
                "POST",
                "/login",
                source=tablet,
                cookies=cookies,
                body={"pin": "1111", "csrf": csrf.group(1)},
            )
        assert (
            served.request(
                "POST",
                "/login",
                source=tablet,
                cookies=cookies,
                body={"pin": "4821", "csrf": csrf.group(1)},
            )[0]
            == 429
        )
