"""Today: the tenant's calls since local midnight (its time zone), refreshed in place
every few seconds.

Only layout lives here: figures come from :mod:`dashboards.data` (named warehouse
queries, cached) and are shaped for display by :mod:`dashboards.formatting`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors
from dashboards.formatting import cdr_table, format_rate, hourly_outcomes

# Streamlit runs this file as a script, and its "magic" would print a bare string
# literal under a constant as markdown on the page: constants get comments, not docstrings.

REFRESH_S = 5  # seconds between refreshes of the live part (a fragment rerun, no reload)
LATEST_LIMIT = 50  # calls listed in the latest-calls table

ANSWER_RATE_HELP = data.definition("kpi.answer_rate")
MISSED_HELP = "Closed calls that ended busy, no answer, cancelled by the caller, or failed."
# answered, missed, in progress: the column order of formatting.hourly_outcomes
OUTCOME_COLORS = ["#2e7d32", "#c62828", "#9e9e9e"]


def render() -> None:
    """The page: a static header, then the self-refreshing figures."""
    st.title("Today")
    with warehouse_errors():
        tz = data.time_zone()
    st.caption(f"Tenant `{data.tenant()}` · calls started since 00:00 {tz} · "
               f"times in {tz} · refreshes every {REFRESH_S} s")
    live_figures()


@st.fragment(run_every=REFRESH_S)
def live_figures() -> None:
    """Everything that changes with traffic; only this part reruns on each refresh."""
    with warehouse_errors():
        tz = data.time_zone()
        day = data.today(tz)
        summary, by_hour, latest = _load(day, tz)
    show_kpis(summary, tz)
    if summary["total"]:
        show_calls_by_hour(day, by_hour, tz)
    else:
        st.info(f"No calls yet today ({day.isoformat()}, since 00:00 {tz}).")
    show_latest(data.to_zone(latest, ("started_at",), tz), tz)


def _load(day: date, tz: str) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """All of the page's query results, or the first warehouse error."""
    start, end = data.day_bounds(day, tz)
    return (data.fetch("cdr.calls_summary", start, end),
            data.fetch("cdr.calls_by_hour", start, end, tz=tz),
            data.fetch("cdr.latest_cdrs", LATEST_LIMIT))


def show_kpis(summary: dict[str, Any], tz: str) -> None:
    """Four tiles: calls today, answered, missed, answer rate."""
    total, answered, missed, rate = st.columns(4)
    total.metric("Calls today", summary["total"], border=True,
                 help=f"Calls started since 00:00 {tz}, {summary['in_progress']} in progress.")
    answered.metric("Answered", summary["answered"], border=True,
                    help="Closed calls that were answered.")
    missed.metric("Missed", summary["missed"], border=True, help=MISSED_HELP)
    rate.metric("Answer rate", format_rate(summary["answer_rate"]), border=True,
                help=ANSWER_RATE_HELP)


def show_calls_by_hour(day: date, by_hour: pd.DataFrame, tz: str) -> None:
    """Stacked bars of the day's calls per local hour by outcome."""
    st.subheader(f"Calls by hour, {day.isoformat()} ({tz})")
    st.bar_chart(hourly_outcomes(by_hour, tz), stack=True, color=OUTCOME_COLORS,
                 x_label=f"hour ({tz})", y_label="calls")


def show_latest(latest: pd.DataFrame, tz: str) -> None:
    """The most recent calls, newest first, whatever day they started."""
    st.subheader("Latest calls")
    if latest.empty:
        st.info("No calls recorded yet.")
        return
    seconds = st.column_config.NumberColumn(format="%.1f")
    st.dataframe(cdr_table(latest), hide_index=True, width="stretch", column_config={
        "started": st.column_config.DatetimeColumn(f"started ({tz})",
                                                   format="YYYY-MM-DD HH:mm:ss"),
        "ring time s": seconds, "talk time s": seconds})


render()
