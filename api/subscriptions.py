"""Webhook subscriptions per tenant: URL, event types, secret, format.

Kept in ``<data_dir>/api/subscriptions.json`` (mode 0600: it holds the secrets, which the
worker needs in clear to sign), rewritten atomically on each change. The API process is
the only writer (subscriptions are managed through the API).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.settings import Settings

__all__ = ["Subscription", "SubscriptionStore", "subscriptions_file", "wants"]


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    format: str
    """``tawag`` (JSON, HMAC-SHA256) or ``zadarma`` (form fields, Signature header)."""
    secret: str
    timezone: str
    created_at: float


def subscriptions_file(settings: Settings) -> Path:
    return settings.data_dir / "api" / "subscriptions.json"


def wants(sub: Subscription, event_type: str) -> bool:
    return "*" in sub.events or event_type in sub.events


class SubscriptionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}
        if path.exists():
            for row in json.loads(path.read_text())["subscriptions"]:
                sub = Subscription(**{**row, "events": tuple(row["events"])})
                self._subs[sub.id] = sub

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"subscriptions": [asdict(s) for s in self._subs.values()]}, out,
                      indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def add(self, tenant: str, url: str, events: tuple[str, ...], fmt: str,
            secret: str | None, timezone: str) -> Subscription:
        sub = Subscription(id="sub_" + secrets.token_hex(8), tenant=tenant, url=url,
                           events=events, format=fmt,
                           secret=secret or secrets.token_urlsafe(32), timezone=timezone,
                           created_at=time.time())
        with self._lock:
            self._subs[sub.id] = sub
            self._save()
        return sub

    def remove(self, sub_id: str) -> Subscription | None:
        with self._lock:
            sub = self._subs.pop(sub_id, None)
            if sub is not None:
                self._save()
            return sub

    def get(self, sub_id: str) -> Subscription | None:
        with self._lock:
            return self._subs.get(sub_id)

    def of_tenant(self, tenant: str) -> list[Subscription]:
        with self._lock:
            return sorted((s for s in self._subs.values() if s.tenant == tenant),
                          key=lambda s: s.created_at)

    def all(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs.values())
