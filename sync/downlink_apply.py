"""Applying what central sends down: remote config, commands (trust commands included), the
signed-ack check's refusals and dead-letter notices.

:class:`DownlinkApplier` holds the downlink counters and is called by the sync daemon
(:mod:`sync.daemon`), which owns the link and the loop. It changes the daemon only through
the small :class:`Host` surface below: the settings a config brings, the readings a
``resend-from`` queues again, the trust a signed rotation put in effect.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from typing import Any, Protocol

from edge_agent import __version__
from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from edge_agent.settings import Settings
from edge_agent.store.database import put_state
from edge_agent.store.writer import Store
from sync import outbox, signing, topics, trusted_downlink
from sync.acks import DeadLetterNotice
from sync.downlink import Command, apply_config, parse_command, saved_config
from sync.files.sender import FileSender
from sync.link import LinkEvent, MqttLink
from sync.refusals import AlreadyApplied, DownlinkRefused
from sync.session import Action

log = logging.getLogger("sync.daemon")
ACK_REFUSAL_REPORT_S = 10.0  # refused acks: one up/events report at most this often, with a count


class Host(Protocol):
    """What the applier needs of the daemon."""

    store: Store
    settings: Settings
    unit: str
    config_version: int
    config_sync: dict[str, Any] | None
    ack_trust: signing.Trust
    files: FileSender
    last_error: str | None

    def config_applied(self, settings: Settings, version: int, sync: dict[str, Any]) -> None: ...

    def readings_requeued(self, count: int) -> None: ...

    def sync_now_actions(self, link: MqttLink, now: float) -> list[Action]: ...

    def status(self) -> dict[str, Any]: ...

    def poke(self) -> None: ...


class DownlinkApplier:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.refused_downlinks = 0
        self.refused_acks = 0  # forged or unsigned acks (also counted in refused_downlinks)
        self._acks_unreported = 0
        self._ack_report_at = float("-inf")
        self.dead_letters = 0  # messages of this unit central parked for a human
        self.last_dead_letter: dict[str, Any] | None = None
        self.config_recognised = 0  # retained down/config seen again (after a restart)

    def refuse_ack(self, link: MqttLink, size: int, reason: str) -> None:
        """A forged or unsigned ack: nothing marked sent, no clock sample; counted, logged
        (its size and the reason, never its content) and reported on up/events (at most one
        report every ACK_REFUSAL_REPORT_S, with the count since the last one)."""
        self.refused_downlinks += 1
        self.refused_acks += 1
        self._acks_unreported += 1
        log.warning("sync: refused an ack (%d bytes): %s", size, reason)
        now = time.monotonic()
        if now - self._ack_report_at >= ACK_REFUSAL_REPORT_S:
            self.event(
                link,
                {
                    "type": "downlink-refused",
                    "topic": "ack",
                    "reason": reason,
                    "count": self._acks_unreported,
                },
            )
            self._acks_unreported, self._ack_report_at = 0, now

    def dead_letter(self, notice: DeadLetterNotice) -> None:
        """Central parked one of our messages for a human: say so (log, status, `sync
        status`). The batch stays in flight: its readings are kept and go again."""
        host = self.host
        if notice.epoch is not None and notice.epoch != host.store.epoch:
            log.warning("sync: ignored a dead-letter notice for another store epoch")
            return
        self.dead_letters += 1
        self.last_dead_letter = {
            "batch_id": notice.batch_id,
            "reason": notice.reason,
            "bytes": notice.bytes,
            "parked_at": notice.parked_at,
        }
        host.last_error = (
            f"central parked batch {notice.batch_id or '(unknown)'} as a dead "
            f"letter: {notice.reason}"
        )
        log.error(
            "sync: central parked batch %s (%d bytes) as a dead letter: %s",
            notice.batch_id or "(unknown)",
            notice.bytes,
            notice.reason,
        )
        host.poke()

    async def apply(self, link: MqttLink, event: LinkEvent) -> list[Action]:
        """down/cmd and down/config: validated, applied whole, or refused with a reason. The
        session actions a command asks for join the turn's (the daemon executes them once)."""
        host = self.host
        kind = "config" if event.topic == topics.CONFIG.of(host.unit) else "cmd"
        try:
            # Signed by central (sync/signing.py); its counter persisted before anything runs.
            payload = await trusted_downlink.verified(
                host.store, host.settings, kind, event.payload
            )
            if kind == "config":
                settings, version = apply_config(
                    host.settings, payload, host.config_version, host.config_sync
                )
                saved = saved_config(version, payload)
                # Persist first: a restart applies it again (and a retained copy of the same
                # version is then recognised, not refused).
                await host.store.write(
                    functools.partial(put_state, key="config-remote", value=saved)
                )
                host.config_applied(settings, version, saved["sync"])
                log.info("sync: remote config version %d applied", version)
                self.event(link, {"type": "config-applied", "version": version})
            else:
                return await self.command(link, parse_command(payload))
        except AlreadyApplied:  # the retained copy of what this unit applied already
            self.config_recognised += 1
        except DownlinkRefused as exc:
            self.refused_downlinks += 1
            log.warning("sync: refused a %s downlink (%d bytes): %s", kind, len(event.payload), exc)
            self.event(link, {"type": "downlink-refused", "topic": kind, "reason": str(exc)})
        return []

    async def command(self, link: MqttLink, command: Command) -> list[Action]:
        host = self.host
        result: dict[str, Any] = {"type": "cmd-done", "id": command.id, "cmd": command.cmd}
        actions: list[Action] = []
        if command.cmd == "sync-now":
            actions = host.sync_now_actions(link, time.monotonic())
        elif command.cmd in signing.TRUST_COMMANDS:  # applied by the verification already
            host.ack_trust = await trusted_downlink.trust_in_effect(host.store, host.settings)
            result["keys"] = sorted(host.ack_trust.keys)
            log.warning(
                "sync: central's signed %s applied: keys %s",
                command.cmd,
                ", ".join(sorted(host.ack_trust.keys)) or "none",
            )
        elif command.cmd == "teleconsult":
            host.files.set_teleconsult(command.encounter)
            result["encounter"] = command.encounter
        elif command.cmd == "resend-from":
            if command.epoch is not None and command.epoch != host.store.epoch:
                raise DownlinkRefused(
                    f"resend-from names store epoch {command.epoch}, this "
                    f"store is {host.store.epoch}: those readings are gone"
                )
            seq = command.seq or 1
            result["readings"] = await host.store.write(
                functools.partial(outbox.resend_from, seq=seq)
            )
            host.readings_requeued(int(result["readings"]))
        else:
            stats = await host.store.read_async(outbox.store_counts)
            result.update(version=__version__, store=stats, sync=host.status())
        self.event(link, result)
        return actions

    def event(self, link: MqttLink, body: dict[str, Any]) -> None:
        """A unit event for central (no patient data) on up/events."""
        unit = self.host.unit
        payload = json.dumps({**body, "unit": unit, "at": utc_now()}).encode()
        with contextlib.suppress(LinkError):
            link.publish(
                topics.EVENTS.of(unit),
                payload,
                qos=topics.EVENTS.qos,
                content_type=topics.EVENTS.content_type,
            )
