"""Named queries on CDRs (``tawag.cdrs``): what the dashboards and reports ask.

Every query reads ``tawag.cdrs FINAL``: the table holds every revision of a call
(ReplacingMergeTree on ``version``) and FINAL collapses them to the highest version at
read time, so a call counts once, with its latest state, whether or not the background
merges have run. Filters on non-key columns (``started_at``) apply after FINAL.

Time windows are half-open ``[start, end)`` on the call's ``started_at`` (when it was
offered), as instants (naive datetimes are taken as UTC); a page passes the bounds of the
tenant's local day; the window also bounds ``call_day`` (``warehouse.queries.window``), so
only its days are read. Hour buckets are local to the tenant's zone (``tz``).

KPI definitions (named, see reference/peer-survey.md §3):

* **answered** - closed calls whose disposition is ``answered``;
* **missed** - closed calls that ended ``busy``, ``no_answer``, ``cancelled`` or
  ``failed`` (Asterisk's BUSY / NO ANSWER / FAILED plus a caller hang-up while ringing);
* **answer rate** - the queue KPI (``kpi.answer_rate``): answered / closed inbound
  calls (calls still in progress are not yet an outcome); ``None`` when none closed.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

import pandas as pd

from core.records import Cdr, Disposition
from warehouse.client import WarehouseClient
from warehouse.queries.window import CALL_WINDOW
from warehouse.schema import CDRS

__all__ = ["CDR_COLUMNS", "MISSED", "calls_summary", "latest_cdrs", "cdr", "cdrs_between",
           "calls_by_hour"]

CDR_COLUMNS = tuple(f.name for f in fields(Cdr))
"""The business columns of a CDR (the Kafka bookkeeping columns are left out)."""

MISSED = (Disposition.BUSY, Disposition.NO_ANSWER, Disposition.CANCELLED,
          Disposition.FAILED)
"""Dispositions that count as a missed call."""

_SELECT = f"SELECT {', '.join(CDR_COLUMNS)} FROM {CDRS} FINAL"
_OUTCOMES = ("countIf(closed AND disposition = {answered:String}) AS answered, "
             "countIf(closed AND disposition IN {missed:Array(String)}) AS missed")


def _outcome_params() -> dict[str, Any]:
    return {"answered": Disposition.ANSWERED, "missed": list(MISSED)}


def calls_summary(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> dict[str, Any]:
    """Totals of the calls started in ``[start, end)`` (FINAL: one row per call).

    Returns ``total``, ``in_progress``, ``closed``, ``answered``, ``missed`` (every
    direction: the traffic) and ``answer_rate``: the queue KPI of
    :func:`warehouse.queries.kpi.answer_rate`, answered / closed **inbound** calls (None
    if none), so the figure is the same on every page.
    """
    rows = client.query(
        f"SELECT count() AS total, countIf(NOT closed) AS in_progress, "
        # "closed" is a column, so its count needs another alias (an alias would shadow it)
        f"countIf(closed) AS closed_calls, {_OUTCOMES}, "
        "countIf(closed AND direction = 'inbound') AS inbound_closed, "
        "countIf(closed AND direction = 'inbound' AND disposition = {answered:String}) "
        f"AS inbound_answered FROM {CDRS} FINAL WHERE {CALL_WINDOW}",
        {"tenant": tenant, "start": start, "end": end, **_outcome_params()})
    summary = {k.removesuffix("_calls"): int(v) for k, v in rows[0].items()}
    inbound, answered = summary.pop("inbound_closed"), summary.pop("inbound_answered")
    summary["answer_rate"] = answered / inbound if inbound else None
    return summary


LATEST_LOOKBACK_DAYS = (0, 6, 30, None)
"""The days :func:`latest_cdrs` reads back from the tenant's newest, widening in turn."""


def latest_cdrs(client: WarehouseClient, tenant: str, limit: int = 50) -> pd.DataFrame:
    """The ``limit`` most recently started calls, newest first (FINAL: latest revision).

    Reads the tenant's newest day, then the last week, month, all, until ``limit`` calls
    are found: a call of a later ``call_day`` started later, so those are the newest.
    """
    newest = client.query(
        f"SELECT call_day FROM {CDRS} WHERE tenant = {{tenant:String}} "
        "ORDER BY call_day DESC LIMIT 1", {"tenant": tenant})
    params: dict[str, Any] = {"tenant": tenant, "limit": limit}
    for back in LATEST_LOOKBACK_DAYS if newest else (None,):
        days = ""
        if back is not None:
            days = " AND call_day >= subtractDays(toDate32({newest:Date}), {back:UInt32})"
            params |= {"newest": newest[0]["call_day"], "back": back}
        found = client.query_df(f"{_SELECT} WHERE tenant = {{tenant:String}}{days} "
                                "ORDER BY started_at DESC, call_id LIMIT {limit:UInt32}",
                                params)
        if len(found) >= limit or back is None:
            return found
    raise AssertionError("unreachable: the last lookback reads every day")


def cdr(client: WarehouseClient, tenant: str, call_id: str) -> dict[str, Any] | None:
    """One call's latest CDR revision (FINAL), or None if the call is unknown."""
    rows = client.query(
        f"{_SELECT} WHERE tenant = {{tenant:String}} AND call_id = {{call_id:String}}",
        {"tenant": tenant, "call_id": call_id})
    return rows[0] if rows else None


def cdrs_between(client: WarehouseClient, tenant: str, start: datetime,
                 end: datetime) -> pd.DataFrame:
    """Every call started in ``[start, end)``, oldest first (FINAL: latest revision)."""
    return client.query_df(f"{_SELECT} WHERE {CALL_WINDOW} ORDER BY started_at, call_id",
                           {"tenant": tenant, "start": start, "end": end})


def calls_by_hour(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime, *, tz: str = "UTC") -> pd.DataFrame:
    """Calls per local hour of ``started_at`` in ``[start, end)`` (FINAL).

    Hours are those of ``tz`` (the tenant's IANA zone; a DST day has 23 or 25 of them).
    Columns ``hour`` (start of the hour, in ``tz``), ``total``, ``answered``, ``missed``;
    hours without calls are present with zeros (WITH FILL), so a chart has no gaps.
    """
    # toStartOfHour gives DateTime (seconds), which Arrow carries as a bare integer: the
    # outer SELECT turns the filled hours into DateTime64 so pandas sees timestamps.
    return client.query_df(
        "SELECT toDateTime64(h, 3, {tz:String}) AS hour, total, answered, missed FROM ("
        f"SELECT toStartOfHour(started_at, {{tz:String}}) AS h, count() AS total, {_OUTCOMES} "
        f"FROM {CDRS} FINAL WHERE {CALL_WINDOW} GROUP BY h ORDER BY h WITH FILL "
        "FROM toStartOfHour(toDateTime({start:DateTime64(3, 'UTC')}, {tz:String})) "
        "TO toDateTime({end:DateTime64(3, 'UTC')}, {tz:String}) STEP toIntervalHour(1)"
        ") ORDER BY hour",
        {"tenant": tenant, "start": start, "end": end, "tz": tz, **_outcome_params()})
