"""Ed25519 public keys as the unit's configuration writes them: ``ed25519:<base64 of the 32 raw
bytes>`` (what ``edge-agent central keygen`` prints), and the short key id a signature names.
Vocabulary: the settings check the keys they are given, and the downlink signatures use them."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:<base64 of the 32 raw bytes>`` (what ``central keygen`` prints)."""
    prefix, _, data = text.strip().partition(":")
    if prefix != "ed25519" or not data:
        raise ValueError("expected ed25519:<base64>, as printed by `edge-agent central keygen`")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("the key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)
