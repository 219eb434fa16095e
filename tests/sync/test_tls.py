"""TLS with client certificates and the shipped per-unit ACL (config/mosquitto/edge-agent.acl),
on a real Mosquitto: a unit syncs; it cannot publish as another unit; no certificate, no link."""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.models import measurement
from edge_agent.settings import BrokerSettings, Settings, StoreSettings, SyncSettings, UnitSettings
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.link import LinkEvent, LinkOptions, MqttLink, TlsFiles
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until
from tests.tls import make_ca, make_cert

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    make_ca(folder)
    make_cert(folder, "broker", server=True)
    for name in ("mmu-a", "mmu-b", "receiver"):
        make_cert(folder, name)
    return folder


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Path) -> Iterator[MosquittoBroker]:
    acl = tmp_path / "edge-agent.acl"
    shutil.copy(ROOT / "config" / "mosquitto" / "edge-agent.acl", acl)
    extra = (
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\n"
        f"keyfile {pki / 'broker.key'}\nrequire_certificate true\n"
        f"use_identity_as_username true\ntls_version tlsv1.2\nacl_file {acl}\n"
    )
    broker = MosquittoBroker(tmp_path / "broker", extra_config=extra, anonymous=False)
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()


def files(pki: Path, name: str) -> TlsFiles:
    return TlsFiles(pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key")


async def next_of(queue: asyncio.Queue[LinkEvent], kind: str) -> LinkEvent:
    async with asyncio.timeout(15):
        while True:
            event = await queue.get()
            if event.kind == kind:
                return event


async def test_unit_syncs_over_mutual_tls(
    tmp_path: Path, pki: Path, tls_broker: MosquittoBroker
) -> None:
    unit_files = files(pki, "mmu-a")
    cfg = Settings(
        unit=UnitSettings(id="mmu-a"),
        store=StoreSettings(path=tmp_path / "unit.db"),
        broker=BrokerSettings(
            host="127.0.0.1",
            port=tls_broker.port,
            tls=True,
            ca_file=unit_files.ca_file,
            cert_file=unit_files.cert_file,
            key_file=unit_files.key_file,
        ),
        sync=SyncSettings(batch_size=20, ack_timeout_s=2.0),
    )
    stop = asyncio.Event()
    central = tmp_path / "central.db"
    with Store(cfg.store.path, "mmu-a") as store:
        appended = [store.append("ox", [measurement("spo2", 96.0)]) for _ in range(100)]
        for future in appended:  # all committed before "nothing pending" can mean done
            future.result(30)
        receiver = Receiver(
            "127.0.0.1", tls_broker.port, central, tls=files(pki, "receiver"), client_id="receiver"
        )
        tasks = [
            asyncio.create_task(receiver.run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 60, "drain")
        stop.set()
        await asyncio.gather(*tasks)
    assert assert_exactly_once(cfg.store.path, central, unit="mmu-a") == 100


async def test_a_unit_cannot_publish_as_another(pki: Path, tls_broker: MosquittoBroker) -> None:
    link = MqttLink(
        LinkOptions(
            "mmu-a", "127.0.0.1", tls_broker.port, tls=files(pki, "mmu-a"), clean_start=True
        )
    )
    events = link.start()
    try:
        await next_of(events, "connected")
        own = link.publish(topics.READINGS.of("mmu-a"), b"x")
        other = link.publish(topics.READINGS.of("mmu-b"), b"forged")
        results: dict[int, str] = {}
        while len(results) < 2:
            event = await next_of(events, "published")
            results[event.mid] = event.reason
    finally:
        link.stop()
    assert results[other] == "Not authorized"
    assert results[own] in ("Success", "No matching subscribers")


async def test_no_client_certificate_no_connection(pki: Path, tls_broker: MosquittoBroker) -> None:
    link = MqttLink(LinkOptions("anon", "127.0.0.1", tls_broker.port, tls=TlsFiles(pki / "ca.pem")))
    events = link.start()
    try:
        async with asyncio.timeout(15):
            first = await events.get()
    finally:
        link.stop()
    assert first.kind == "disconnected" and not link.connected
    assert "the broker" in first.reason and "certificate" in first.reason, first.reason


async def first_refusal(options: LinkOptions) -> str:
    link = MqttLink(options)
    events = link.start()
    try:
        event = await next_of(events, "disconnected")
    finally:
        link.stop()
    return event.reason


# paho leaves the socket of a failed TLS handshake to the garbage collector (it closes the fd,
# with a ResourceWarning): collected within this test, so the warning is not another test's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_errors_say_which_side_refused_what(
    tmp_path: Path, pki: Path, tls_broker: MosquittoBroker
) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    make_ca(other)
    make_cert(other, "mmu-a")
    port = tls_broker.port
    # The unit does not trust the broker's certificate (ca_file is another CA).
    wrong_ca = TlsFiles(other / "ca.pem", pki / "mmu-a.pem", pki / "mmu-a.key")
    reason = await first_refusal(LinkOptions("mmu-a", "127.0.0.1", port, tls=wrong_ca))
    assert reason.startswith("connect failed: this unit refused the broker's certificate"), reason
    # The broker does not accept the unit's certificate (issued by another CA).
    foreign = TlsFiles(pki / "ca.pem", other / "mmu-a.pem", other / "mmu-a.key")
    reason = await first_refusal(LinkOptions("mmu-a", "127.0.0.1", port, tls=foreign))
    assert "the broker refused this unit's certificate" in reason, reason
    for text in (
        reason,
        await first_refusal(LinkOptions("anon", "127.0.0.1", port, tls=TlsFiles(pki / "ca.pem"))),
    ):
        assert "Unspecified error" not in text and "refused the session" not in text, text
    gc.collect()
