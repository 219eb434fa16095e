"""Downlink trust: commands and configuration signed by central (Ed25519), pure code.

The broker's ACL already lets only central's identity write ``mmu/v1/+/down/#``; the signature
makes the unit trust central itself, not whoever runs (or breaks into) the broker. A signed
downlink message is an envelope::

    {"v": 1, "kid": "<key id>", "msg": "<base64 of M>", "sig": "<base64 Ed25519(DOMAIN + M)>"}

where ``M`` is the JSON ``{"unit", "topic", "ctr", "exp", "body"}``: the unit and the topic it
is meant for (so it cannot be replayed to another unit or as another kind of message), a
counter that increases with every message central sends to that unit on that topic (central
uses microseconds since 1970, bumped past the last one), an expiry (seconds since 1970) and the
message itself (what :func:`sync.downlink.parse_command` / ``apply_config`` read).

:func:`verify` refuses, with the reason that goes back on ``up/events``: an unsigned message
(when keys are configured), an unknown key id, a bad signature, another unit or topic, an
expired message, and a counter not above the last accepted one (a replay, or an older message
re-ordered behind a newer one). The retained configuration seen again after a restart (the
same signed message as the last accepted) is recognised, not refused.

Bounds, so that one validly signed message cannot lock the unit: an expiry at most
:data:`MAX_LIFETIME_S` ahead of the unit's clock, and a counter at most
:data:`MAX_COUNTER_AHEAD_US` ahead of the unit's clock in microseconds (central's counters are
its clock in microseconds): whatever central signed, its messages of 30 days later pass, and a
``trust-reset`` unlocks a unit at once.

Keys: ``[trust] central_keys`` lists central's public keys (``ed25519:<base64>``); any of
them is accepted. Central rotates with a signed ``rotate-key`` command (the complete new key
set, kept in the store, in effect instead of the configured keys) and recovers a unit whose
counters are stuck with a signed ``trust-reset`` (counters lowered to its own). Both count on a
track of their own (``trust``), are refused unsigned even without keys, and are checked here,
before anything is persisted. With no keys configured (a test or development setup) unsigned
messages are accepted as before, and signed ones refused (nothing to check them against).

Acks (``down/ack``) are signed too (:meth:`Signer.ack_properties`, :func:`verify_ack`): an
Ed25519 signature over the ack's exact bytes, the unit and the topic, carried in two MQTT 5
user properties (``kid``, ``sig``) so the ack itself is unchanged; the batch id inside is the
replay guard (an ack counts only for a batch of this unit, and its times only while that
batch is in flight).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.public_keys import key_id, parse_public_key, public_key_text
from sync.refusals import AlreadyApplied, DownlinkRefused

DOMAIN = b"edge-agent downlink v1\x00"
ACK_DOMAIN = b"edge-agent ack v1\x00"
CLOCK_SKEW_S = 300.0  # the unit's clock may lag central's by this much before "expired"
MAX_LIFETIME_S = 8 * 24 * 3600.0  # a signed message expires at most this far ahead
MAX_COUNTER_AHEAD_US = 30 * 24 * 3600 * 1_000_000  # a counter's step: 30 days of microseconds
TOPICS = ("cmd", "config")
TRACKS = (*TOPICS, "trust")  # counters kept: one per topic, one for the trust commands
TRUST_COMMANDS = ("trust-reset", "rotate-key")


@dataclass(frozen=True)
class Trust:
    """What the unit accepts: central's keys by key id; whether unsigned messages pass."""

    keys: Mapping[str, Ed25519PublicKey]
    require_signed: bool

    @classmethod
    def from_texts(cls, texts: Iterable[str], require_signed: bool = True) -> Trust:
        keys = {key_id(k): k for k in map(parse_public_key, texts)}
        return cls(keys, require_signed and bool(keys))

    @classmethod
    def in_effect(
        cls, configured: Iterable[str], require_signed: bool, counters: Counters
    ) -> Trust:
        """The configured keys, or the set central rotated to (kept with the counters)."""
        keys = counters.keys if counters.keys is not None else tuple(configured)
        return cls.from_texts(keys, require_signed)


@dataclass(frozen=True)
class Counters:
    """The last accepted counter per topic, and the digest of the last accepted config (its
    retained copy comes back at every reconnect). Kept in the store (``downlink-trust``)."""

    last: Mapping[str, int]
    config_digest: str | None = None
    keys: tuple[str, ...] | None = None  # central's keys after a signed rotate-key

    def to_json(self) -> dict[str, Any]:
        saved: dict[str, Any] = {"last": dict(self.last), "config_digest": self.config_digest}
        if self.keys is not None:
            saved["keys"] = list(self.keys)
        return saved

    @classmethod
    def from_json(cls, saved: Any) -> Counters:
        if not isinstance(saved, dict) or not isinstance(saved.get("last"), dict):
            return cls({})
        last = {t: v for t, v in saved["last"].items() if t in TRACKS and isinstance(v, int)}
        digest = saved.get("config_digest")
        keys = saved.get("keys")
        rotated = (
            tuple(keys)
            if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)
            else None
        )
        return cls(last, digest if isinstance(digest, str) else None, rotated)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise DownlinkRefused(f"signed envelope: {what} missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise DownlinkRefused(f"signed envelope: {what} is not base64") from None


def verify(
    trust: Trust, counters: Counters, *, unit: str, topic: str, payload: bytes, now: float
) -> tuple[bytes, Counters]:
    """The message to apply and the counters to persist (before applying it), or
    :class:`DownlinkRefused` with the reason, or :class:`AlreadyApplied` for the retained
    configuration accepted last."""
    try:
        outer = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        outer = None
    signed = isinstance(outer, dict) and "sig" in outer
    if not signed:
        if trust.require_signed:
            raise DownlinkRefused("unsigned: this unit accepts only messages signed by central")
        if isinstance(outer, dict) and outer.get("cmd") in TRUST_COMMANDS:
            raise DownlinkRefused(
                f"unsigned {outer['cmd']}: trust commands must be signed "
                "by central, also without [trust] central_keys"
            )
        return payload, counters  # no keys configured: the broker's ACL is the only guard
    assert isinstance(outer, dict)
    if not trust.keys:
        raise DownlinkRefused(
            "signed, but this unit has no central key to check it ([trust] central_keys)"
        )
    if outer.get("v") != 1:
        raise DownlinkRefused(f"signed envelope: version {outer.get('v')!r} unknown")
    public = trust.keys.get(str(outer.get("kid")))
    if public is None:
        raise DownlinkRefused(f"signed with unknown key {str(outer.get('kid'))[:32]!r}")
    msg, sig = _b64(outer.get("msg"), "msg"), _b64(outer.get("sig"), "sig")
    try:
        public.verify(sig, DOMAIN + msg)
    except InvalidSignature:
        raise DownlinkRefused("bad signature: not signed by central's key") from None
    try:
        inner = json.loads(msg)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise DownlinkRefused("signed message is not JSON") from None
    if not isinstance(inner, dict):
        raise DownlinkRefused("signed message is not an object")
    if inner.get("unit") != unit:
        raise DownlinkRefused(f"for unit {str(inner.get('unit'))[:64]!r}, not this one")
    if inner.get("topic") != topic:
        raise DownlinkRefused(
            f"signed for down/{str(inner.get('topic'))[:16]}, received on down/{topic}"
        )
    ctr, exp = inner.get("ctr"), inner.get("exp")
    if not isinstance(ctr, int) or isinstance(ctr, bool) or not isinstance(exp, int | float):
        raise DownlinkRefused("signed message without counter or expiry")
    digest = hashlib.sha256(msg).hexdigest()
    last = counters.last.get(topic, 0)
    if topic == "config" and ctr == last and digest == counters.config_digest:
        raise AlreadyApplied(ctr)  # the retained config again
    if now > exp + CLOCK_SKEW_S:
        raise DownlinkRefused(f"expired {now - exp:.0f} s ago")
    if exp > now + MAX_LIFETIME_S + CLOCK_SKEW_S:
        raise DownlinkRefused(
            f"expires {(exp - now) / 86400:.0f} days ahead, more than the "
            f"{MAX_LIFETIME_S / 86400:.0f} a message may live (or this "
            "unit's clock is behind)"
        )
    body = inner.get("body")
    if not isinstance(body, dict):
        raise DownlinkRefused("signed message without body")
    track = "trust" if topic == "cmd" and body.get("cmd") in TRUST_COMMANDS else topic
    last = counters.last.get(track, 0)
    if ctr > int(now * 1_000_000) + MAX_COUNTER_AHEAD_US:
        raise DownlinkRefused(
            f"counter {ctr} is more than {MAX_COUNTER_AHEAD_US // 86_400_000_000}"
            " days ahead of this unit's clock (counters are central's clock "
            "in microseconds)"
        )
    if ctr <= last:
        raise DownlinkRefused(f"replayed or re-ordered: counter {ctr} is not above {last}")
    if track == "trust":
        return json.dumps(body).encode(), trust_change(counters, body, ctr)
    new = Counters(
        {**counters.last, topic: ctr},
        digest if topic == "config" else counters.config_digest,
        counters.keys,
    )
    return json.dumps(body).encode(), new


def trust_change(counters: Counters, body: Mapping[str, Any], ctr: int) -> Counters:
    """What a verified trust command makes of the counters (refused whole when malformed):

    - ``{"id", "cmd": "trust-reset"}``: every counter above this message's is lowered to it
      (a unit stuck behind a counter central never reached accepts central's next messages;
      whatever central signed before the reset stays refused); the configured keys back in
      effect when ``"keys": "config"``.
    - ``{"id", "cmd": "rotate-key", "keys": ["ed25519:...", ...]}``: the complete new set of
      central's keys, in effect instead of ``[trust] central_keys`` from now on (at least one).
    """
    extra = set(body) - {"id", "cmd", "keys"}
    if extra or not isinstance(body.get("id"), str):
        raise DownlinkRefused(f"{body.get('cmd')}: needs an id, takes only id, cmd, keys")
    last = {**counters.last, "trust": ctr}
    if body["cmd"] == "trust-reset":
        keys = body.get("keys")
        if keys not in (None, "config"):
            raise DownlinkRefused('trust-reset: keys may only be "config"')
        lowered = {t: min(v, ctr) if t != "trust" else v for t, v in last.items()}
        return Counters(
            lowered, counters.config_digest, None if keys == "config" else counters.keys
        )
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise DownlinkRefused("rotate-key: keys must be a non-empty list of ed25519:... keys")
    for text in keys:
        try:
            parse_public_key(text)
        except ValueError as exc:
            raise DownlinkRefused(f"rotate-key: {exc}") from None
    return Counters(last, counters.config_digest, tuple(keys))


def verify_ack(
    trust: Trust, *, unit: str, payload: bytes, properties: Iterable[tuple[str, str]]
) -> bool:
    """Whether ``payload`` on ``mmu/v1/{unit}/down/ack`` may be believed: True when its
    signature checks, False when it is unsigned and the unit takes unsigned acks (no keys, or
    ``require_signed = false``); :class:`DownlinkRefused` with the reason otherwise."""
    props = dict(properties)
    if not trust.keys:
        return False  # development: the broker's ACL is the only guard, as for the downlink
    if "sig" not in props:
        if trust.require_signed:
            raise DownlinkRefused("unsigned ack: this unit accepts only acks signed by central")
        return False
    public = trust.keys.get(props.get("kid", ""))
    if public is None:
        raise DownlinkRefused(f"ack signed with unknown key {props.get('kid', '')[:32]!r}")
    sig = _b64(props["sig"], "ack sig")
    try:
        public.verify(sig, _ack_signed_bytes(unit, payload))
    except InvalidSignature:
        raise DownlinkRefused("ack with a bad signature: not signed by central's key") from None
    return True


def _ack_signed_bytes(unit: str, payload: bytes) -> bytes:
    return ACK_DOMAIN + unit.encode() + b"\x00" + b"down/ack\x00" + payload


class Signer:
    """Central's side: signs what it sends to the units."""

    def __init__(self, private: Ed25519PrivateKey, ttl_s: float = 3600.0) -> None:
        self.private = private
        self.kid = key_id(private.public_key())
        self.ttl_s = ttl_s
        self._last = 0

    @classmethod
    def from_pem(cls, pem: bytes, ttl_s: float = 3600.0) -> Signer:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key (make one with `central keygen`)")
        return cls(key, ttl_s)

    def counter(self) -> int:
        """Microseconds since 1970, past the last one: increasing across restarts as long as
        central's clock does not go back."""
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return self._last

    def sign(
        self,
        unit: str,
        topic: str,
        body: Mapping[str, Any],
        *,
        ctr: int | None = None,
        exp: float | None = None,
    ) -> bytes:
        if topic not in TOPICS:
            raise ValueError(f"topic must be one of {TOPICS}")
        inner = {
            "unit": unit,
            "topic": topic,
            "ctr": self.counter() if ctr is None else ctr,
            "exp": round(time.time() + self.ttl_s) if exp is None else exp,
            "body": dict(body),
        }
        msg = json.dumps(inner, separators=(",", ":")).encode()
        sig = self.private.sign(DOMAIN + msg)
        return json.dumps(
            {
                "v": 1,
                "kid": self.kid,
                "msg": base64.b64encode(msg).decode(),
                "sig": base64.b64encode(sig).decode(),
            }
        ).encode()

    def ack_properties(self, unit: str, payload: bytes) -> list[tuple[str, str]]:
        """The MQTT 5 user properties that sign an ack to ``unit`` (its payload unchanged)."""
        sig = self.private.sign(_ack_signed_bytes(unit, payload))
        return [("kid", self.kid), ("sig", base64.b64encode(sig).decode())]


def new_private_key_pem() -> tuple[bytes, str]:
    """A new key pair: the private key (PEM, PKCS#8) and the public key line for the units."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_key_text(private.public_key())
