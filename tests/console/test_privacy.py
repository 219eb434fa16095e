"""Patient data neither cached by the browser nor shown whole by default.

- Every route of the app (enumerated from the app itself, so a new route cannot escape) answers
  ``Cache-Control: no-store``, for an authorised nurse and for a tablet without the PIN, over
  real HTTP; only the static files may be cached.
- The console and ``edge-agent status`` show the open patient's identifier masked (its last 3
  characters, as ``patient current``); the whole identifier only on a deliberate reveal: the
  console's button (POST ``/patient/reveal``, CSRF-checked) and ``status --reveal``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from starlette.routing import Mount, Route
from typer.testing import CliRunner

from edge_agent.cli import app as cli
from edge_agent.console.actions import open_encounter
from edge_agent.console.app import create_app
from edge_agent.i18n import translator
from edge_agent.settings import load
from edge_agent.store.encounters import masked
from edge_agent.store.writer import Store
from tests.broker import free_port
from tests.console.test_web import IDENTIFIER, Served, session
from tests.console.unit import lan_tls, unit_config

# Values for the path parameters of the app's routes: a route with a parameter not named here
# fails the test (add its values), it does not escape it.
PATH_VALUES = {"what": ["open", "close", "assign", "reveal", "unknown"]}
MASKED = masked(IDENTIFIER)


@pytest.fixture
def lan_unit(tmp_path: Path) -> tuple[Path, Path]:
    port = free_port()
    cfg = unit_config(
        tmp_path,
        device=str(tmp_path / "tty-none"),
        extra=(
            f'[console]\nenabled = true\nhost = "127.0.0.2"\nport = {port}\npin = "4821"\n'
            + lan_tls(tmp_path)
        ),
    )
    store = tmp_path / "unit.db"
    with Store(store, "mmu-01"):
        pass
    assert open_encounter(store, IDENTIFIER, "urn:oid:1.2.3").ok
    return cfg, store


def paths(template: str) -> list[str]:
    names = re.findall(r"{(\w+)(?::\w+)?}", template)
    assert set(names) <= PATH_VALUES.keys(), f"{template}: give PATH_VALUES for {names}"
    found = [template]
    for name in names:
        found = [
            re.sub("{" + name + r"(?::\w+)?}", value, p)
            for p in found
            for value in PATH_VALUES[name]
        ]
    return found


def test_every_route_says_no_store(lan_unit: tuple[Path, Path]) -> None:
    cfg, _ = lan_unit
    routes = create_app(load(cfg, environ={})).routes
    assert any(isinstance(r, Mount) for r in routes)
    kinds: set[str] = set()
    checked = 0
    with Served(cfg) as served:
        nurse, token, _ = session(served, source="127.0.0.1")  # on this computer: no PIN
        tablet, _, _ = session(served, source="127.0.0.3")  # on the LAN, without the PIN
        for route in routes:
            if isinstance(route, Mount):  # the static files: no patient data, may be cached
                assert route.path == "/static"
                continue
            assert isinstance(route, Route), f"{route!r}: a kind of route this test ignores"
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                for path in paths(route.path):
                    for source, cookies in (("127.0.0.1", nurse), ("127.0.0.3", tablet)):
                        body = (
                            {"csrf": token, "identifier": IDENTIFIER, "pin": "0000"}
                            if method == "POST"
                            else None
                        )
                        status, text, headers = served.request(
                            method, path, source=source, cookies=cookies, body=body
                        )
                        where = f"{method} {path} from {source}: {status}"
                        assert "no-store" in (headers["cache-control"] or ""), where
                        kinds.add((headers["content-type"] or "").split(";")[0])
                        checked += 1
                        if path != "/patient/reveal":
                            assert IDENTIFIER not in text, where
        assert served.request("GET", "/static/console.js")[0] == 200
    assert {"text/html", "application/json"} <= kinds
    assert checked >= 2 * (2 + 1 + 5)


def test_console_masks_the_identifier_until_the_nurse_reveals_it(
    lan_unit: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, _ = lan_unit
    caplog.set_level(logging.DEBUG)
    en = translator("en")
    with Served(cfg) as served:
        cookies, token, page = session(served, "en", source="127.0.0.1")
        _, live, _ = served.request("GET", "/live", source="127.0.0.1", cookies=cookies)
        for shown in (page, live):
            assert IDENTIFIER not in shown and MASKED in shown
        assert 'id="reveal-form"' in page and en("web.reveal") in page

        def reveal(**headers: str) -> tuple[int, str]:
            status, body, answer = served.request(
                "POST",
                "/patient/reveal?lang=en",
                source="127.0.0.1",
                cookies=cookies,
                body={"csrf": token},
                headers=headers,
            )
            assert answer["cache-control"] == "no-store"
            return status, body

        status, body = reveal()
        assert status == 200
        assert json.loads(body) == {
            "ok": True,
            "identifier": IDENTIFIER,
            "message": en("action.revealed"),
        }
        assert reveal(Origin="http://evil.example")[0] == 403  # another site cannot read it
        status, body, _ = served.request(
            "POST", "/patient/reveal", source="127.0.0.1", cookies=cookies, body={"csrf": "0" * 64}
        )
        assert status == 403 and IDENTIFIER not in body
        assert (
            served.request(
                "POST", "/patient/close", source="127.0.0.1", cookies=cookies, body={"csrf": token}
            )[0]
            == 200
        )
        status, body = reveal()
        assert status == 409 and json.loads(body)["identifier"] is None
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "patient reveal" in logged and IDENTIFIER not in logged


@pytest.mark.parametrize("lang", ["fr", "ar", "en"])
def test_status_masks_the_identifier_unless_reveal(lan_unit: tuple[Path, Path], lang: str) -> None:
    cfg, _ = lan_unit
    runner = CliRunner()
    base = ["status", "--config", str(cfg), "--lang", lang]
    text = runner.invoke(cli, base).output
    assert MASKED in text and IDENTIFIER not in text
    body = json.loads(runner.invoke(cli, [*base, "--json"]).output)
    assert MASKED in body["patient"] and IDENTIFIER not in json.dumps(body)
    assert IDENTIFIER in runner.invoke(cli, [*base, "--reveal"]).output
    body = json.loads(runner.invoke(cli, [*base, "--json", "--reveal"]).output)
    assert IDENTIFIER in body["patient"]
