"""Missed calls: the callback list. Open items with their age; closed items with who
called back and how long it took; calls missed at night or at the weekend called out.

Figures: :mod:`warehouse.queries.callbacks` through :mod:`dashboards.data`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors
from dashboards.formatting import callback_table, format_duration_ms, format_rate

# Streamlit runs this file as a script: constants get comments, not docstrings.

REFRESH_S = 30  # the open list ages while one looks at it
MINUTES = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")


def render() -> None:
    st.title("Missed calls")
    with warehouse_errors():
        tz = data.time_zone()
    today = data.today(tz)
    period = st.date_input(f"Closed / opened in (days in {tz})",
                           (today - timedelta(days=6), today), key="missed_period")
    first, last = (period[0], period[-1]) if isinstance(period, tuple | list) and period \
        else (today, today)
    hours = data.settings().business_hours
    st.caption(f"Tenant `{data.tenant()}` · times in {tz} · night = outside business hours "
               f"{hours} h {tz}, weekend = not a working day; flags of the first missed call")
    open_items(tz)
    with warehouse_errors():
        closed_items(*data.period_bounds(first, last, tz), tz)


@st.fragment(run_every=REFRESH_S)
def open_items(tz: str) -> None:
    # its own error surface: a refresh reruns only this fragment, not render()
    with warehouse_errors():
        items = data.fetch("callbacks.open_callbacks",
                           datetime.now(UTC).replace(microsecond=0))
    st.subheader(f"To call back: {len(items)}", help=data.definition("callbacks.open_callbacks"))
    if items.empty:
        st.info("Nobody is waiting for a callback.")
        return
    st.dataframe(callback_table(items, open_items=True, tz=tz), hide_index=True,
                 width="stretch", column_config={f"first missed ({tz})": MINUTES})


def closed_items(start, end, tz: str) -> None:
    summary = data.fetch("callbacks.callback_summary", start, end)
    help_ = data.definition("callbacks.callback_summary")
    cols = st.columns(4)
    cols[0].metric("Items opened", summary["items"], border=True, help=help_)
    cols[1].metric("Called back", summary["closed"], border=True, help=help_)
    cols[2].metric("Callback rate", format_rate(summary["success_rate"]), border=True,
                   help=help_)
    cols[3].metric("Median time to callback",
                   format_duration_ms(summary["median_time_to_callback_ms"]), border=True,
                   help=help_)
    items = data.fetch("callbacks.closed_callbacks", start, end)
    st.subheader(f"Called back: {len(items)}", help=data.definition("callbacks.closed_callbacks"))
    if items.empty:
        st.info("No callback closed in the period.")
        return
    st.dataframe(callback_table(items, open_items=False, tz=tz), hide_index=True,
                 width="stretch", column_config={f"first missed ({tz})": MINUTES})


render()
