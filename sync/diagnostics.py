"""What `edge-agent sync status` and `sync test` report: read from the store, or measured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_agent.errors import LinkError
from edge_agent.settings import Settings
from edge_agent.store.agent_lock import is_running
from sync import signing, topics
from sync.daemon import SyncDaemon
from sync.downlink import restore_config
from sync.link import LinkEvent, MqttLink


def agent_pid(daemon: Any, store: Path | None = None) -> int | None:
    """The pid of the running agent that wrote this snapshot, or None. The agent writes its
    snapshot only when something changes (an idle agent writes nothing), so liveness is the
    process itself, not the snapshot's age: with ``store``, the process holding the store's
    agent lock (a killed agent's pid may be another process's by now)."""
    if not isinstance(daemon, dict) or daemon.get("stopped"):
        return None
    pid = daemon.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    if store is not None:
        return pid if is_running(store, pid) else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's (the service user)
        return pid
    return pid


def status(db: Database, store: Path | None = None) -> dict[str, Any]:
    """``store``: the store's path, to tell a running agent from a dead one's snapshot."""
    backlog = db.execute(
        "SELECT count(*), min(received_at) FROM readings WHERE sent_at IS NULL AND refused IS NULL"
    ).fetchone()
    refused = db.execute("SELECT count(*) FROM readings WHERE refused IS NOT NULL").fetchone()[0]
    last_ack = db.execute("SELECT max(acked_at) FROM batches").fetchone()[0]
    row = db.execute("SELECT value, updated_at FROM agent_state WHERE key = 'sync'").fetchone()
    daemon = json.loads(row[0]) if row else None
    remote = db.execute("SELECT value FROM agent_state WHERE key = 'config-remote'").fetchone()
    remote_version = json.loads(remote[0]).get("version") if remote else None
    pid = agent_pid(daemon, store)
    running = pid is not None
    return {
        "agent_running": running,
        "connected": bool(daemon and running and daemon.get("connected")),
        "backlog": {"readings": backlog[0]},
        "oldest_unsent_received_at": backlog[1],
        "in_flight_batches": daemon.get("in_flight_batches", 0) if daemon and running else 0,
        "last_ack_at": last_ack,
        "last_error": daemon.get("last_error") if daemon else None,
        "clock_offset_s": daemon.get("clock_offset_s") if daemon else None,
        "refused_by_central": refused,
        # downlink messages refused since the agent started (forged, unsigned, replayed...)
        "refused_downlinks": (daemon.get("refused_downlinks") or 0) if daemon else 0,
        "refused_acks": (daemon.get("refused_acks") or 0) if daemon else 0,
        # the remote configuration (down/config) in effect: applied again at every start
        "config_version": remote_version if isinstance(remote_version, int) else None,
        # messages central parked for a human (dead letters), as it told the agent
        "dead_letters": int(daemon.get("dead_letters") or 0) if daemon else 0,
        "last_dead_letter": daemon.get("last_dead_letter") if daemon else None,
        # "central does not take files yet" while the unit's file inits go unanswered.
        "files_state": (daemon.get("files_state") or "") if daemon and running else "",
        "pid": pid,
    }


def in_effect(settings: Settings, db: Database | None) -> tuple[Settings, dict[str, Any]]:
    """What runs, not only the file: the settings with central's remote ``[sync]`` change kept
    in the store, and central's keys as a signed ``rotate-key`` left them; with what differs."""
    notes: dict[str, Any] = {
        "remote_config_version": None,
        "remote_sync_keys": [],
        "central_keys_from": "config",
    }
    if db is None:
        return settings, notes
    saved = db.execute("SELECT value FROM agent_state WHERE key = 'config-remote'").fetchone()
    settings, version, change = restore_config(settings, json.loads(saved[0]) if saved else None)
    if version:
        notes["remote_config_version"] = version
        notes["remote_sync_keys"] = sorted(change or {})
    row = db.execute("SELECT value FROM agent_state WHERE key = 'downlink-trust'").fetchone()
    counters = signing.Counters.from_json(json.loads(row[0]) if row else None)
    if counters.keys is not None:
        notes["central_keys_from"] = "central (signed rotate-key)"
        trust = settings.trust.model_copy(update={"central_keys": list(counters.keys)})
        settings = settings.model_copy(update={"trust": trust})
    return settings, notes


def with_liveness(result: dict[str, Any], live: Any) -> dict[str, Any]:
    """``status`` with what the agent answered from its event loop (:mod:`heartbeat`): only
    an answering agent is running or connected; a snapshot in the store outlives a frozen or
    dead agent."""
    answer = live.answer or {}
    sync = answer.get("sync")
    connected = sync.get("connected") if isinstance(sync, dict) else result["connected"]
    return {
        **result,
        "agent": live.state,
        "agent_running": live.answering,
        "connected": bool(live.answering and connected),
        "in_flight_batches": result["in_flight_batches"] if live.answering else 0,
        "loop": answer.get("loop"),
    }


async def _expect(
    queue: asyncio.Queue[LinkEvent], kind: str, timeout: float, topic: str | None = None
) -> LinkEvent:
    async with asyncio.timeout(timeout):
        while True:
            event = await queue.get()
            if event.kind == kind and (topic is None or event.topic == topic):
                return event
            if kind == "connected" and event.kind == "disconnected":
                raise LinkError("link.test", event.reason)


def explain_unreachable(host: str, port: int, exc: BaseException) -> str:
    """What a technician needs from a failed TCP connection: which host, and which failure
    (the name does not resolve, nothing listens, nothing answers)."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return (
            f"{where}: unknown host {host!r} (the name does not resolve: check [broker] "
            "host, and DNS on this network)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"{where}: connection refused (the host answers but nothing listens on port "
            f"{port}: check [broker] port, and that the broker runs)"
        )
    if isinstance(exc, TimeoutError):
        return f"{where}: no answer (a firewall, no route, or no mobile data: check the network)"
    return f"{where}: cannot connect ({type(exc).__name__}: {exc})"


async def reach(host: str, port: int, timeout: float) -> None:
    """A plain TCP connection first, so each failure gets its own message."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise LinkError("link.test", explain_unreachable(host, port, exc)) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def round_trip(settings: Settings, timeout: float = 15.0) -> dict[str, Any]:
    """Connect with the unit's own identity, publish to its status topic (not retained) and
    wait for the message to come back: connect time and round-trip latency, in ms."""
    assert settings.broker is not None
    await reach(settings.broker.host, settings.broker.port, timeout)
    options = SyncDaemon.link_options_for(settings)
    options.client_id = f"{options.client_id}-test-{uuid.uuid4().hex[:6]}"
    options.clean_start = True
    options.will = None
    link = MqttLink(options)
    start = time.monotonic()
    events = link.start()
    try:
        try:
            await _expect(events, "connected", timeout)
        except TimeoutError:
            raise LinkError("link.test", f"no connection within {timeout:.0f} s") from None
        connected = time.monotonic()
        topic = topics.STATUS.of(settings.unit.id)
        link.subscribe([(topic, 1)])
        probe = json.dumps({"state": "link-test", "id": uuid.uuid4().hex}).encode()
        sent = time.monotonic()
        link.publish(topic, probe, retain=False, content_type=topics.STATUS.content_type)
        while True:
            event = await _expect(events, "message", timeout, topic)
            if event.payload == probe:
                break
        back = time.monotonic()
    finally:
        link.stop()
    assert settings.broker is not None
    return {
        "broker": f"{settings.broker.host}:{settings.broker.port}",
        "tls": settings.broker.tls,
        "connect_ms": round((connected - start) * 1000, 1),
        "round_trip_ms": round((back - sent) * 1000, 1),
    }
