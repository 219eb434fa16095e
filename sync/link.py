"""The MQTT 5 link: the only module that imports paho-mqtt.

paho runs its network loop in its own thread (``loop_start``); every callback is turned into a
:class:`LinkEvent` on an asyncio queue with ``call_soon_threadsafe``, so the sync logic runs on
the event loop and never inside paho. paho reconnects by itself; before each wait we set its
delay to a fresh *full-jitter* draw, so 50 units losing the same tower do not come back in the
same second. Publishes are checked: paho refuses with ``rc=15`` (MQTT_ERR_QUEUE_SIZE) once
65,535 messages are outstanding (paho issue #377), which our own bounded in-flight window
keeps us far from; any refusal becomes :class:`~edge_agent.errors.LinkError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.backoff import Backoff
from edge_agent.errors import LinkError

log = logging.getLogger(__name__)

# "wake": posted by the link's owner to wake its own loop (a commit, a signal, stop).
EventKind = Literal["connected", "disconnected", "message", "published", "subscribed", "wake"]


@dataclass(frozen=True)
class LinkEvent:
    kind: EventKind
    topic: str = ""
    payload: bytes = b""
    mid: int = 0
    qos: int = 0
    reason: str = ""
    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str = ""  # "message": the MQTT 5 content type, "" when the sender gave none
    failed: bool = False  # "published": the broker refused it (PUBACK reason code >= 0x80)
    reason_code: int = 0  # "published": the PUBACK reason code (MQTT 5)
    response_topic: str = ""  # "message": its MQTT 5 Response-Topic property, if any


# TLS alerts the broker sends when it will not take this unit's certificate.
_CERT_ALERTS = (
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def explain_tls_reason(reason: str) -> str:
    """Which side refused what, from OpenSSL's reason (``TLSV13_ALERT_CERTIFICATE_REQUIRED``):
    an alert is the broker's verdict on this unit; anything else failed on this side."""
    words = reason.lower().replace("_", " ")
    if "ALERT_CERTIFICATE_REQUIRED" in reason:
        return (
            "the broker refused the connection: it requires a client certificate and this "
            "unit sent none (set [broker] cert_file and key_file)"
        )
    if any(f"ALERT_{a}" in reason for a in _CERT_ALERTS):
        return (
            f"the broker refused this unit's certificate ({words}): check [broker] "
            "cert_file is issued by central's CA, not expired, for this unit"
        )
    if "ALERT_HANDSHAKE_FAILURE" in reason:
        return (
            f"the broker ended the TLS handshake ({words}): most often this unit sent no "
            "client certificate or one the broker does not accept (check [broker] cert_file)"
        )
    if "ALERT" in reason:
        return f"the broker ended the TLS handshake ({words})"
    return f"TLS failed on this unit's side ({words})"


def explain_connect_error(exc: BaseException | str) -> str:
    """A failed connection in words a technician can act on, naming the side that refused."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"this unit refused the broker's certificate: {exc.verify_message} (check "
            "[broker] ca_file is central's CA and [broker] host is a name the broker's "
            "certificate carries)"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return explain_tls_reason(str(exc.reason))
    if isinstance(exc, str):
        found = re.search(r"\[SSL: ([A-Z0-9_]+)\]", exc)
        if "CERTIFICATE_VERIFY_FAILED" in exc:
            return f"this unit refused the broker's certificate: {exc.split('] ')[-1]}"
        return explain_tls_reason(found.group(1)) if found else exc
    if isinstance(exc, ConnectionRefusedError):
        return "the broker's host refused the TCP connection (nothing listens on that port?)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return (
            "the broker closed the connection during the handshake (TLS expected but "
            "not configured, or the other way round?)"
        )
    if isinstance(exc, TimeoutError):
        return "no answer from the broker (network, firewall or no mobile data)"
    return f"cannot connect: {type(exc).__name__}: {exc}"


class _Client(mqtt.Client):
    """paho's client, keeping why the last connection attempt failed (paho drops it)."""

    last_error: str | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # words only: the exception would keep the socket alive
            self.last_error = explain_connect_error(exc)
            raise


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = None


@dataclass
class LinkOptions:
    client_id: str
    host: str
    port: int
    keepalive: int = 60
    tls: TlsFiles | None = None
    clean_start: bool = False
    session_expiry: int = 7 * 24 * 3600  # keep the session (and QoS 1 queue) for a week offline
    will: tuple[str, bytes, bool] | None = None  # topic, payload, retain
    backoff_cap: int = 60
    manual_ack: bool = False  # acknowledge received messages only after our own commit
    rng: random.Random = field(default_factory=random.Random)  # injected: tests seed it


class MqttLink:
    def __init__(self, options: LinkOptions) -> None:
        self.options = options
        self.connected = False
        self._backoff = Backoff(1.0, float(options.backoff_cap), options.rng, floor=1.0)
        self._queue: asyncio.Queue[LinkEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log_error: str | None = None  # paho's last socket error (it reports none else)
        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=options.manual_ack,
        )
        client.max_inflight_messages_set(20)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_log = self._on_log
        if options.tls is not None:
            tls = options.tls
            try:
                client.tls_set(
                    ca_certs=str(tls.ca_file),
                    certfile=str(tls.cert_file) if tls.cert_file else None,
                    keyfile=str(tls.key_file) if tls.key_file else None,
                    keyfile_password=tls.key_password,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                # File names only: never the key material or its passphrase.
                raise LinkError(
                    "link.tls",
                    f"cannot load TLS files ({tls.ca_file}, "
                    f"{tls.cert_file}, {tls.key_file}): {exc}",
                ) from exc
        if options.will is not None:
            topic, payload, retain = options.will
            client.will_set(topic, payload, qos=1, retain=retain)
        self._client = client
        self._jitter()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> asyncio.Queue[LinkEvent]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.SessionExpiryInterval = self.options.session_expiry
        try:
            self._client.connect_async(
                self.options.host,
                self.options.port,
                keepalive=self.options.keepalive,
                clean_start=self.options.clean_start,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise LinkError("link.connect", f"cannot connect: {exc}") from exc
        self._client.loop_start()
        return self._queue

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # already gone: nothing to close
            self._client.disconnect()
        self._client.loop_stop()
        # paho closes loop_start's socket pair only in Client.__del__, which a reference
        # cycle delays past the sockets' own finalizers (a ResourceWarning): close it now.
        self._client._reset_sockets(sockpair_only=True)
        self.connected = False

    # --- operations -----------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        response_topic: str | None = None,
    ) -> int:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
        if content_type:
            props.ContentType = content_type
        if response_topic:
            props.ResponseTopic = response_topic
        if user_properties:
            props.UserProperty = list(user_properties)
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, OSError) as exc:  # bad topic, payload over the broker's maximum
            raise LinkError("link.publish", f"publish refused: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # NO_CONN: paho queues QoS>0 while offline, but we keep the store as the queue.
            raise LinkError(
                "link.publish", f"publish refused: {mqtt.error_string(info.rc)}", rc=int(info.rc)
            )
        return int(info.mid)

    def subscribe(self, topics: Sequence[tuple[str, int]]) -> None:
        try:
            rc, _ = self._client.subscribe(list(topics))
        except (ValueError, OSError) as exc:
            raise LinkError("link.subscribe", f"subscribe refused: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError("link.subscribe", f"subscribe refused: {mqtt.error_string(rc)}")

    def reconnect_soon(self) -> None:
        """Forget the backoff: the next reconnect attempt comes after one second."""
        self._backoff.reset()
        self._client.reconnect_delay_set(1, 1)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a received message (with ``manual_ack``), after it is safely stored."""
        self._client.ack(mid, qos)

    def wake(self) -> None:
        """Post a ``wake`` event to the owner's loop (safe from any thread)."""
        self._emit(LinkEvent("wake"))

    # --- paho callbacks (paho's thread) ---------------------------------------------------
    def _emit(self, event: LinkEvent) -> None:
        if self._loop is not None and self._queue is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def _jitter(self) -> None:
        # paho waits reconnect_delay before its next attempt: give it our next draw (whole
        # seconds: paho's API takes ints).
        delay = max(1, math.ceil(self._backoff.next_delay()))
        self._client.reconnect_delay_set(delay, delay)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._jitter()
            self._emit(
                LinkEvent(
                    "disconnected",
                    reason=f"the broker refused the session: "
                    f"{reason} (the TLS connection was made; the broker's "
                    "identity or ACL check said no)",
                )
            )
            return
        self.connected = True
        self._log_error = None
        self._backoff.reset()
        self._jitter()
        self._emit(LinkEvent("connected", reason=str(reason)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._jitter()
        why = getattr(client, "last_error", None) or "no reason given"
        self._emit(LinkEvent("disconnected", reason=f"connect failed: {why}"))

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._log_error = text

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        self._jitter()
        text = str(reason)
        if text == "Unspecified error":  # paho's word for a socket error: say which
            error, self._log_error = self._log_error, None
            text = (
                f"connection lost: {explain_connect_error(error)}"
                if error
                else "connection lost (no reason given)"
            )
        self._emit(LinkEvent("disconnected", reason=text))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        user = getattr(msg.properties, "UserProperty", None) or []
        kind = getattr(msg.properties, "ContentType", None) or ""
        response = getattr(msg.properties, "ResponseTopic", None) or ""
        self._emit(
            LinkEvent(
                "message",
                topic=msg.topic,
                payload=bytes(msg.payload),
                mid=msg.mid,
                qos=msg.qos,
                user_properties=tuple((str(k), str(v)) for k, v in user),
                content_type=str(kind),
                response_topic=str(response),
            )
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        self._emit(
            LinkEvent(
                "published",
                mid=mid,
                reason=str(reason),
                failed=bool(getattr(reason, "is_failure", False)),
                reason_code=int(getattr(reason, "value", 0) or 0),
            )
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        failed = any(getattr(r, "is_failure", False) for r in reasons or [])
        self._emit(
            LinkEvent(
                "subscribed", mid=mid, reason=",".join(map(str, reasons or [])), failed=failed
            )
        )


async def next_event(
    queue: asyncio.Queue[LinkEvent], stop: asyncio.Event, timeout: float
) -> LinkEvent | None:
    """The next link event, or None after ``timeout`` or once ``stop`` is set."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(
        {getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    stopper.cancel()
    if getter in done:
        return getter.result()
    getter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    return None
