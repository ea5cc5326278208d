"""Named queries of routing decisions: why a call went where it went, how often each rule fired.

A decision is a ``route.decided`` event (:mod:`core.events`) in ``tawag.call_events``; its
``extra`` JSON holds ``rule``, ``target``, ``default_target`` and ``decision_us``. The
events table is the audit log (a message Kafka delivered twice is kept twice), so each
``event_id`` is read once. Windows are half-open ``[start, end)`` on the event time, UTC.

"Why did this call go to 103?" is :func:`call_decisions`; the Routing page's hit counts
are :func:`rule_counts`, its waiting-queue figures :func:`queue_summary` and
:func:`queue_intervals`.

The waiting queue of a ``longest_idle`` group speaks in four rules (``core.events``):
``queue_wait`` (the caller entered; ``position`` its place, 1 = first), ``queue_offer``
(the head of the queue offered to an agent), ``queue_overflow`` (to the group's overflow
target; ``inputs`` ``reason=timeout|full|no_agent|expired``) and ``queue_abandon`` (the
caller hung up while waiting); the last three carry ``wait_ms``, how long the caller had
waited. Every one names the queue's group as ``default_target`` (``group:<name>``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from core.events import EventType
from core.timezones import BUCKETS, UTC_ZONE, bounds, zone
from warehouse.client import WarehouseClient
from warehouse.schema import CALL_EVENTS

__all__ = ["DECISION_COLUMNS", "QUEUE_COLUMNS", "OVERFLOW_REASONS", "call_decisions",
           "rule_counts", "decided_calls", "queue_summary", "queue_intervals"]

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



def decided_calls(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> pd.DataFrame:
    """Calls a routing rule decided in ``[start, end)``, each once however many decisions
    it took (a queued call is decided on entering and again on leaving; a hunt may try
    several members), and the edge's p99 decision time over all of them (microseconds)."""
    return client.query_df(
        "SELECT uniqExact(call_id) AS calls, count() AS decisions, "
        "toInt64(ifNull(quantileExactOrNull(0.99)(decision_us), 0)) AS p99_decision_us "
        f"FROM (SELECT call_id, {_FIELDS} FROM {CALL_EVENTS} "
        f"WHERE {_DECIDED} AND ts >= {{start:DateTime64(3, 'UTC')}} "
        "AND ts < {end:DateTime64(3, 'UTC')} LIMIT 1 BY event_id)",
        {"tenant": tenant, "type": EventType.ROUTE_DECIDED.value, "start": start,
         "end": end})


# --- the waiting queue ----------------------------------------------------------------------

OVERFLOW_REASONS = ("timeout", "full", "no_agent", "expired")
"""Why a caller overflowed (kamailio.cfg route[QUEUE_OVERFLOW]): waited ``max_wait_s``;
``max_length`` callers were already waiting (never queued); offered nobody after all; the
suspended INVITE outlived the queue's ticks."""

QUEUE_COLUMNS = ("queue", "queued", "offered", "overflowed",
                 *(f"overflowed_{r}" for r in OVERFLOW_REASONS), "abandoned",
                 "wait_p50_s", "wait_p90_s", "wait_max_s", "max_queue_length")
"""The figures of one queue (and interval): see :func:`queue_summary`."""

_QUEUE_RULES = {"wait": "queue_wait", "offer": "queue_offer", "overflow": "queue_overflow",
                "abandon": "queue_abandon", "return": "queue_return"}
_QUEUE_DECISIONS = (
    "SELECT ts, call_id, JSONExtractString(extra, 'rule') AS rule, "
    "replaceRegexpOne(JSONExtractString(extra, 'default_target'), '^group:', '') AS queue, "
    "JSONExtractInt(extra, 'position') AS position, JSONExtractInt(extra, 'wait_ms') AS wait_ms, "
    "extract(JSONExtractString(extra, 'inputs'), 'reason=([^;]*)') AS reason "
    f"FROM {CALL_EVENTS} WHERE {_DECIDED} AND ts >= {{start:DateTime64(3, 'UTC')}} "
    "AND ts < {end:DateTime64(3, 'UTC')} "
    "AND JSONExtractString(extra, 'rule') IN {queue_rules:Array(String)} LIMIT 1 BY event_id")
_QUEUE_EVENTS = (
    "SELECT *, rule = {r_offer:String} AND row_number() OVER (PARTITION BY call_id, rule "
    "ORDER BY ts) > countIf(rule = {r_return:String}) OVER (PARTITION BY call_id) AS taken "
    f"FROM ({_QUEUE_DECISIONS})")
"""One row per queue decision of the window (each event_id once); ``taken``: an offer
that was not followed by a ``queue_return`` (the member offered did not answer and the
caller waited again - each return follows its own offer, so a call's last offers are
the ones taken)."""

# a caller who left the queue: offered (and not back), abandoned, or overflowed after
# waiting (a "full" overflow never entered it, so its 0 ms is no wait)
_LEFT = ("(taken OR rule = {r_abandon:String} OR "
         "(rule = {r_overflow:String} AND reason != {reason_full:String}))")
_WAIT_S = f"if(countIf({_LEFT}) = 0, NULL, %s / 1000)"




def _queue_aggregates() -> str:
    """The SELECT list of :data:`QUEUE_COLUMNS` after ``queue``, over :data:`_QUEUE_EVENTS`."""
    overflow = "rule = {r_overflow:String}"
    by_reason = [f"countIf({overflow} AND reason = {{reason_{r}:String}}) AS overflowed_{r}"
                 for r in OVERFLOW_REASONS]
    waits = [_WAIT_S % f"quantileExactInclusiveIf({q})(wait_ms, {_LEFT})" + f" AS wait_{n}_s"
             for n, q in (("p50", 0.5), ("p90", 0.9))]
    return ", ".join([
        "countIf(rule = {r_wait:String}) AS queued",
        "countIf(taken) AS offered", f"countIf({overflow}) AS overflowed",
        *by_reason, "countIf(rule = {r_abandon:String}) AS abandoned", *waits,
        _WAIT_S % f"maxIf(wait_ms, {_LEFT})" + " AS wait_max_s",
        "maxIf(position, rule = {r_wait:String}) AS max_queue_length"])


def _queue_params(tenant: str, start: datetime, end: datetime) -> dict[str, object]:
    return {"tenant": tenant, "type": EventType.ROUTE_DECIDED.value, "start": start,
            "end": end, "queue_rules": list(_QUEUE_RULES.values()),
            **{f"r_{k}": v for k, v in _QUEUE_RULES.items()},
            **{f"reason_{r}": r for r in OVERFLOW_REASONS}}


def queue_summary(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> pd.DataFrame:
    """Per waiting queue in ``[start, end)``: callers queued, offered to an agent (the
    queue's answers), overflowed (by reason), abandoned while waiting, the wait in seconds
    (p50, p90 and max) of those that left the queue, and the longest queue seen.

    Each figure counts the decision in the window it was taken in: a caller queued at
    09:59 and offered at 10:01 is queued in one, offered in the other. A ``full``
    overflow never waited: it is no wait and no position. An offer the member did not
    answer (the caller went back to the queue, ``queue_return``) is no answer of the
    queue. Columns :data:`QUEUE_COLUMNS`.
    """
    return client.query_df(
        f"SELECT queue, {_queue_aggregates()} FROM ({_QUEUE_EVENTS}) "
        "GROUP BY queue ORDER BY queued DESC, queue", _queue_params(tenant, start, end))


def queue_intervals(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                    interval: str = "1 hour", *, tz: str = UTC_ZONE) -> pd.DataFrame:
    """The figures of :func:`queue_summary` per interval (``'15 minute'``, ``'1 hour'``,
    ``'1 day'``, local to ``tz``, the tenant's zone) and queue: each decision in the
    interval it was taken in.

    Every interval of the window is present for every queue seen in it (counts 0, waits
    None), so a chart shows quiet hours as quiet; no queue decision at all: no rows.
    Columns ``interval_start`` (in ``tz``) then :data:`QUEUE_COLUMNS`.
    """
    if interval not in BUCKETS:
        raise ValueError(f"interval must be one of {', '.join(BUCKETS)}; got {interval!r}")
    edges = [round(b.timestamp() * 1000)
             for b in bounds(_aware(start), _aware(end), interval, zone(tz))]
    bucket = ("{bounds:Array(Int64)}[arrayCount(b -> b <= toUnixTimestamp64Milli(ts), "
              "{bounds:Array(Int64)})]")
    names = ", ".join(QUEUE_COLUMNS[1:])
    return client.query_df(
        f"WITH ev AS ({_QUEUE_EVENTS}) "
        "SELECT fromUnixTimestamp64Milli(bucket_ms, {tz:String}) AS interval_start, "
        f"queue, {names} FROM "
        "(SELECT arrayJoin(arrayPopBack({bounds:Array(Int64)})) AS bucket_ms) AS g "
        "CROSS JOIN (SELECT DISTINCT queue FROM ev) AS q LEFT JOIN ("
        f"SELECT {bucket} AS bucket_ms, queue, {_queue_aggregates()} FROM ev "
        "GROUP BY bucket_ms, queue) AS k USING (bucket_ms, queue) "
        "ORDER BY interval_start, queue",
        {**_queue_params(tenant, start, end), "bounds": edges, "tz": tz})


def _aware(ts: datetime) -> datetime:
    """A naive datetime is UTC, as everywhere in the warehouse."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
