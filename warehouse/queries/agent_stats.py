"""Named queries on agents: the per-agent table of a period and the state timeline of a day.

``tawag.agent_stats`` holds every revision of an interval's row (ReplacingMergeTree on
``version``) and ``tawag.agent_states`` every revision of a state segment, some of them
retractions (``deleted``); every query reads them with FINAL, so one row per key, its
latest revision, counts whether or not merges have run, and drops deleted rows after it.

Windows are half-open ``[start, end)`` of instants; an interval belongs to the window when
its ``interval_start`` does, so pass boundaries aligned on the interval kind. Intervals
are the tenant's local ones (streams cuts them in its IANA zone), so a page passes the
bounds of the tenant's local day (``core.timezones.local_day_bounds``).

Definitions (named, see reference/peer-survey.md §3 and ``streams.folds.agent_stats``):

* ``aht_talk_ms`` - **AHT without after-call work**: sum(handled_talk_ms) / sum(handled) -
  whole talk (answer to end, hold included) of the calls whose talk ended in the window,
  per call; None if none was handled;
* ``occupancy`` - **Amazon Connect variant**: (talk + wrap-up) / (talk + wrap-up +
  available), a ratio of sums (not a mean of interval ratios); None if all are 0;
* ``answer_ratio`` - answered / offered for this agent (calls that rang the agent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.schema import AGENT_STATES, AGENT_STATS

__all__ = ["INTERVAL_KINDS", "STAT_COLUMNS", "agent_table", "agent_intervals",
           "state_timeline"]

INTERVAL_KINDS = ("15m", "hour", "day")

_WINDOW = ("tenant = {tenant:String} AND interval_kind = {kind:String} "
           "AND interval_start >= {start:DateTime64(3, 'UTC')} "
           "AND interval_start < {end:DateTime64(3, 'UTC')}")


_SUMMED = ("logged_in_ms", "available_ms", "ringing_ms", "talk_ms", "wrap_up_ms", "offered",
           "answered", "missed", "handled", "handled_talk_ms")
_KPIS = ("if(handled = 0, NULL, handled_talk_ms / handled) AS aht_talk_ms, "
         "if(talk_ms + wrap_up_ms + available_ms = 0, NULL, "
         "   (talk_ms + wrap_up_ms) / (talk_ms + wrap_up_ms + available_ms)) AS occupancy, "
         "if(offered = 0, NULL, answered / offered) AS answer_ratio")
"""The definitions above, over summed columns: one text for every grouping."""
STAT_COLUMNS = (*_SUMMED, "aht_talk_ms", "occupancy", "answer_ratio", "counted_until")
"""The figures of every row of :func:`agent_table` and :func:`agent_intervals`."""


def _check_kind(interval_kind: str) -> None:
    if interval_kind not in INTERVAL_KINDS:
        raise ValueError(f"interval_kind: one of {INTERVAL_KINDS}, got {interval_kind!r}")


def _stats_sql(keys: str, where: str, order: str) -> str:
    """Sums of the rows (FINAL) grouped by ``keys``, with the KPIs over the sums."""
    sums = ", ".join(f"sum({c}) AS {c}" for c in _SUMMED)
    return (f"SELECT {keys}, {', '.join(_SUMMED)}, {_KPIS}, counted_until "
            f"FROM (SELECT {keys}, {sums}, max(complete_until) AS counted_until "
            f"FROM {AGENT_STATS} FINAL WHERE {where} GROUP BY {keys}) ORDER BY {order}")


def agent_table(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                interval_kind: str = "15m") -> pd.DataFrame:
    """One row per agent with activity in ``[start, end)``, summed over ``interval_kind`` rows.

    Columns: agent, logged_in_ms, available_ms, ringing_ms, talk_ms, wrap_up_ms, offered,
    answered, missed, handled, handled_talk_ms, aht_talk_ms, occupancy, answer_ratio,
    counted_until. An agent's figures are counted up to its newest event (a registration
    refresh, a call): ``counted_until`` is that time (the latest ``complete_until``), so a
    reader knows the time in the current state after it is not in the figures yet.
    """
    _check_kind(interval_kind)
    return client.query_df(
        _stats_sql("agent", _WINDOW, "agent"),
        {"tenant": tenant, "kind": interval_kind, "start": start, "end": end})


def agent_intervals(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                    interval_kind: str = "15m", *,
                    agent: str | None = None) -> list[dict[str, Any]]:
    """One row per agent and ``interval_kind`` interval starting in ``[start, end)`` (the
    public API's statistics per interval), by agent then interval; ``agent`` narrows it.

    Keys ``agent``, ``interval_start`` (UTC; the interval is the tenant's local one, cut
    by streams), then :data:`STAT_COLUMNS` with the definitions of :func:`agent_table`
    (a row is one interval, so its sums are that interval's figures).
    """
    _check_kind(interval_kind)
    where = _WINDOW + (" AND ({agent:Nullable(String)} IS NULL "
                       "OR agent = {agent:Nullable(String)})")
    return client.query(
        _stats_sql("agent, interval_start", where, "agent, interval_start"),
        {"tenant": tenant, "kind": interval_kind, "start": start, "end": end,
         "agent": agent})


def state_timeline(client: WarehouseClient, tenant: str, start: datetime, end: datetime,
                   agent: str | None = None) -> pd.DataFrame:
    """State segments overlapping ``[start, end)`` (e.g. one day), by agent then time.

    Columns: agent, state, since, until (NULL while current), and ``ms_in_window`` - the
    part inside the window, an open segment counted up to ``end``. FINAL, deleted skipped.
    """
    return client.query_df(
        "SELECT agent, state, since, until, "
        "toInt64(dateDiff('millisecond', greatest(since, {start:DateTime64(3, 'UTC')}), "
        "least(ifNull(until, {end:DateTime64(3, 'UTC')}), {end:DateTime64(3, 'UTC')}))) "
        "AS ms_in_window "
        f"FROM {AGENT_STATES} FINAL WHERE tenant = {{tenant:String}} AND NOT deleted "
        "AND since < {end:DateTime64(3, 'UTC')} "
        "AND (until IS NULL OR until > {start:DateTime64(3, 'UTC')}) "
        "AND ({agent:Nullable(String)} IS NULL OR agent = {agent:Nullable(String)}) "
        "ORDER BY agent, since",
        {"tenant": tenant, "start": start, "end": end, "agent": agent})
