"""The dashboards' only door to the warehouse: one cached call through the named queries.

Every figure on a page comes from a named query of :mod:`warehouse.queries`, asked for by
its name, ``"<subject>.<function>"`` (:data:`QUERIES` lists them all)::

    summary = data.fetch("cdr.calls_summary", *data.day_bounds(day))
    stats = data.fetch("agent_stats.agent_table", start, end, "15m")

:func:`fetch` runs the query on the client of this process's settings, for **the
logged-in user's tenant**, and caches the result for ``CACHE_TTL_S``, keyed on the query
name, the tenant and the arguments: many open browsers (and the pages' own
auto-refresh) cost the warehouse one query per ``CACHE_TTL_S`` instead of one per
viewer. A new page needs nothing new here.

Tenant scoping: no public function here takes a tenant. Each reads it from the session's
user (:func:`tenant`): a tenant-user's own tenant, always; an administrator's choice in
the sidebar (``ADMIN_TENANT_KEY``), honoured only for administrators. :func:`fetch`
refuses a ``tenant=`` argument (:class:`TenantRefused`) and any query that is not
tenant-scoped, and the tenant is part of the cache key, so one tenant's cached rows are
never served to another.

Times are the tenant's: its IANA zone comes from provisioning through the warehouse's
``tenants`` table (:func:`time_zone`); pages take "today" and day windows in it
(:func:`today`, :func:`day_bounds`), pass it to the queries that bucket hours and days
(``tz=``), show times in it and say which zone they show.

Errors are :class:`~warehouse.client.WarehouseError` subclasses (re-exported here, shown
by :mod:`dashboards.errors`). Errors are never cached: the next rerun tries again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pandas as pd
import streamlit as st

from api.delivery_log import COLUMNS as DELIVERY_COLUMNS
from api.delivery_log import delivery_log
from core import timezones
from core.settings import Settings, load
from dashboards.auth import User
from warehouse.client import QueryError, UnavailableError, WarehouseClient, WarehouseError, connect
from warehouse.queries import (
    agent_stats,
    callbacks,
    calls,
    catalog,
    cdr,
    glossary,
    kpi,
    quality,
    routing,
    sql_box,
    trends,
    wallboard,
)
from warehouse.queries import (
    tenants as tenant_queries,
)

__all__ = ["CACHE_TTL_S", "USER_KEY", "ADMIN_TENANT_KEY", "QUERIES", "EXPORT_LIMIT",
           "SQL_ROW_LIMIT", "SQL_TIMEOUT_S", "UnavailableError", "WarehouseError",
           "QueryError", "SqlRefused", "NotLoggedIn", "TenantRefused", "UnknownQuery",
           "settings", "client", "warehouse_address", "current_user", "tenant", "fetch",
           "time_zone", "today", "utc_today", "day_bounds", "period_bounds", "definition",
           "kpi_glossary", "to_zone", "export_calls_csv",
           "recording_file", "schema_columns", "table_descriptions", "tenants", "run_sql",
           "webhook_deliveries"]

CACHE_TTL_S = 2
"""Seconds a query result is reused: shorter than the pages' refresh interval, so every
refresh shows new data, long enough that simultaneous viewers share one query."""

_MAX_ENTRIES = 1024
"""Cached results kept (one per distinct query/tenant/arguments asked for; it was 64 per
query when each query had its own loader, for the ~20 queries the pages use)."""

USER_KEY = "auth_user"
"""Session-state key of the logged-in :class:`~dashboards.auth.User` (set by the log-in form)."""
ADMIN_TENANT_KEY = "admin_tenant"
"""Session-state key of an administrator's tenant choice (a sidebar widget)."""

SqlRefused = sql_box.SqlRefused
SQL_ROW_LIMIT = sql_box.DEFAULT_ROW_LIMIT
SQL_TIMEOUT_S = sql_box.DEFAULT_TIMEOUT_S
EXPORT_LIMIT = 1_000_000
"""Most rows a CSV export holds (the warehouse reader's max_result_rows)."""

_SUBJECTS: Mapping[str, ModuleType] = {
    "agent_stats": agent_stats, "callbacks": callbacks, "calls": calls, "cdr": cdr,
    "kpi": kpi, "quality": quality, "routing": routing, "tenants": tenant_queries,
    "trends": trends, "wallboard": wallboard}


def _tenant_scoped(query: object) -> bool:
    """A named query the pages may fetch: a function of ``(client, tenant, ...)``."""
    return inspect.isfunction(query) and \
        list(inspect.signature(query).parameters)[:2] == ["client", "tenant"]


QUERIES: Mapping[str, Callable[..., Any]] = MappingProxyType({
    f"{subject}.{name}": getattr(module, name)
    for subject, module in _SUBJECTS.items() for name in module.__all__
    if _tenant_scoped(getattr(module, name))})
"""Every query :func:`fetch` runs: ``"<subject>.<function>"`` -> the function of
:mod:`warehouse.queries.<subject>`, called as ``function(client, tenant, *args, **params)``."""


class NotLoggedIn(RuntimeError):
    """A data function was called without a logged-in user (a page outside the router)."""


class TenantRefused(ValueError):
    """A page tried to pick the tenant of a query: it is always the session's (tenant())."""


class UnknownQuery(ValueError):
    """Not a tenant-scoped named query of :data:`QUERIES`."""


@st.cache_resource
def settings() -> Settings:
    """This process's settings, read from the environment once (core/settings.py)."""
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


# --- the named queries ---------------------------------------------------------------------


def fetch(name: str, /, *args: Hashable, **params: Hashable) -> Any:
    """The result of the named query ``name`` (:data:`QUERIES`) over this session's tenant,
    with ``args`` and ``params`` after the tenant; cached for ``CACHE_TTL_S``.

    ``fetch("kpi.kpi_summary", start, end, direction="inbound")`` is
    ``kpi.kpi_summary(client, <the user's tenant>, start, end, direction="inbound")``.
    Raises :class:`TenantRefused` for a ``tenant=`` argument, :class:`UnknownQuery` for a
    name not in :data:`QUERIES`, or a WarehouseError.
    """
    if "tenant" in params:
        raise TenantRefused(f"{name}: the tenant is the logged-in user's, not the page's")
    if name not in QUERIES:
        raise UnknownQuery(f"{name!r} is not a tenant-scoped named query (data.QUERIES)")
    return _fetch(name, tenant(), args, tuple(sorted(params.items())))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=_MAX_ENTRIES, show_spinner=False)
def _fetch(name: str, tenant_: str, args: tuple[Hashable, ...],
           params: tuple[tuple[str, Hashable], ...]) -> Any:
    # the cache key is every argument: the query's name, the tenant and its arguments
    return QUERIES[name](client(), tenant_, *args, **dict(params))


def definition(name: str) -> str:
    """The definition of a KPI (``kpi.<name>``) or a named query: the KPI glossary's entry
    (definition and the calls it counts) when it has one, else the library's docstring;
    the hover help of every figure, so the page says what the library computes."""
    subject, _, function = name.rpartition(".")
    if subject in ("", "kpi"):
        try:
            entry = glossary.entry(function)
        except KeyError:
            pass
        else:
            return f"{entry.definition} Counts: {entry.counts}. Source: {entry.source}."
    doc = inspect.getdoc(getattr(_SUBJECTS[subject or "kpi"], function)) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def kpi_glossary() -> pd.DataFrame:
    """The KPI glossary (:mod:`warehouse.queries.glossary`) as a table for the page."""
    return pd.DataFrame([{"KPI": k.title, "definition": k.definition, "calls counted": k.counts,
                          "source": k.source, "query": k.query} for k in glossary.GLOSSARY])


# --- time windows --------------------------------------------------------------------------


def time_zone() -> str:
    """This session's tenant's IANA time zone (provisioning, via ``tawag.tenants``)."""
    return fetch("tenants.time_zone")


def today(tz: str) -> date:
    """Today's date in ``tz`` (the tenant's zone: its day starts at local midnight)."""
    return timezones.local_today(timezones.zone(tz))


def utc_today() -> date:
    """Today's date in UTC."""
    return datetime.now(UTC).date()


def day_bounds(day: date, tz: str = "UTC") -> tuple[datetime, datetime]:
    """The half-open window ``[day 00:00, next day 00:00)`` in ``tz``, as UTC instants."""
    return timezones.local_day_bounds(day, day, timezones.zone(tz))


def period_bounds(first: date, last: date, tz: str = "UTC") -> tuple[datetime, datetime]:
    """``[first 00:00, last + 1 day 00:00)`` in ``tz``: the days ``first..last`` inclusive."""
    return timezones.local_day_bounds(first, last, timezones.zone(tz))


def to_zone(frame: pd.DataFrame, columns: tuple[str, ...], tz: str) -> pd.DataFrame:
    """A copy of ``frame`` with the timestamp ``columns`` shown in ``tz`` (naive = UTC)."""
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = pd.to_datetime(out[column], utc=True).dt.tz_convert(tz)
    return out


# --- what is not a cached named query ------------------------------------------------------


def export_calls_csv(start: datetime, end: datetime, **filters: str | None) -> bytes:
    """Every call the filters select (up to ``EXPORT_LIMIT``) as CSV (UTF-8, header); not
    cached: it is made once, when the button is clicked."""
    frame = calls.find_calls(client(), tenant(), start, end, limit=EXPORT_LIMIT, **filters)
    return frame.to_csv(index=False).encode()


def recording_file(recording: str | None) -> Path | None:
    """The recording's file if it exists inside the recordings folder (nothing outside it)."""
    if not recording:
        return None
    root = settings().recordings_dir.resolve()
    path = (root / recording).resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def schema_columns() -> pd.DataFrame:
    """The analyst-visible tables' columns with types and descriptions (every tenant's
    schema is the same: not tenant-scoped)."""
    return catalog.list_columns(client())


def table_descriptions() -> dict[str, str]:
    """Analyst-visible table -> what one row is."""
    return dict(catalog.TABLE_DESCRIPTIONS)


@st.cache_data(ttl=60, max_entries=4, show_spinner=False)
def _all_tenants() -> list[str]:
    return catalog.list_tenants(client())


def tenants() -> list[str]:
    """Every tenant (administrators only; a tenant-user gets their own tenant only)."""
    user = current_user()
    if user is None or not user.is_admin:
        return [tenant()]
    return _all_tenants()


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


# --- the webhook delivery log (not the warehouse: the API process's journal) ---------------


def webhook_deliveries() -> pd.DataFrame:
    """This session's tenant's webhook deliveries, per subscription, newest first
    (:func:`api.delivery_log.delivery_log`); cached for ``CACHE_TTL_S``."""
    return _webhook_deliveries(tenant())


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def _webhook_deliveries(tenant_: str) -> pd.DataFrame:
    return pd.DataFrame(delivery_log(settings(), tenant_), columns=list(DELIVERY_COLUMNS))
