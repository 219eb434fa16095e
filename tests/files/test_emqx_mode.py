"""EMQX's file transfer over MQTT as a mode of the unit's uploader ([files] mode = "emqx"):
the protocol (pure), and end to end through a real Mosquitto with the reference receiver
emulating EMQX's broker side (tests/files/emqx_emulator.py; not a real EMQX)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.files.attachments import AttachmentStore
from edge_agent.settings import FilesSettings
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.files import emqx
from sync.files.protocol import FileInit
from sync.files.sender import FileSender
from sync.files.uploader import (
    NO_ROUTE,
    Completed,
    Failed,
    SegmentSizer,
    SendFin,
    SendInit,
    SendSegment,
)
from tests.broker import MosquittoBroker
from tests.files import emqx_emulator
from tests.files.kit import UNIT, central_object, central_upload, complete, settings, unit_holds
from tests.sync.checker import wait_until

SHA = "ab" * 32


def _init(
    size: int = 10, segment_size: int = 4096, name: str | None = "Dupont scan.PDF"
) -> FileInit:
    return FileInit(
        file_id=SHA,
        sha256=SHA,
        size=size,
        media_type="application/pdf",
        kind="document",
        segment_size=segment_size,
        received_at="2024-05-01T10:00:00Z",
        name=name,
    )


def test_topics_are_emqx_s() -> None:
    assert emqx.init_topic(SHA) == f"$file/{SHA}/init"
    assert emqx.segment_topic(SHA, 65536, "cd" * 32) == f"$file/{SHA}/65536/{'cd' * 32}"
    assert emqx.segment_topic(SHA, 0) == f"$file/{SHA}/0"
    assert emqx.fin_topic(SHA, 123, SHA) == f"$file/{SHA}/fin/123/{SHA}"
    assert emqx.abort_topic(SHA) == f"$file/{SHA}/abort"
    assert emqx.response_topic("edge-agent-mmu-1") == "$file-response/edge-agent-mmu-1"
    assert emqx.parse_command(f"$file/{SHA}/65536/{'CD' * 32}") == emqx.Command(
        SHA, "seg", offset=65536, checksum="cd" * 32
    )
    assert emqx.parse_command(f"$file/{SHA}/fin/9") == emqx.Command(SHA, "fin", size=9)
    for bad in (
        f"$file/{SHA}/fin",
        f"$file/{SHA}/x",
        f"$file/{SHA}/1/short",
        "$file//init",
        f"$files/{SHA}/init",
        f"$file/{SHA}/1/{'ab' * 32}/more",
    ):
        assert emqx.parse_command(bad) is None, bad
    assert emqx.reply_key_of(f"$file/{SHA}/4096/{SHA}") == (SHA, "seg/4096")


def test_init_is_byte_identical_whatever_the_segment_size_and_hides_the_name() -> None:
    # EMQX refuses a second, different init for a transfer it knows (filemeta_conflict).
    first, again = (
        emqx.init_payload(_init(segment_size=4096)),
        emqx.init_payload(_init(segment_size=65536)),
    )
    assert first == again
    meta = json.loads(first)
    assert meta["name"] == f"{SHA}.pdf" and "Dupont" not in meta["name"]
    assert meta["checksum"] == SHA and meta["size"] == 10 and meta["segments_ttl"] > 0
    assert "expire_at" not in meta
    assert emqx.file_init_of(first).name is None  # EMQX keeps user_data: not even there


def test_init_carries_opaque_ids_only_and_a_segments_ttl_emqx_keeps() -> None:
    """EMQX stores the init (user_data included) on the broker: no patient identifier and no
    original file name in it; central maps the encounter id back through its readings."""
    init = replace(
        _init(name="ECG_0412 Mme X.pdf"),
        kind="ecg",
        device="ecg-1",
        encounter_id="6f1c2a9e-0b7d-4c1e-9a53-2f4d8e7b1c00",
        patient_system="urn:oid:1.2.250.1.213.1.4.8",
        patient_value="1850312345678",
    )
    payload = emqx.init_payload(init)
    text = payload.decode()
    for private in ("ECG_0412", "Mme X", "1850312345678", "urn:oid:1.2.250.1.213.1.4.8"):
        assert private not in text, private
    meta = json.loads(payload)
    assert meta["name"] == f"{SHA}.pdf"
    user = meta["user_data"]
    assert user["encounter_id"] == init.encounter_id and user["file_id"] == SHA
    assert user["name"] is None and user["patient_value"] is None
    assert user["patient_system"] is None
    # EMQX clamps segments_ttl to [minimum_segments_ttl, maximum_segments_ttl], 5 min and
    # 24 h by default: ask for what a default EMQX keeps, and resume only within it.
    assert 300 <= meta["segments_ttl"] <= 24 * 3600
    assert meta["segments_ttl"] > emqx.RESUME_WITHIN


def test_response_round_trip_and_refusals() -> None:
    r = emqx.Response(f"$file/{SHA}/init", 7, 0x80, "filemeta_conflict")
    assert emqx.Response.decode(r.encode()) == r
    assert json.loads(r.encode())["vsn"] == "0.1"
    for bad in (b"nope", b"[]", b'{"topic": "t"}', b'{"topic": "t", "reason_code": 300}'):
        try:
            emqx.Response.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def _uploader(size: int = 10_000) -> emqx.EmqxUploader:
    up = emqx.EmqxUploader(2.0, SegmentSizer(32_768))  # 8 KiB segments: 2 s at the cap
    up.add(SHA, size)
    up.connected()
    return up


def _step(up: emqx.EmqxUploader, now: float, code: int = 0) -> object:
    send = up.next_send(now)
    assert send is not None
    up.sent(send, now)
    key = {SendInit: "init", SendFin: "fin"}.get(type(send)) or f"seg/{send.offset}"  # type: ignore[union-attr]
    outcomes = up.on_answer(SHA, key, code, now)
    return outcomes or send


def test_upload_resumes_from_what_emqx_confirmed() -> None:
    up = _uploader()
    assert _step(up, 0) == SendInit(SHA)
    assert _step(up, 0) == SendSegment(SHA, 0, 8192)
    seg = up.next_send(1)
    assert seg == SendSegment(SHA, 8192, 1808)
    up.sent(seg, 1)
    up.disconnected()  # in flight, never confirmed
    up.connected()
    assert up.next_send(2) == SendInit(SHA)  # init again (identical), then the unconfirmed
    up.sent(SendInit(SHA), 2)
    assert up.on_answer(SHA, "init", 0, 2) == []
    assert up.next_send(2) == SendSegment(SHA, 8192, 1808)  # only what is unconfirmed
    assert up.sizer.size == 4096  # halved after the interruption
    # A late answer to a command given up on changes nothing.
    assert up.on_answer(SHA, "seg/0", 0, 2) == []
    assert up.next_send(2) == SendSegment(SHA, 8192, 1808)


def test_segment_error_resends_it_fin_error_resends_all_then_gives_up() -> None:
    up = _uploader(size=12_000)
    _step(up, 0)  # init
    assert _step(up, 0, emqx.UNSPECIFIED_ERROR) == SendSegment(SHA, 0, 8192)
    assert up.bad_segments == 1
    assert up.next_send(0) == SendSegment(SHA, 0, 8192)  # the same segment again
    _step(up, 0)
    assert _step(up, 0) == SendSegment(SHA, 8192, 3808)  # the rest
    for attempt in range(2):
        assert _step(up, 0, emqx.UNSPECIFIED_ERROR) == SendFin(SHA)
        assert up.next_send(0) == SendInit(SHA)  # EMQX: every segment again
        _step(up, 0)
        assert up.next_send(0) == SendSegment(SHA, 0, 8192), attempt
        _step(up, 0)
        _step(up, 0)
    outcome = _step(up, 0, emqx.UNSPECIFIED_ERROR)
    assert isinstance(outcome, list) and isinstance(outcome[0], Failed)


def test_a_resume_older_than_emqx_keeps_segments_starts_the_file_again() -> None:
    """EMQX collects segments older than segments_ttl: past RESUME_WITHIN the confirmed
    prefix is forgotten and the file starts from 0 (else fin fails on missing segments)."""
    for offline_s, resumes_at in ((emqx.RESUME_WITHIN - 60, 8192), (emqx.RESUME_WITHIN + 60, 0)):
        up = _uploader()
        _step(up, 0)  # init
        assert _step(up, 0) == SendSegment(SHA, 0, 8192)  # confirmed at t=0
        up.disconnected()
        up.connected()
        now = float(offline_s)
        assert up.next_send(now) == SendInit(SHA)
        up.sent(SendInit(SHA), now)
        up.on_answer(SHA, "init", 0, now)
        send = up.next_send(now)
        assert isinstance(send, SendSegment) and send.offset == resumes_at, offline_s
        assert up.expired == (resumes_at == 0)


def test_puback_codes_where_emqx_publishes_no_response() -> None:
    """0x10: nothing handles $file/ (file transfer off): back off as when nobody answers.
    0x00 says nothing (the response does). Other codes are the answer."""
    assert [emqx.puback_meaning(c) for c in (0x00, 0x10, 0x80, 0x87, 0x95, 0x97)] == [
        "ignore",
        "no-route",
        "twin",
        "refused",
        "refused",
        "refused",
    ]
    up = _uploader()
    up.sent(up.next_send(0) or SendInit(SHA), 0)
    up.no_route(SHA, "init", 0)
    assert up.retry.state() == "central does not take files yet"
    assert up.next_send(0.1) is None  # waits, then init again
    assert up.next_send(up.retry.retry_at) == SendInit(SHA)
    _step(up, up.retry.retry_at)
    seg = up.next_send(10)
    assert seg == SendSegment(SHA, 0, 8192)
    up.sent(seg, 10)
    assert up.on_answer(SHA, "seg/0", emqx.PACKET_TOO_LARGE, 10) == []
    assert up.next_send(10) == SendSegment(SHA, 0, 4096)  # the broker's limit: smaller


def test_fin_success_completes_and_0x83_cancels() -> None:
    up = _uploader(size=100)
    _step(up, 0)
    _step(up, 0)
    assert _step(up, 0) == [Completed(SHA)]
    up = _uploader()
    outcome = _step(up, 0, emqx.IMPLEMENTATION_SPECIFIC)
    assert isinstance(outcome, list) and isinstance(outcome[0], Failed)


def test_unanswered_inits_back_off() -> None:
    up = _uploader()
    up.retry.backoff.rng = random.Random(1)
    sent_at = []
    now = 0.0
    while now < 120:
        send = up.next_send(now)
        if send is not None:
            sent_at.append(now)
            up.sent(send, now)
        now += 0.25
    assert up.retry.state() == "central does not take files yet"
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(sent_at) <= 8 and gaps == sorted(gaps), sent_at  # growing: ~2 s -> ~60 s
    up.sent(SendInit(SHA), now)
    up.on_answer(SHA, "init", 0, now)
    assert up.retry.state() == "" and up.next_send(now) == SendSegment(SHA, 0, 8192)


def test_mosquitto_routes_dollar_file_topics_to_an_explicit_subscriber(
    mosquitto: MosquittoBroker,
) -> None:
    """What the emulation rests on: Mosquitto takes a publish to $file/..., delivers it (and
    its Response-Topic) to a client subscribed to $file/#, and PUBACKs 0x10 (no matching
    subscribers) when nobody listens, which is why the unit does not read PUBACK codes."""
    got: list[tuple[str, str]] = []
    codes: list[int] = []
    clients = []
    for cid in ("emulator", "unit"):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        clients.append(c)
    recv, unit = clients
    subscribed: list[int] = []
    recv.on_subscribe = lambda *a: subscribed.append(1)
    recv.on_message = lambda c, u, m: got.append(  # paho: properties are dynamic attributes
        (m.topic, getattr(m.properties, "ResponseTopic", ""))
    )
    unit.on_publish = lambda c, u, mid, rc, p: codes.append(int(rc.value))
    try:
        deadline = time.monotonic() + 5
        while not (recv.is_connected() and unit.is_connected()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        unit.publish(emqx.init_topic(SHA), b"{}", qos=1)  # nobody subscribed yet
        while not codes:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        recv.subscribe(emqx.command_filter(), qos=1)
        while not subscribed:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = emqx.response_topic("unit")
        unit.publish(emqx.segment_topic(SHA, 0), b"x", qos=1, properties=props)
        while not got or len(codes) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
    assert got == [(f"$file/{SHA}/0", "$file-response/unit")]
    assert codes == [0x10, 0x00]


async def test_a_puback_0x10_on_init_backs_off_at_once_and_says_so(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Nobody handles $file/ (here: Mosquitto, no emulation; an EMQX with file transfer off
    routes it the same way): its PUBACK 0x10 is read, the unit backs off and says so without
    waiting for the ack timeout (120 s here). A PUBACK 0x80 and the response that twins it
    count once."""
    cfg = settings(tmp_path, mosquitto.port, timeout=120.0)
    cfg = cfg.model_copy(update={"files": FilesSettings(mode="emqx")})
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        item = AttachmentStore(store).add_bytes(os.urandom(10_000), name="x.pdf")
        daemon = SyncDaemon(store, cfg)
        task = asyncio.create_task(daemon.run(stop))
        await wait_until(
            lambda: daemon.status()["files_state"] == NO_ROUTE, 30, "no route from the PUBACK"
        )
        inits = daemon.files.uploader.inits
        stop.set()
        await task
        assert inits == 1
        # The twin: EMQX answers a failed segment with PUBACK 0x80 and a 0x80 response.
        sender = FileSender(store, UNIT, uplink_bps=32_768, mode="emqx")
        await sender.refresh()
        sender.connected()
        for mid in (1, 2):
            out = sender.next_publish(0, lambda n, t: 0.0)
            assert out is not None
            sender.published(out, 0, mid)
            if mid == 1:
                sender.on_message(
                    emqx.response_topic(sender.client_id), emqx.Response(out.topic, mid, 0).encode()
                )  # init taken
        assert out is not None and out.topic.startswith(f"$file/{item.file_id}/0/")
        sender.on_puback(2, emqx.UNSPECIFIED_ERROR, 0)
        again = sender.next_publish(0, lambda n, t: 0.0)
        assert again is not None and again.topic == out.topic  # the segment again
        sender.published(again, 0, 3)
        sender.on_message(
            emqx.response_topic(sender.client_id),
            emqx.Response(out.topic, 2, emqx.UNSPECIFIED_ERROR).encode(),
        )
        assert sender.uploader.bad_segments == 1  # the twin response is not a second failure
        assert sender.uploader.current is not None
        assert sender.uploader.current.waiting == "seg/0"  # still waiting for the re-sent one


async def test_emqx_mode_end_to_end_through_mosquitto_with_the_emulation(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port, uplink_bps=400_000, timeout=2.0)
    cfg = cfg.model_copy(update={"files": FilesSettings(mode="emqx")})
    central = tmp_path / "central.db"
    data = os.urandom(180_000)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        item = AttachmentStore(store).add_bytes(data, name="echo.pdf", device="echo-1")
        daemon = SyncDaemon(store, cfg)
        receiver = Receiver("127.0.0.1", mosquitto.port, central, emqx_answer=emqx_emulator.answer)
        tasks = [asyncio.create_task(receiver.run(stop))]
        await asyncio.wait_for(receiver.connected.wait(), 10)  # else the first init is lost
        tasks.append(asyncio.create_task(daemon.run(stop)))
        await wait_until(lambda: complete(central, item.file_id), 15, "file complete")
        await wait_until(lambda: unit_holds(cfg.store.path, item.file_id), 5, "unit marks it")
        status = daemon.status()
        stop.set()
        await asyncio.gather(*tasks)
    assert central_object(central, item.file_id) == data
    row = central_upload(central, item.file_id)
    assert row is not None and row["unit"] == UNIT  # the client id edge-agent-{unit}
    assert row["segment_bytes_in"] == len(data)  # each byte once
    assert status["file_segment_size"] < len(data)  # in several segments
    assert status["files_state"] == "" and status["file_inits"] == 1
