"""Named queries of the CDR explorer: calls selected by filters, and one call's legs and events.

Every CDR read uses ``tawag.cdrs FINAL`` (one row per call, its latest revision); the
window is half-open ``[start, end)`` on ``started_at``, UTC. Filters are bound
parameters, never text: a filter left ``None`` selects everything.

Filters (:data:`CALL_FILTERS`):

* ``direction``, ``disposition``, ``agent`` (the extension that answered), ``did`` (the
  number dialled from outside) - exact matches;
* ``group`` - the number or ring group dialled (the CDR's ``callee``: a call to a ring
  group keeps the group's name as its callee);
* ``number`` - a part of the caller's or the callee's number (substring match).

A call's events come from ``tawag.call_events``, the audit log: a message Kafka
delivered twice is kept there twice, so events are de-duplicated by ``event_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import CALL_EVENTS, CDRS

__all__ = ["CALL_COLUMNS", "CALL_FILTERS", "EVENT_COLUMNS", "find_call", "find_calls",
           "count_calls", "call_events",
           "call_legs", "filter_values"]

CALL_COLUMNS = ("tenant", "call_id", "version", "direction", "caller", "callee", "did", "agent",
                "started_at", "answered_at", "ended_at", "ring_ms", "talk_ms", "disposition",
                "sip_code", "reason", "hangup_by", "closed", "recording", "mos", "packet_loss",
                "jitter_ms", "event_count", "last_event_ts")
"""The CDR columns the explorer lists and exports (named here, not taken from the
``Cdr`` record, so a field added to the record before its migration breaks nothing)."""

CALL_FILTERS = ("direction", "disposition", "agent", "group", "did", "number")
"""Keyword filters accepted by :func:`find_calls` and :func:`count_calls`."""

EVENT_COLUMNS = ("ts", "type", "leg_id", "source", "caller", "callee", "agent", "sip_code",
                 "reason", "hangup_by", "duration_ms")
"""Columns of a call's event list, in order."""

_EXACT = {"direction": "direction", "disposition": "disposition", "agent": "agent",
          "group": "callee", "did": "did"}
_NUMBER = ("(position(ifNull(caller, ''), {f_number:String}) > 0 "
           "OR position(ifNull(callee, ''), {f_number:String}) > 0)")


def _filters(filters: dict[str, str | None]) -> tuple[str, dict[str, Any]]:
    """``AND ...`` conditions and their bound values for the filters that are set."""
    unknown = set(filters) - set(CALL_FILTERS)
    if unknown:
        raise ValueError(f"unknown call filter(s): {', '.join(sorted(unknown))}")
    sql, params = "", {}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        sql += f" AND {_NUMBER}" if name == "number" else \
            f" AND {_EXACT[name]} = {{f_{name}:String}}"
        params[f"f_{name}"] = value
    return sql, params


def find_calls(client: WarehouseClient, tenant: str, start: datetime, end: datetime, *,
               limit: int = 500, **filters: str | None) -> pd.DataFrame:
    """Calls started in ``[start, end)`` that match ``filters``, newest first, at most ``limit``."""
    sql, params = _filters(filters)
    return client.query_df(
        f"SELECT {', '.join(CALL_COLUMNS)} FROM {CDRS} FINAL WHERE {CALL_WINDOW}{sql} "
        "ORDER BY started_at DESC, call_id LIMIT {limit:UInt32}",
        {"tenant": tenant, "start": start, "end": end, "limit": limit, **params})


def find_call(client: WarehouseClient, tenant: str, call_id: str) -> dict[str, Any] | None:
    """One call of ``tenant`` (latest revision, :data:`CALL_COLUMNS`), or None: a call id of
    another tenant is not found."""
    rows = client.query(
        f"SELECT {', '.join(CALL_COLUMNS)} FROM {CDRS} FINAL "
        "WHERE tenant = {tenant:String} AND call_id = {call_id:String}",
        {"tenant": tenant, "call_id": call_id})
    return rows[0] if rows else None


def count_calls(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                **filters: str | None) -> int:
    """How many calls :func:`find_calls` would select without a limit."""
    sql, params = _filters(filters)
    rows = client.query(f"SELECT count() AS n FROM {CDRS} FINAL WHERE {CALL_WINDOW}{sql}",
                        {"tenant": tenant, "start": start, "end": end, **params})
    return int(rows[0]["n"])


def call_events(client: WarehouseClient, tenant: str, call_id: str) -> pd.DataFrame:
    """The call's events in event-time order, each ``event_id`` once (:data:`EVENT_COLUMNS`)."""
    return client.query_df(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM {CALL_EVENTS} "
        "WHERE tenant = {tenant:String} AND call_id = {call_id:String} "
        "ORDER BY ts, event_id LIMIT 1 BY event_id",
        {"tenant": tenant, "call_id": call_id})


def call_legs(client: WarehouseClient, tenant: str, call_id: str) -> pd.DataFrame:
    """One row per leg of the call: ``leg_id``, ``first_ts``, ``last_ts``, ``callee``,
    ``agent``, ``events`` (distinct events), ``last_type``; legs ordered by first event."""
    return client.query_df(
        "SELECT ifNull(leg_id, call_id) AS leg, min(ts) AS first_ts, max(ts) AS last_ts, "
        "anyLast(callee) AS callee, anyLast(agent) AS agent, uniqExact(event_id) AS events, "
        "argMax(type, ts) AS last_type "
        f"FROM {CALL_EVENTS} WHERE tenant = {{tenant:String}} AND call_id = {{call_id:String}} "
        "GROUP BY leg ORDER BY first_ts, leg",
        {"tenant": tenant, "call_id": call_id})


FILTER_VALUES_CAP = 1000
"""At most this many values per filter list (a choice list, not a report)."""


def filter_values(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> dict[str, list[str]]:
    """The agents, groups (callees of inbound calls) and DIDs seen in the window, sorted.

    Choice lists for the filters: read without FINAL (an older revision's value may be
    offered too; selecting it simply finds no call), capped at :data:`FILTER_VALUES_CAP`.
    """
    rows = client.query(
        "SELECT arraySort(groupUniqArrayIf({cap:UInt32})(agent, agent IS NOT NULL)) AS agents, "
        "arraySort(groupUniqArrayIf({cap:UInt32})(callee, callee IS NOT NULL "
        "AND direction = 'inbound')) AS groups, "
        "arraySort(groupUniqArrayIf({cap:UInt32})(did, did IS NOT NULL)) AS dids "
        f"FROM {CDRS} WHERE {CALL_WINDOW}",
        {"tenant": tenant, "start": start, "end": end, "cap": FILTER_VALUES_CAP})
    return {key: [str(v) for v in rows[0][key]] for key in ("agents", "groups", "dids")}
