"""Named queries of routing decisions: why a call went where it went, how often each rule fired.

A decision is a ``route.decided`` event (:mod:`core.events`) in ``tawag.call_events``; its
``extra`` JSON holds ``rule``, ``target``, ``default_target`` and ``decision_us``. The
events table is the audit log (a message Kafka delivered twice is kept twice), so each
``event_id`` is read once. Windows are half-open ``[start, end)`` on the event time, UTC.

"Why did this call go to 103?" is :func:`call_decisions`; the Routing page's hit counts
are :func:`rule_counts`.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from core.events import EventType
from warehouse.client import WarehouseClient
from warehouse.schema import CALL_EVENTS

__all__ = ["DECISION_COLUMNS", "call_decisions", "rule_counts"]

DECISION_COLUMNS = ("ts", "rule", "target", "default_target", "decision_us")

_FIELDS = ("JSONExtractString(extra, 'rule') AS rule, "
           "JSONExtractString(extra, 'target') AS target, "
           "JSONExtractString(extra, 'default_target') AS default_target, "
           "JSONExtractInt(extra, 'decision_us') AS decision_us")
_DECIDED = "tenant = {tenant:String} AND type = {type:String}"


def call_decisions(client: WarehouseClient, tenant: str, call_id: str) -> pd.DataFrame:
    """The routing decisions taken for one call, in time order (:data:`DECISION_COLUMNS`)."""
    return client.query_df(
        f"SELECT ts, {_FIELDS} FROM {CALL_EVENTS} "
        f"WHERE {_DECIDED} AND call_id = {{call_id:String}} "
        "ORDER BY ts, event_id LIMIT 1 BY event_id",
        {"tenant": tenant, "type": EventType.ROUTE_DECIDED.value, "call_id": call_id})


def rule_counts(client: WarehouseClient, tenant: str, start: datetime,
                end: datetime) -> pd.DataFrame:
    """Per rule and target in ``[start, end)``: the calls it decided and the edge's p99
    decision time (microseconds); most frequent first."""
    return client.query_df(
        "SELECT rule, target, uniqExact(call_id) AS calls, "
        "toInt64(quantileExact(0.99)(decision_us)) AS p99_decision_us "
        f"FROM (SELECT call_id, {_FIELDS} FROM {CALL_EVENTS} "
        f"WHERE {_DECIDED} AND ts >= {{start:DateTime64(3, 'UTC')}} "
        "AND ts < {end:DateTime64(3, 'UTC')} LIMIT 1 BY event_id) "
        "GROUP BY rule, target ORDER BY calls DESC, rule, target",
        {"tenant": tenant, "type": EventType.ROUTE_DECIDED.value, "start": start,
         "end": end})
