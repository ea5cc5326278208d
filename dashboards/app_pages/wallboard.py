"""Wallboard: calls now, agents by state and today's KPIs against their targets.

Made for a wall screen: few, large figures, refreshed in place every few seconds (a
fragment rerun, no page reload, so nothing flickers). Figures come from
:mod:`dashboards.data` (named queries, cached); hover help is the library's definition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors
from dashboards.formatting import format_rate, format_seconds, target_delta

# Streamlit runs this file as a script, and its "magic" would print a bare string
# literal under a constant as markdown on the page: constants get comments, not docstrings.

REFRESH_S = 5  # seconds between refreshes of the live part
# today's targets (proposed settings: target_service_level, target_answer_rate, ...)
TARGETS = {"service_level_offered": 0.80, "answer_rate": 0.90, "abandonment_rate": 0.05,
           "average_wait": 20.0}
STATE_TITLES = {"available": "Agents available", "ringing": "Agents ringing",
                "on_call": "Agents on a call", "wrap_up": "Agents in wrap-up",
                "offline": "Agents offline"}


def render() -> None:
    """The page: a static header, then the self-refreshing figures."""
    st.title("Wallboard")
    with warehouse_errors():
        tz = data.time_zone()
    st.caption(f"Tenant `{data.tenant()}` · today since 00:00 {tz} · KPIs over "
               f"inbound calls (see Glossary) · refreshes every {REFRESH_S} s")
    live_figures()


def target(name: str) -> float:
    """The target of a KPI: a setting if the settings have it, else the default above."""
    return float(getattr(data.settings(), f"target_{name}", TARGETS[name]))


@st.fragment(run_every=REFRESH_S)
def live_figures() -> None:
    """Everything that changes with traffic; only this part reruns on each refresh."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=getattr(data.settings(), "max_call_duration_s", 7200))
    with warehouse_errors():
        live = data.fetch("wallboard.live_summary", since)
        states = data.fetch("wallboard.agents_by_state")
        tz = data.time_zone()
        # the queue KPIs are inbound-only in the library itself: the same calls as Trends
        kpis = data.fetch("kpi.kpi_summary", *data.day_bounds(data.today(tz), tz))
        calls_now = data.to_zone(data.fetch("wallboard.live_calls", since),
                                 ("started_at", "answered_at"), tz)
    show_calls_now(live)
    show_agents(states)
    show_kpis(kpis)
    show_live_calls(calls_now, tz)


def show_calls_now(live: dict[str, int]) -> None:
    st.subheader("Calls now")
    ringing, talking = st.columns(2)
    help_ = data.definition("wallboard.live_summary")
    ringing.metric("Calls ringing", live["ringing"], border=True, help=help_)
    talking.metric("Calls talking", live["talking"], border=True, help=help_)


def show_agents(states: dict[str, int]) -> None:
    st.subheader("Agents")
    help_ = data.definition("wallboard.agents_by_state")
    for column, (state, count) in zip(st.columns(len(states)), states.items(), strict=True):
        column.metric(STATE_TITLES.get(state, state), count, border=True, help=help_)


def show_kpis(kpis: dict) -> None:
    st.subheader(f"Today: {kpis['offered']} inbound calls closed, {kpis['in_progress']} in "
                 "progress")
    tiles = st.columns(4)
    for tile, (name, title, percent, higher_better) in zip(tiles, (
            ("service_level_offered", "Service level", True, True),
            ("answer_rate", "Answer rate", True, True),
            ("abandonment_rate", "Abandoned", True, False),
            ("average_wait", "Average wait", False, False)), strict=True):
        value = kpis[name]
        shown = format_rate(value) if percent else format_seconds(value)
        tile.metric(title, shown, delta=target_delta(value, target(name), percent=percent),
                    delta_color="normal" if higher_better else "inverse", border=True,
                    help=data.definition(f"kpi.{name}"))


def show_live_calls(calls_now, tz: str) -> None:
    if calls_now.empty:
        return
    st.subheader("Live calls")
    st.dataframe(calls_now, hide_index=True, width="stretch", column_config={
        "started_at": st.column_config.DatetimeColumn(f"started ({tz})", format="HH:mm:ss"),
        "answered_at": st.column_config.DatetimeColumn(f"answered ({tz})", format="HH:mm:ss")})


render()
