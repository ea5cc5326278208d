"""Agents: per-agent figures of a period (offered, answered, missed, talk time, AHT,
occupancy, logged-in time) and the state timeline of one day.

Figures: :mod:`warehouse.queries.agent_stats` (the streams' per-interval statistics)
through :mod:`dashboards.data`; the column help is that module's definitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors
from dashboards.formatting import agent_table, timeline_segments

# Streamlit runs this file as a script: constants get comments, not docstrings.

STATE_COLORS = {"available": "#2e7d32", "ringing": "#f9a825", "on_call": "#1565c0",
                "wrap_up": "#6a1b9a", "offline": "#9e9e9e"}


def render() -> None:
    st.title("Agents")
    with warehouse_errors():
        tz = data.time_zone()
    day = st.date_input(f"Day ({tz})", data.today(tz), key="agents_day")
    st.caption(f"Tenant `{data.tenant()}` · {day} · times in {tz}")
    with warehouse_errors():
        page(day, tz)


def page(day, tz: str) -> None:
    start, end = data.day_bounds(day, tz)
    stats = data.fetch("agent_stats.agent_table", start, end, "15m")
    if stats.empty:
        st.info(f"No agent activity on {day}.")
    else:
        help_ = data.definition("agent_stats.agent_table")
        st.subheader("Per agent", help=help_)
        st.dataframe(agent_table(stats, tz), hide_index=True, width="stretch", column_config={
            "AHT (talk + hold)": st.column_config.TextColumn(help=data.definition("kpi.agent_aht")),
            "occupancy": st.column_config.TextColumn(
                help=data.definition("kpi.occupancy"))})
        st.bar_chart(stats.set_index("agent")[["answered", "missed"]], stack=True,
                     color=["#2e7d32", "#c62828"], y_label="calls")
    timeline(start, end, tz)


def timeline(start, end, tz: str) -> None:
    st.subheader("State timeline", help=data.definition("agent_stats.state_timeline"))
    segments = data.fetch("agent_stats.state_timeline", start, end)
    if segments.empty:
        st.info("No state changes recorded on this day.")
        return
    frame = timeline_segments(segments, min(end, datetime.now(UTC)), tz)
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("since:T", title=tz, scale=alt.Scale(type="utc")), x2="until:T",
        y=alt.Y("agent:N", title="agent"),
        color=alt.Color("state:N", scale=alt.Scale(domain=list(STATE_COLORS),
                                                   range=list(STATE_COLORS.values()))),
        tooltip=["agent", "state", "since:T", "until:T"])
    st.altair_chart(chart, width="stretch")


render()
