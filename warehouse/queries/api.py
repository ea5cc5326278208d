"""Named queries of the public REST API (``api/``): pages of calls and agents' states now.

The API pages calls by *keyset* (cursor) rather than offset: calls are ordered newest
first by ``(started_at, call_id)`` and the next page starts strictly after the last row
of the previous one, so a page is stable while new calls arrive and costs the same at
any depth. Filters are the CDR explorer's (:data:`warehouse.queries.calls.CALL_FILTERS`),
bound as parameters. Every read is scoped by ``tenant`` and reads ``tawag.cdrs FINAL``
(one row per call, its latest revision).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from warehouse.client import WarehouseClient
from warehouse.queries.calls import CALL_COLUMNS, _filters
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import AGENT_STATES, CDRS

__all__ = ["calls_page", "agents_now"]


def calls_page(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
               after: tuple[datetime, str] | None = None, limit: int = 100,
               **filters: str | None) -> list[dict[str, Any]]:
    """Up to ``limit`` calls started in ``[start, end)`` matching ``filters``, newest first,
    strictly after the ``(started_at, call_id)`` keyset ``after`` when given."""
    sql, params = _filters(filters)
    if after is not None:
        sql += (" AND (started_at, call_id) < "
                "({after_ts:DateTime64(3, 'UTC')}, {after_id:String})")
        params |= {"after_ts": after[0], "after_id": after[1]}
    return client.query(
        f"SELECT {', '.join(CALL_COLUMNS)} FROM {CDRS} FINAL WHERE {CALL_WINDOW}{sql} "
        "ORDER BY started_at DESC, call_id DESC LIMIT {limit:UInt32}",
        {"tenant": tenant, "start": start, "end": end, "limit": limit, **params})


def agents_now(client: WarehouseClient, tenant: str) -> list[dict[str, Any]]:
    """Each agent's current state: its open segment (``until`` not set; FINAL, retracted
    segments skipped), ``agent``, ``state``, ``since``; by agent. An agent with no open
    segment is not listed."""
    return client.query(
        # aliases other than the columns' names: an alias named like a column would
        # shadow it inside the other aggregate
        "SELECT agent, current_state AS state, current_since AS since FROM ("
        "SELECT agent, argMax(state, since) AS current_state, max(since) AS current_since "
        f"FROM {AGENT_STATES} FINAL WHERE tenant = {{tenant:String}} AND NOT deleted "
        "AND until IS NULL GROUP BY agent) ORDER BY agent",
        {"tenant": tenant})
