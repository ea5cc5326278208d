"""The webhook delivery log for readers outside the API process (the dashboards' page).

The API process owns the outbox journal and the subscriptions file under
``data_dir/api``; this module only reads them (the journal is append-only and compacted
by an atomic rename, so a reader sees a whole version), the way
``connectors.outbox.list_rejections`` does for the CRM outbox. Rows are those of the API's
``GET /api/v1/webhooks/{id}/deliveries`` (:func:`api.webhooks.delivery_rows`), with the
subscription they belong to::

    rows = delivery_log(settings, "acme")   # newest first within each subscription
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.subscriptions import SubscriptionStore, subscriptions_file
from api.webhooks import delivery_rows
from connectors.outbox import Outbox
from core.settings import Settings

__all__ = ["COLUMNS", "delivery_log", "outbox_file"]

COLUMNS = ("subscription", "url", "format", "event_id", "state", "attempts", "last_status",
           "last_error", "first_attempt_at", "delivered_at", "last_attempt_ms", "latency_ms")
"""The keys of every row of :func:`delivery_log`."""


def outbox_file(settings: Settings) -> Path:
    """The webhook worker's durable outbox journal."""
    return settings.data_dir / "api" / "webhooks-outbox.jsonl"


def delivery_log(settings: Settings, tenant: str, limit: int = 200) -> list[dict[str, Any]]:
    """Up to ``limit`` newest deliveries of each of ``tenant``'s subscriptions (by the
    subscription's creation); nothing for another tenant's subscriptions."""
    subs = SubscriptionStore(subscriptions_file(settings)).of_tenant(tenant)
    path = outbox_file(settings)
    if not subs or not path.exists():
        return []
    box = Outbox(path, fsync=False)
    try:
        return [{"subscription": sub.id, "url": sub.url, "format": sub.format, **row}
                for sub in subs for row in delivery_rows(box, sub.id, limit)]
    finally:
        box.close()
