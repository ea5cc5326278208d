"""Trends: volume by hour x weekday, service level and answer rate over time, the KPIs by
DID and by group, and this period against the one before.

Figures: :mod:`warehouse.queries.trends` and the KPI library, through
:mod:`dashboards.data`; hover help is the library's definition.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, widgets
from dashboards.errors import warehouse_errors
from dashboards.formatting import change, format_rate, format_seconds

# Streamlit runs this file as a script: constants get comments, not docstrings.

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
COMPARED = (("offered", "Inbound calls closed", False),
            ("service_level_offered", "Service level", True),
            ("answer_rate", "Answer rate", True), ("abandonment_rate", "Abandoned", True),
            ("average_wait", "Average wait", False))


def render() -> None:
    st.title("Trends")
    with warehouse_errors():
        tz = data.time_zone()
    first, last = widgets.period_input("trends_period", tz, days=28)
    st.caption(f"Tenant `{data.tenant()}` · {first} to {last} · times in {tz} · queue KPIs "
               "over inbound calls (see Glossary)")
    with warehouse_errors():
        page(first, last, tz)


def page(first, last, tz: str) -> None:
    start, end = data.period_bounds(first, last, tz)
    comparison(start, end)
    heatmap(start, end, tz)
    over_time(start, end, "1 hour" if (last - first).days < 2 else "1 day", tz)
    for dimension, title in (("did", "By DID"), ("group", "By group (routed to)")):
        by_dimension(start, end, dimension, title)
    pdd(start, end)


def comparison(start, end) -> None:
    compared = data.fetch("kpi.period_comparison", start, end)
    now, before = compared["current"], compared["previous"]
    st.subheader("Against the previous period")
    for tile, (name, title, percent) in zip(st.columns(len(COMPARED)), COMPARED, strict=True):
        shown = (format_rate(now[name]) if percent else format_seconds(now[name])) \
            if name != "offered" else now[name]
        inverse = name in ("abandonment_rate", "average_wait")
        tile.metric(title, shown, delta=change(now[name], before[name],
                                               percent=percent and name != "offered"),
                    delta_color="inverse" if inverse else "normal", border=True,
                    help=data.definition(f"kpi.{name}"))


def heatmap(start, end, tz: str) -> None:
    st.subheader(f"Calls by hour and weekday ({tz})")
    volume = data.fetch("trends.volume_by_weekday_hour", start, end, tz=tz)
    volume = volume.assign(day=[WEEKDAYS[d - 1] for d in volume["weekday"]])
    chart = alt.Chart(volume).mark_rect().encode(
        x=alt.X("hour:O", title=f"hour ({tz})"), y=alt.Y("day:O", sort=WEEKDAYS, title=None),
        color=alt.Color("calls:Q", scale=alt.Scale(scheme="blues")),
        tooltip=["day", "hour", "calls"])
    st.altair_chart(chart, width="stretch")


def over_time(start, end, interval: str, tz: str) -> None:
    st.subheader(f"Service level and answer rate per {interval.split()[-1]} ({tz})")
    frame = data.fetch("kpi.kpis_by_interval", start, end, interval, tz=tz)
    # local wall times on a "utc" scale: the browser shows them as they are, in the tenant's
    # zone, instead of converting them to its own
    wall = data.to_zone(frame, ("interval_start",), tz)["interval_start"].dt.tz_localize(None)
    frame = frame.assign(interval_start=wall)
    domain = [data.to_zone(pd.DataFrame({"t": [t]}), ("t",), tz)["t"].iloc[0]
              .tz_localize(None).isoformat() for t in (start, end)]
    shown = frame.rename(columns={"service_level_offered": "service level",
                                  "answer_rate": "answer rate"}).melt(
        id_vars="interval_start", value_vars=["service level", "answer rate"],
        var_name="KPI", value_name="fraction").dropna()
    # points as well as lines: an interval between two empty ones is still seen
    chart = alt.Chart(shown).mark_line(point=True).encode(
        x=alt.X("interval_start:T", title=tz, scale=alt.Scale(type="utc", domain=domain)),
        y=alt.Y("fraction:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color="KPI:N", tooltip=["interval_start:T", "KPI", alt.Tooltip("fraction:Q",
                                                                         format=".1%")])
    st.altair_chart(chart, width="stretch")
    st.caption(data.definition("kpi.service_level_offered") + " — "
               + data.definition("kpi.answer_rate"))


def by_dimension(start, end, dimension: str, title: str) -> None:
    st.subheader(title)
    frame = data.fetch("trends.kpis_by_dimension", start, end, dimension)
    if frame.empty:
        st.info("No inbound calls in the period.")
        return
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "value": "DID" if dimension == "did" else "group",
        "service_level_offered": st.column_config.NumberColumn(
            "service level", format="percent", help=data.definition("kpi.service_level_offered")),
        "answer_rate": st.column_config.NumberColumn(
            "answer rate", format="percent", help=data.definition("kpi.answer_rate")),
        "abandonment_rate": st.column_config.NumberColumn(
            "abandoned", format="percent", help=data.definition("kpi.abandonment_rate")),
        "average_wait": st.column_config.NumberColumn(
            "average wait s", format="%.1f", help=data.definition("kpi.average_wait"))})


def pdd(start, end) -> None:
    st.subheader("Post-dial delay per trunk", help=data.definition("kpi.pdd"))
    frame = data.fetch("kpi.pdd_by_trunk", start, end)
    if frame.empty:
        st.info("No calls sent to the trunk in the period.")
        return
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "pdd_s": st.column_config.NumberColumn("PDD mean s", format="%.2f"),
        "pdd_p95_s": st.column_config.NumberColumn("PDD p95 s", format="%.2f")})


render()
