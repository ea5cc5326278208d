"""Webhook signatures: Tawag's own (HMAC-SHA256 over timestamp and body) and Zadarma's.

Tawag-native deliveries carry::

    Tawag-Event-Id: <event id>          (also Idempotency-Key: a receiver drops repeats)
    Tawag-Timestamp: <unix seconds>
    Tawag-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

Signing the timestamp with the body makes a captured delivery useless later: a receiver
refuses timestamps older than a few minutes (:func:`verify`). Zadarma's signature
(``Signature: base64(hex(HMAC-SHA1(secret, <some fields>)))``, crm-contracts.md §4.1)
covers 2-3 fields only; it is :func:`core.zadarma.signature`, shared by the Zadarma-format
subscriptions (:mod:`api.zadarma`) and the Zadarma source (:mod:`ingest.zadarma`).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "verify", "headers", "TOLERANCE_S"]

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

