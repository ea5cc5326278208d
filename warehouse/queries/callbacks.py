"""Named queries on the missed-call callback list (``tawag.callbacks``).

The table holds every revision of an item (ReplacingMergeTree on ``version``); every
query reads it with FINAL and then skips retracted items (``deleted``), so each item
counts once with its latest state. Windows are half-open ``[start, end)`` of instants
(a page passes the tenant's local days). Each item carries ``night`` / ``weekend``, the
flags of its first missed call in the tenant's zone (``time_zone``), set by streams.

Definitions (named, see reference/peer-survey.md §3 and ``streams.folds.callbacks``):

* an *item* is a client (normalised number) with one or more missed inbound calls and
  no answered call with us since the first of them; nights and weekends included;
* **time to callback** - from the first missed call of the item to the answer of the
  call (either direction) that closed it;
* **callback success rate** (Zadarma-style missed-call list) - items opened in the
  window that are closed (an answered call reached the client), optionally only those
  closed within ``within_s`` seconds, divided by the items opened in the window;
* **mean / median time to callback** - over the closed items opened in the window (the
  median interpolates between the two middle values, like PERCENTILE.INC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.schema import CALLBACKS

__all__ = ["ITEM_COLUMNS", "open_callbacks", "closed_callbacks", "callback_summary"]

ITEM_COLUMNS = ("client", "item_id", "status", "opened_at", "last_missed_at", "attempts",
                "callback_attempts", "closed_at", "closed_by_call_id", "called_back_by",
                "callback_direction", "time_to_callback_ms", "night", "weekend", "time_zone")

_LIVE = f"FROM {CALLBACKS} FINAL WHERE tenant = {{tenant:String}} AND NOT deleted"


def open_callbacks(client: WarehouseClient, tenant: str, as_of: datetime) -> pd.DataFrame:
    """Items still open and opened before ``as_of``, oldest first, with ``age_ms`` at ``as_of``."""
    return client.query_df(
        f"SELECT {', '.join(ITEM_COLUMNS)}, "
        "toInt64(dateDiff('millisecond', opened_at, {as_of:DateTime64(3, 'UTC')})) AS age_ms "
        f"{_LIVE} AND status = 'open' AND opened_at <= {{as_of:DateTime64(3, 'UTC')}} "
        "ORDER BY opened_at, client",
        {"tenant": tenant, "as_of": as_of})


def closed_callbacks(client: WarehouseClient, tenant: str, start: datetime,
                     end: datetime) -> pd.DataFrame:
    """Items closed in ``[start, end)``: who called back and the time to callback."""
    return client.query_df(
        f"SELECT {', '.join(ITEM_COLUMNS)} {_LIVE} AND status = 'closed' "
        "AND closed_at >= {start:DateTime64(3, 'UTC')} AND closed_at < {end:DateTime64(3, 'UTC')} "
        "ORDER BY closed_at, client",
        {"tenant": tenant, "start": start, "end": end})


def callback_summary(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                     within_s: int | None = None) -> dict[str, Any]:
    """Items opened in ``[start, end)``: ``items``, ``closed``, ``open``, ``success_rate``
    (closed [within ``within_s``] / items, None if no item), ``mean_time_to_callback_ms``
    and ``median_time_to_callback_ms`` (over closed items, None if none)."""
    rows = client.query(
        "SELECT count() AS items, countIf(status = 'closed') AS closed_items, "
        "countIf(status = 'closed' AND ({within:Nullable(Int64)} IS NULL "
        "  OR time_to_callback_ms <= {within:Nullable(Int64)} * 1000)) AS successes, "
        "avgIf(time_to_callback_ms, status = 'closed') AS mean_ttc, "
        "quantileExactInclusiveIf(0.5)(time_to_callback_ms, status = 'closed') AS median_ttc "
        f"{_LIVE} AND opened_at >= {{start:DateTime64(3, 'UTC')}} "
        "AND opened_at < {end:DateTime64(3, 'UTC')}",
        {"tenant": tenant, "start": start, "end": end, "within": within_s})
    row = rows[0]
    items, closed = int(row["items"]), int(row["closed_items"])
    return {
        "items": items, "closed": closed, "open": items - closed,
        "success_rate": int(row["successes"]) / items if items else None,
        "mean_time_to_callback_ms": float(row["mean_ttc"]) if closed else None,
        "median_time_to_callback_ms": float(row["median_ttc"]) if closed else None,
    }
