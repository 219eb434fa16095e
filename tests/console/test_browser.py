"""The console in a real browser: Debian's headless Chromium driven by Selenium against the
real agent (`edge-agent run` with a simulated oximeter on a pty), syncing through a real
Mosquitto to the reference receiver. Checklist tiles, a reading appearing without a reload,
its "received by central" mark once the receiver acknowledged it, opening a patient, the page
in Arabic right to left; a screenshot per language is kept as a test artefact
(``test-artefacts/console/``, or $EDGE_AGENT_ARTEFACTS). No browser is downloaded: Chromium
and chromedriver come from Debian (scripts/setup installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from edge_agent.i18n import translator
from edge_agent.store.writer import Store
from tests.broker import MosquittoBroker, free_port, wait_for_port
from tests.console.unit import ROOT, env, running_agent, unit_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTEFACTS = Path(os.environ.get("EDGE_AGENT_ARTEFACTS", ROOT / "test-artefacts")) / "console"
IDENTIFIER = "PAT-0042"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        pytest.fail("chromium/chromium-driver missing: scripts/setup installs them", pytrace=False)
    pytest.skip(
        "chromium and chromium-driver are not installed (bash scripts/setup)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def ids(browser: webdriver.Chrome) -> list[str]:
    found = browser.execute_script(
        "return Array.from(document.querySelectorAll('#recent-readings .reading'))"
        ".map(e => e.dataset.id);"
    )
    return [str(i) for i in found]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,1500",
        "--lang=fr",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def receiver(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Path]:
    central = tmp_path / "central.db"
    log = (tmp_path / "receiver.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "receive",
            "--db",
            str(central),
            "--broker",
            f"127.0.0.1:{mosquitto.port}",
        ],
        stdout=log,
        stderr=log,
        env=env(),
    )
    try:
        yield central
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_console_in_chromium(
    tmp_path: Path, mosquitto: MosquittoBroker, receiver: Path, browser: webdriver.Chrome
) -> None:
    port = free_port()
    with PtyDevice(NoninModel(2, seed=3)) as device:
        cfg = unit_config(
            tmp_path, lang="fr", device=device.path, broker_port=mosquitto.port, console_port=port
        )
        store = tmp_path / "unit.db"
        with Store(store, "mmu-01"):
            pass
        with running_agent(cfg, store):
            wait_for_port(port)
            # The live part is replaced every 2 s: read it in one script, or retry stale nodes.
            wait = WebDriverWait(
                browser, 20, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
            )
            browser.get(f"http://127.0.0.1:{port}/?lang=fr")
            tr = translator("fr")
            tiles = browser.execute_script(
                "const out = {}; document.querySelectorAll('#checklist .tile').forEach("
                "t => { out[t.dataset.key] = t.dataset.status; }); return out;"
            )
            assert {
                "agent",
                "store",
                "disk",
                "device:ox",
                "clock",
                "link",
                "backlog",
            } <= tiles.keys()
            assert tiles["agent"] == "ok" and tiles["device:ox"] == "ok"
            browser.execute_script("window.notReloaded = true;")
            seen = set(ids(browser))
            # A new reading from the simulated oximeter appears without reloading the page.
            wait.until(lambda b: set(ids(b)) - seen)
            # ... and is marked once central has stored it (the receiver's ack).
            marks = wait.until(
                lambda b: b.execute_script(
                    "return Array.from(document.querySelectorAll('#recent-readings "
                    '.reading[data-sent="yes"] .mark.sent\')).map(e => e.textContent.trim());'
                )
            )
            assert marks[0] == tr("reading.received")
            assert browser.execute_script("return window.notReloaded === true;")
            # Open a patient: the identifier goes in the POST body, the panel names them.
            box = browser.find_element(By.NAME, "identifier")
            box.send_keys(IDENTIFIER)
            browser.find_element(By.CSS_SELECTOR, "#open-form button").click()
            # ... masked (its last 3 characters) until the nurse asks to see it whole
            wait.until(lambda b: IDENTIFIER[-3:] in b.find_element(By.ID, "patient-text").text)
            assert IDENTIFIER not in browser.find_element(By.TAG_NAME, "body").text
            browser.find_element(By.CSS_SELECTOR, "#reveal-form button").click()
            wait.until(lambda b: b.find_element(By.ID, "revealed").text == IDENTIFIER)
            assert IDENTIFIER not in browser.current_url
            wait.until(lambda b: b.find_element(By.ID, "link").get_attribute("class") == "tile ok")
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTEFACTS / "console-fr.png"))
            for lang in ("ar", "en"):
                browser.find_element(By.CSS_SELECTOR, f'nav a[hreflang="{lang}"]').click()

                def switched(b: webdriver.Chrome, lang: str = lang) -> bool:
                    return b.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang

                wait.until(switched)
                html = browser.find_element(By.TAG_NAME, "html")
                assert html.get_attribute("dir") == ("rtl" if lang == "ar" else "ltr")
                heading = browser.find_element(By.TAG_NAME, "h1").text
                assert heading.startswith(translator(lang)("web.title"))
                if lang == "ar":
                    # right to left for real: the heading starts at the right edge
                    body = browser.find_element(By.TAG_NAME, "header").rect
                    h1 = browser.find_element(By.TAG_NAME, "h1").rect
                    assert h1["x"] + h1["width"] > body["x"] + body["width"] - 40
                    wait.until(
                        lambda b: (
                            translator("ar")("reading.received")
                            in b.find_element(By.ID, "recent-readings").text
                        )
                    )
                browser.save_screenshot(str(ARTEFACTS / f"console-{lang}.png"))
    for lang in ("fr", "ar", "en"):
        assert (ARTEFACTS / f"console-{lang}.png").stat().st_size > 10_000


def test_a_frozen_or_stopped_agent_greys_the_page_and_a_silent_oximeter_is_amber(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """The console runs inside the agent: frozen (SIGSTOP) it keeps the page's requests
    open and never answers; stopped, it refuses them. Either way the page gives up after a
    few seconds and turns grey under an announced banner, in the page's language."""
    import signal

    port = free_port()
    tr = translator("ar")
    with PtyDevice(NoninModel(7, seed=4)) as device:
        cfg = unit_config(tmp_path, lang="ar", device=device.path, console_port=port)
        cfg.write_text(cfg.read_text().replace("data_format = 2", "data_format = 7"))
        store = tmp_path / "unit.db"
        with running_agent(cfg, store) as agent:
            wait_for_port(port)
            wait = WebDriverWait(
                browser, 60, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
            )
            browser.get(f"http://127.0.0.1:{port}/?lang=ar")

            def state(b: webdriver.Chrome) -> dict[str, Any]:
                found: dict[str, Any] = b.execute_script(
                    "const t = document.querySelector('#checklist .tile[data-key=\"device:ox\"]');"
                    "const lost = document.getElementById('lost');"
                    "return {device: t && t.dataset.status, detail: t && t.querySelector("
                    "'.detail').textContent, grey: document.body.classList.contains("
                    "'unanswered'), banner: !lost.hidden, text: lost.textContent,"
                    "role: lost.getAttribute('role')};"
                )
                return found

            wait.until(lambda b: state(b)["device"] == "ok" and not state(b)["grey"])
            device.paused.set()  # plugged, silent
            wait.until(lambda b: state(b)["device"] == "warn")
            assert state(browser)["detail"].startswith(tr("device.silent", time="")[:8])
            device.paused.clear()
            wait.until(lambda b: state(b)["device"] == "ok")
            os.kill(agent.pid, signal.SIGSTOP)  # the fault under test: a frozen agent
            try:
                wait.until(lambda b: state(b)["grey"])
                seen = state(browser)
                assert seen["banner"] and seen["role"] == "alert"
                assert seen["text"] == tr("web.no_answer")
                ARTEFACTS.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(ARTEFACTS / "console-not-answering-ar.png"))
            finally:
                os.kill(agent.pid, signal.SIGCONT)
            wait.until(lambda b: not state(b)["grey"] and not state(b)["banner"])
            agent.send_signal(signal.SIGTERM)  # stopped: the requests are refused
            agent.wait(20)
            wait.until(lambda b: state(b)["grey"] and state(b)["banner"])
