"""Named queries on CDRs (``tawag.cdrs``): what the dashboards and reports ask.

Every query reads ``tawag.cdrs FINAL``: the table holds every revision of a call
(ReplacingMergeTree on ``version``) and FINAL collapses them to the highest version at
read time, so a call counts once, with its latest state, whether or not the background
merges have run. Filters on non-key columns (``started_at``) apply after FINAL.

Time windows are half-open ``[start, end)`` on the call's ``started_at`` (when it was
offered), in UTC; naive datetimes are taken as UTC.

KPI definitions (named, see reference/peer-survey.md §3):

* **answered** - closed calls whose disposition is ``answered``;
* **missed** - closed calls that ended ``busy``, ``no_answer``, ``cancelled`` or
  ``failed`` (Asterisk's BUSY / NO ANSWER / FAILED plus a caller hang-up while ringing);
* **answer rate** - answered / (answered + missed), i.e. over *closed* calls only
  (Wazo queue_stat / CGRateS ASR style: calls still in progress are not yet an
  outcome); ``None`` when no call has closed.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

import pandas as pd

from core.records import Cdr, Disposition
from warehouse.client import WarehouseClient
from warehouse.schema import CDRS

__all__ = ["CDR_COLUMNS", "MISSED", "calls_summary", "latest_cdrs", "cdr", "cdrs_between",
           "calls_by_hour"]

CDR_COLUMNS = tuple(f.name for f in fields(Cdr))
"""The business columns of a CDR (the Kafka bookkeeping columns are left out)."""

MISSED = (Disposition.BUSY, Disposition.NO_ANSWER, Disposition.CANCELLED,
          Disposition.FAILED)
"""Dispositions that count as a missed call."""

_SELECT = f"SELECT {', '.join(CDR_COLUMNS)} FROM {CDRS} FINAL"
_WINDOW = ("tenant = {tenant:String} AND started_at >= {start:DateTime64(3, 'UTC')} "
           "AND started_at < {end:DateTime64(3, 'UTC')}")
_OUTCOMES = ("countIf(closed AND disposition = {answered:String}) AS answered, "
             "countIf(closed AND disposition IN {missed:Array(String)}) AS missed")


def _outcome_params() -> dict[str, Any]:
    return {"answered": Disposition.ANSWERED, "missed": list(MISSED)}


def calls_summary(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> dict[str, Any]:
    """Totals of the calls started in ``[start, end)`` (FINAL: one row per call).

    Returns ``total``, ``in_progress``, ``closed``, ``answered``, ``missed`` and
    ``answer_rate`` = answered / (answered + missed) over closed calls (None if none).
    """
    rows = client.query(
        f"SELECT count() AS total, countIf(NOT closed) AS in_progress, "
        # "closed" is a column, so its count needs another alias (an alias would shadow it)
        f"countIf(closed) AS closed_calls, {_OUTCOMES} FROM {CDRS} FINAL WHERE {_WINDOW}",
        {"tenant": tenant, "start": start, "end": end, **_outcome_params()})
    summary = {k.removesuffix("_calls"): int(v) for k, v in rows[0].items()}
    outcomes = summary["answered"] + summary["missed"]
    summary["answer_rate"] = summary["answered"] / outcomes if outcomes else None
    return summary


def latest_cdrs(client: WarehouseClient, tenant: str, limit: int = 50) -> pd.DataFrame:
    """The ``limit`` most recently started calls, newest first (FINAL: latest revision)."""
    return client.query_df(
        f"{_SELECT} WHERE tenant = {{tenant:String}} "
        "ORDER BY started_at DESC, call_id LIMIT {limit:UInt32}",
        {"tenant": tenant, "limit": limit})


def cdr(client: WarehouseClient, tenant: str, call_id: str) -> dict[str, Any] | None:
    """One call's latest CDR revision (FINAL), or None if the call is unknown."""
    rows = client.query(
        f"{_SELECT} WHERE tenant = {{tenant:String}} AND call_id = {{call_id:String}}",
        {"tenant": tenant, "call_id": call_id})
    return rows[0] if rows else None


def cdrs_between(client: WarehouseClient, tenant: str, start: datetime,
                 end: datetime) -> pd.DataFrame:
    """Every call started in ``[start, end)``, oldest first (FINAL: latest revision)."""
    return client.query_df(f"{_SELECT} WHERE {_WINDOW} ORDER BY started_at, call_id",
                           {"tenant": tenant, "start": start, "end": end})


def calls_by_hour(client: WarehouseClient, tenant: str, start: datetime,
                  end: datetime) -> pd.DataFrame:
    """Calls per UTC hour of ``started_at`` in ``[start, end)`` (FINAL).

    Columns ``hour`` (start of the hour, UTC), ``total``, ``answered``, ``missed``; hours
    without calls are present with zeros (WITH FILL), so a chart has no gaps.
    """
    # toStartOfHour gives DateTime (seconds), which Arrow carries as a bare integer: the
    # outer SELECT turns the filled hours into DateTime64 so pandas sees timestamps.
    return client.query_df(
        "SELECT toDateTime64(h, 3, 'UTC') AS hour, total, answered, missed FROM ("
        f"SELECT toStartOfHour(started_at) AS h, count() AS total, {_OUTCOMES} "
        f"FROM {CDRS} FINAL WHERE {_WINDOW} GROUP BY h ORDER BY h WITH FILL "
        "FROM toStartOfHour(toDateTime({start:DateTime64(3, 'UTC')}, 'UTC')) "
        "TO toDateTime({end:DateTime64(3, 'UTC')}, 'UTC') STEP toIntervalHour(1)"
        ") ORDER BY hour",
        {"tenant": tenant, "start": start, "end": end, **_outcome_params()})
