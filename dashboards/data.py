"""The dashboards' only door to the warehouse: one cached client, one cached loader per query.

Every figure on a page comes from a named query in :mod:`warehouse.queries`; this module
binds them to the client of this process's settings and to **the logged-in user's
tenant**, and caches the results for a few seconds, so that many open browsers (and the
pages' own auto-refresh) cost the warehouse one query per ``CACHE_TTL_S`` instead of one
per viewer.

Tenant scoping: no public function here takes a tenant. Each reads it from the session's
user (:func:`tenant`): a tenant-user's own tenant, always; an administrator's choice in
the sidebar (``ADMIN_TENANT_KEY``), honoured only for administrators. The cached
loaders are private and take the tenant as their first argument, so the cache keys
results by tenant and one tenant's cached rows are never served to another.

Errors are :class:`~warehouse.client.WarehouseError` subclasses (re-exported here), so
pages can show them without importing the warehouse themselves. Errors are never cached:
the next rerun tries again.
"""

from __future__ import annotations

import inspect
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards.auth import User
from tawag.settings import Settings, load
from warehouse.client import QueryError, UnavailableError, WarehouseClient, WarehouseError, connect
from warehouse.queries import (
    agent_stats,
    callbacks,
    calls,
    catalog,
    cdr,
    kpi,
    quality,
    sql_box,
    trends,
    wallboard,
)

__all__ = ["CACHE_TTL_S", "USER_KEY", "ADMIN_TENANT_KEY", "UnavailableError", "WarehouseError",
           "QueryError", "SqlRefused", "NotLoggedIn", "settings", "client",
           "warehouse_address", "current_user", "tenant", "utc_today", "day_bounds",
           "period_bounds", "definition", "calls_summary", "calls_by_hour", "latest_cdrs",
           "kpi_summary", "period_comparison", "kpis_by_interval", "live_summary", "live_calls",
           "agents_by_state",
           "find_calls", "count_calls", "export_calls_csv", "call_record", "call_events",
           "call_legs", "filter_values", "recording_file", "volume_by_weekday_hour",
           "kpis_by_dimension", "quality_summary", "quality_distribution", "worst_calls",
           "agent_table", "state_timeline", "open_callbacks", "closed_callbacks",
           "callback_summary", "schema_columns", "table_descriptions", "tenants", "run_sql",
           "QUALITY_METRICS", "CALL_FILTERS", "INTERVALS", "SQL_ROW_LIMIT", "SQL_TIMEOUT_S"]

CACHE_TTL_S = 2
"""Seconds a query result is reused: shorter than the pages' refresh interval, so every
refresh shows new data, long enough that simultaneous viewers share one query."""

_MAX_ENTRIES = 64
"""Cached results kept per query (one per distinct tenant/day/filter asked for)."""

USER_KEY = "auth_user"
"""Session-state key of the logged-in :class:`~dashboards.auth.User` (set by the log-in form)."""
ADMIN_TENANT_KEY = "admin_tenant"
"""Session-state key of an administrator's tenant choice (a sidebar widget)."""

SqlRefused = sql_box.SqlRefused
QUALITY_METRICS = tuple(quality.METRICS)
CALL_FILTERS = calls.CALL_FILTERS
INTERVALS = tuple(kpi.INTERVALS)
SQL_ROW_LIMIT = sql_box.DEFAULT_ROW_LIMIT
SQL_TIMEOUT_S = sql_box.DEFAULT_TIMEOUT_S
EXPORT_LIMIT = 1_000_000
"""Most rows a CSV export holds (the warehouse reader's max_result_rows)."""


class NotLoggedIn(RuntimeError):
    """A data function was called without a logged-in user (a page outside the router)."""


@st.cache_resource
def settings() -> Settings:
    """This process's settings, read from the environment once (tawag/settings.py)."""
    return load()


@st.cache_resource
def client() -> WarehouseClient:
    """The warehouse client shared by every session (never mutated, only queried)."""
    return connect(settings())


def warehouse_address() -> str:
    """Where the warehouse is expected, for error messages."""
    s = settings()
    if s.warehouse_mode == "server":
        return f"clickhouse://{s.clickhouse_host}:{s.clickhouse_port}"
    return s.warehouse_url


# --- who is asking -------------------------------------------------------------------------


def current_user() -> User | None:
    """The logged-in user of this session, if any."""
    user = st.session_state.get(USER_KEY)
    return user if isinstance(user, User) else None


def tenant() -> str:
    """The tenant every query of this session is bound to (see the module docstring)."""
    user = current_user()
    if user is None:
        raise NotLoggedIn("log in first")
    if user.is_admin:
        return st.session_state.get(ADMIN_TENANT_KEY) or user.tenant or settings().tenant
    return user.tenant


# --- time windows --------------------------------------------------------------------------


def utc_today() -> date:
    """Today's date in UTC: the dashboards' day starts at 00:00 UTC, not local midnight."""
    return datetime.now(UTC).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The half-open UTC window ``[day 00:00, next day 00:00)`` the queries expect."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def period_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """``[first 00:00, last + 1 day 00:00)`` UTC: the days ``first..last`` inclusive."""
    return day_bounds(first)[0], day_bounds(last)[1]


def definition(name: str) -> str:
    """The definition of a KPI (``kpi.<name>``) or a query, from the library's docstring:
    the hover help of every figure, so the page says what the library computes."""
    module, _, function = name.rpartition(".")
    source = {"": kpi, "kpi": kpi, "calls": calls, "quality": quality, "trends": trends,
              "wallboard": wallboard, "agent_stats": agent_stats, "callbacks": callbacks,
              "cdr": cdr}[module]
    doc = inspect.getdoc(getattr(source, function)) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


# --- cached loaders (private: the tenant comes from tenant(), never from a caller) ----------

def _cached(func: Any) -> Any:
    return st.cache_data(ttl=CACHE_TTL_S, max_entries=_MAX_ENTRIES, show_spinner=False)(func)


@_cached
def _calls_summary(tenant_: str, day: date) -> dict[str, Any]:
    return cdr.calls_summary(client(), tenant_, *day_bounds(day))


@_cached
def _calls_by_hour(tenant_: str, day: date) -> pd.DataFrame:
    return cdr.calls_by_hour(client(), tenant_, *day_bounds(day))


@_cached
def _latest_cdrs(tenant_: str, limit: int) -> pd.DataFrame:
    return cdr.latest_cdrs(client(), tenant_, limit)


@_cached
def _kpi_summary(tenant_: str, start: datetime, end: datetime,
                 filters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return kpi.kpi_summary(client(), tenant_, start, end, **dict(filters))


@_cached
def _period_comparison(tenant_: str, start: datetime, end: datetime) -> dict[str, Any]:
    return kpi.period_comparison(client(), tenant_, start, end)


@_cached
def _kpis_by_interval(tenant_: str, start: datetime, end: datetime,
                      interval: str) -> pd.DataFrame:
    return kpi.kpis_by_interval(client(), tenant_, start, end, interval)


@_cached
def _live(tenant_: str, since: datetime, limit: int) -> tuple[dict[str, int], pd.DataFrame]:
    return (wallboard.live_summary(client(), tenant_, since),
            wallboard.live_calls(client(), tenant_, since, limit))


@_cached
def _agents_by_state(tenant_: str) -> dict[str, int]:
    return wallboard.agents_by_state(client(), tenant_)


@_cached
def _find_calls(tenant_: str, start: datetime, end: datetime,
                filters: tuple[tuple[str, str], ...], limit: int) -> pd.DataFrame:
    return calls.find_calls(client(), tenant_, start, end, limit=limit, **dict(filters))


@_cached
def _count_calls(tenant_: str, start: datetime, end: datetime,
                 filters: tuple[tuple[str, str], ...]) -> int:
    return calls.count_calls(client(), tenant_, start, end, **dict(filters))


@_cached
def _call(tenant_: str, call_id: str) -> tuple[dict[str, Any] | None, pd.DataFrame,
                                                pd.DataFrame]:  # record, legs, events
    return (calls.find_call(client(), tenant_, call_id),
            calls.call_legs(client(), tenant_, call_id),
            calls.call_events(client(), tenant_, call_id))


@_cached
def _filter_values(tenant_: str, start: datetime, end: datetime) -> dict[str, list[str]]:
    return calls.filter_values(client(), tenant_, start, end)


@_cached
def _volume(tenant_: str, start: datetime, end: datetime) -> pd.DataFrame:
    return trends.volume_by_weekday_hour(client(), tenant_, start, end)


@_cached
def _by_dimension(tenant_: str, start: datetime, end: datetime, dimension: str) -> pd.DataFrame:
    return trends.kpis_by_dimension(client(), tenant_, start, end, dimension)


@_cached
def _quality_summary(tenant_: str, start: datetime, end: datetime) -> dict[str, Any]:
    return quality.quality_summary(client(), tenant_, start, end)


@_cached
def _quality_distribution(tenant_: str, start: datetime, end: datetime,
                          metric: str) -> pd.DataFrame:
    return quality.distribution(client(), tenant_, start, end, metric)


@_cached
def _worst_calls(tenant_: str, start: datetime, end: datetime, limit: int) -> pd.DataFrame:
    return quality.worst_calls(client(), tenant_, start, end, limit)


@_cached
def _agent_table(tenant_: str, start: datetime, end: datetime, kind: str) -> pd.DataFrame:
    return agent_stats.agent_table(client(), tenant_, start, end, kind)


@_cached
def _state_timeline(tenant_: str, start: datetime, end: datetime,
                    agent: str | None) -> pd.DataFrame:
    return agent_stats.state_timeline(client(), tenant_, start, end, agent)


@_cached
def _open_callbacks(tenant_: str, as_of: datetime) -> pd.DataFrame:
    return callbacks.open_callbacks(client(), tenant_, as_of)


@_cached
def _closed_callbacks(tenant_: str, start: datetime, end: datetime) -> pd.DataFrame:
    return callbacks.closed_callbacks(client(), tenant_, start, end)


@_cached
def _callback_summary(tenant_: str, start: datetime, end: datetime) -> dict[str, Any]:
    return callbacks.callback_summary(client(), tenant_, start, end)


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _columns() -> pd.DataFrame:
    return catalog.list_columns(client())


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _tenants() -> list[str]:
    return catalog.list_tenants(client())


def _filters(values: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    """Set filters as a hashable, ordered cache key."""
    return tuple(sorted((k, v) for k, v in values.items() if v not in (None, "")))


# --- public: what the pages call -----------------------------------------------------------


def calls_summary(day: date) -> dict[str, Any]:
    """Totals of the calls started on ``day`` (UTC): total, answered, missed, answer_rate."""
    return _calls_summary(tenant(), day)


def calls_by_hour(day: date) -> pd.DataFrame:
    """Calls per UTC hour of ``day``, every hour present (zeros filled by the warehouse)."""
    return _calls_by_hour(tenant(), day)


def latest_cdrs(limit: int = 50) -> pd.DataFrame:
    """The ``limit`` most recently started calls of the tenant, newest first."""
    return _latest_cdrs(tenant(), limit)


def kpi_summary(start: datetime, end: datetime, **filters: str | None) -> dict[str, Any]:
    """:func:`warehouse.queries.kpi.kpi_summary` over ``[start, end)`` (direction/did/agent)."""
    return _kpi_summary(tenant(), start, end, _filters(filters))


def period_comparison(start: datetime, end: datetime) -> dict[str, Any]:
    """:func:`warehouse.queries.kpi.period_comparison`: ``[start, end)`` and the period
    of the same length before it."""
    return _period_comparison(tenant(), start, end)


def kpis_by_interval(start: datetime, end: datetime, interval: str) -> pd.DataFrame:
    """:func:`warehouse.queries.kpi.kpis_by_interval` over ``[start, end)``."""
    return _kpis_by_interval(tenant(), start, end, interval)


def live_summary(since: datetime) -> dict[str, int]:
    """Ringing and talking calls now (started since ``since``)."""
    return _live(tenant(), since, 100)[0]


def live_calls(since: datetime, limit: int = 100) -> pd.DataFrame:
    """The live calls, oldest first."""
    return _live(tenant(), since, limit)[1]


def agents_by_state() -> dict[str, int]:
    """Agents per current state."""
    return _agents_by_state(tenant())


def find_calls(start: datetime, end: datetime, limit: int = 500,
               **filters: str | None) -> pd.DataFrame:
    """Calls matching the explorer's filters, newest first."""
    return _find_calls(tenant(), start, end, _filters(filters), limit)


def count_calls(start: datetime, end: datetime, **filters: str | None) -> int:
    """How many calls the filters select."""
    return _count_calls(tenant(), start, end, _filters(filters))


def export_calls_csv(start: datetime, end: datetime, **filters: str | None) -> bytes:
    """Every call the filters select (up to ``EXPORT_LIMIT``) as CSV (UTF-8, header)."""
    frame = calls.find_calls(client(), tenant(), start, end, limit=EXPORT_LIMIT,
                             **dict(_filters(filters)))
    return frame.to_csv(index=False).encode()


def call_record(call_id: str) -> dict[str, Any] | None:
    """The call's CDR (latest revision), or None if it is not the tenant's."""
    return _call(tenant(), call_id)[0]


def call_legs(call_id: str) -> pd.DataFrame:
    """The call's legs from its events."""
    return _call(tenant(), call_id)[1]


def call_events(call_id: str) -> pd.DataFrame:
    """The call's events, in time order."""
    return _call(tenant(), call_id)[2]


def filter_values(start: datetime, end: datetime) -> dict[str, list[str]]:
    """Agents, groups and DIDs seen in the window (filter choices)."""
    return _filter_values(tenant(), start, end)


def recording_file(recording: str | None) -> Path | None:
    """The recording's file if it exists inside the recordings folder (nothing outside it)."""
    if not recording:
        return None
    root = settings().recordings_dir.resolve()
    path = (root / recording).resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


def volume_by_weekday_hour(start: datetime, end: datetime) -> pd.DataFrame:
    """Calls per (weekday, hour), all 168 cells."""
    return _volume(tenant(), start, end)


def kpis_by_dimension(start: datetime, end: datetime, dimension: str) -> pd.DataFrame:
    """KPIs per DID or group."""
    return _by_dimension(tenant(), start, end, dimension)


def quality_summary(start: datetime, end: datetime) -> dict[str, Any]:
    """MOS / loss / jitter headline figures."""
    return _quality_summary(tenant(), start, end)


def quality_distribution(start: datetime, end: datetime, metric: str) -> pd.DataFrame:
    """Calls per bin of a media metric."""
    return _quality_distribution(tenant(), start, end, metric)


def worst_calls(start: datetime, end: datetime, limit: int = 20) -> pd.DataFrame:
    """The calls with the lowest MOS."""
    return _worst_calls(tenant(), start, end, limit)


def agent_table(start: datetime, end: datetime, kind: str = "15m") -> pd.DataFrame:
    """Per-agent figures over the window."""
    return _agent_table(tenant(), start, end, kind)


def state_timeline(start: datetime, end: datetime, agent: str | None = None) -> pd.DataFrame:
    """Agents' state segments overlapping the window."""
    return _state_timeline(tenant(), start, end, agent)


def open_callbacks(as_of: datetime) -> pd.DataFrame:
    """Open callback items with their age at ``as_of``."""
    return _open_callbacks(tenant(), as_of)


def closed_callbacks(start: datetime, end: datetime) -> pd.DataFrame:
    """Items closed in the window: who called back and how long it took."""
    return _closed_callbacks(tenant(), start, end)


def callback_summary(start: datetime, end: datetime) -> dict[str, Any]:
    """Items opened in the window: counts, success rate, time to callback."""
    return _callback_summary(tenant(), start, end)


def schema_columns() -> pd.DataFrame:
    """The analyst-visible tables' columns with types and descriptions."""
    return _columns()


def table_descriptions() -> dict[str, str]:
    """Analyst-visible table -> what one row is."""
    return dict(catalog.TABLE_DESCRIPTIONS)


def tenants() -> list[str]:
    """Every tenant (administrators only; a tenant-user gets their own tenant only)."""
    user = current_user()
    if user is None or not user.is_admin:
        return [tenant()]
    return _tenants()


def run_sql(sql: str, *, all_tenants: bool = False) -> sql_box.SqlResult:
    """Run an analyst's statement on this session's tenant's rows (not cached).

    ``all_tenants`` lifts the row filter for administrators only; for anyone else it is
    ignored. Raises :data:`SqlRefused` (with the reason) or a WarehouseError.
    """
    user = current_user()
    if user is None:
        raise NotLoggedIn("log in first")
    scope = None if (all_tenants and user.is_admin) else tenant()
    return sql_box.run_statement(client(), sql, tenant=scope, limit=SQL_ROW_LIMIT,
                                 timeout_s=SQL_TIMEOUT_S)
