"""Webhook signatures: Tawag's own (HMAC-SHA256 over timestamp and body) and Zadarma's.

Tawag-native deliveries carry::

    Tawag-Event-Id: <event id>          (also Idempotency-Key: a receiver drops repeats)
    Tawag-Timestamp: <unix seconds>
    Tawag-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

Signing the timestamp with the body makes a captured delivery useless later: a receiver
refuses timestamps older than a few minutes (:func:`verify`). Zadarma's signature
(``Signature: base64(hex(HMAC-SHA1(secret, <some fields>)))``, crm-contracts.md §4.1)
covers 2-3 fields only; it is here so a Zadarma-format subscription is verified exactly as
Zadarma's own library does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["sign", "verify", "headers", "zadarma_signature", "TOLERANCE_S"]

TOLERANCE_S = 300
"""How old a timestamp :func:`verify` accepts by default."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one Tawag-native delivery."""
    return {"Content-Type": "application/json", "Tawag-Event-Id": event_id,
            "Idempotency-Key": event_id, "Tawag-Timestamp": str(timestamp),
            "Tawag-Signature": sign(secret, timestamp, body)}


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float,
           tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def zadarma_signature(signed: str, secret: str) -> str:
    """Zadarma's ``Signature``: base64 of the *hex* HMAC-SHA1 (PHP ``hash_hmac``)."""
    hexdigest = hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()
