"""The dashboards' only door to the warehouse: one cached client, one cached loader per query.

Every figure on a page comes from a named query in :mod:`warehouse.queries`; this module
binds them to the tenant and the client of this process's settings and caches the
results for a few seconds, so that many open browsers (and the pages' own auto-refresh)
cost the warehouse one query per ``CACHE_TTL_S`` instead of one per viewer.

Errors are :class:`~warehouse.client.WarehouseError` subclasses (re-exported here), so
pages can show them without importing the warehouse themselves. Errors are never cached:
the next rerun tries again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from tawag.settings import Settings, load
from warehouse.client import UnavailableError, WarehouseClient, WarehouseError, connect
from warehouse.queries import cdr

__all__ = ["CACHE_TTL_S", "UnavailableError", "WarehouseError", "settings", "client",
           "warehouse_address", "utc_today", "day_bounds", "calls_summary",
           "calls_by_hour", "latest_cdrs"]

CACHE_TTL_S = 2
"""Seconds a query result is reused: shorter than the pages' refresh interval, so every
refresh shows new data, long enough that simultaneous viewers share one query."""

_MAX_ENTRIES = 64
"""Cached results kept per query (one per distinct day/limit asked for)."""


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


def utc_today() -> date:
    """Today's date in UTC: the dashboards' day starts at 00:00 UTC, not local midnight."""
    return datetime.now(UTC).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The half-open UTC window ``[day 00:00, next day 00:00)`` the queries expect."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=_MAX_ENTRIES, show_spinner=False)
def calls_summary(day: date) -> dict[str, Any]:
    """Totals of the calls started on ``day`` (UTC): total, answered, missed, answer_rate."""
    return cdr.calls_summary(client(), settings().tenant, *day_bounds(day))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=_MAX_ENTRIES, show_spinner=False)
def calls_by_hour(day: date) -> pd.DataFrame:
    """Calls per UTC hour of ``day``, every hour present (zeros filled by the warehouse)."""
    return cdr.calls_by_hour(client(), settings().tenant, *day_bounds(day))


@st.cache_data(ttl=CACHE_TTL_S, max_entries=_MAX_ENTRIES, show_spinner=False)
def latest_cdrs(limit: int = 50) -> pd.DataFrame:
    """The ``limit`` most recently started calls of the tenant, newest first."""
    return cdr.latest_cdrs(client(), settings().tenant, limit)
