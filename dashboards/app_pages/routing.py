"""Routing: which rules decided where inbound calls went, how fast the edge decided, and
how the waiting queues of ``longest_idle`` groups fared.

A rule beyond the DID's own target (a white-listed caller sent straight to an extension, a
black-listed one refused, a caller put in a queue) is a ``route.decided`` event; each
call's decisions also show on its Calls page. Figures: :mod:`warehouse.queries.routing`
through :mod:`dashboards.data`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, widgets
from dashboards.errors import warehouse_errors
from dashboards.formatting import format_seconds

# Streamlit runs this file as a script: constants get comments, not docstrings.

# (column of routing.queue_intervals, what the chart calls it)
QUEUE_SERIES = (("max_queue_length", "longest queue (callers)"),
                ("wait_p90_s", "wait p90 (s)"), ("overflowed", "overflowed (calls)"))


def render() -> None:
    st.title("Routing")
    with warehouse_errors():
        tz = data.time_zone()
    first, last = widgets.period_input("routing_period", tz)
    st.caption(f"Tenant `{data.tenant()}` · {first} to {last} ({tz}) · inbound calls a "
               "routing rule decided")
    start, end = data.period_bounds(first, last, tz)
    with warehouse_errors(stop=False):
        rule_hits(start, end)
    with warehouse_errors():
        waiting_queue(start, end, "1 hour" if (last - first).days < 2 else "1 day", tz)


def rule_hits(start, end) -> None:
    counts = data.fetch("routing.rule_counts", start, end)
    st.markdown("**Rule hits**", help=data.definition("routing.rule_counts"))
    if counts.empty:
        st.info("No routing rule fired in the period: every call went where its DID says.")
        return
    [totals] = data.fetch("routing.decided_calls", start, end).to_dict("records")
    cols = st.columns(2)
    cols[0].metric("Calls decided by a rule", int(totals["calls"]), border=True,
                   help=data.definition("routing.decided_calls"))
    cols[1].metric("Decision time (p99, µs)", int(totals["p99_decision_us"]), border=True)
    st.dataframe(counts, hide_index=True, width="stretch")


def waiting_queue(start, end, interval: str, tz: str) -> None:
    st.subheader("Waiting queue", help=data.definition("routing.queue_summary"))
    summary = data.fetch("routing.queue_summary", start, end)
    if summary.empty:
        st.info("Nobody waited in a queue in the period: either an agent of the group was "
                "free for every caller, or no group has a queue (provisioning: a "
                "longest_idle group's `queue = { max_wait_s, max_length, overflow }`).")
        return
    queues = list(summary["queue"])
    queue = st.selectbox("Queue", queues, key="routing_queue") if len(queues) > 1 \
        else queues[0]
    row = summary.set_index("queue").loc[queue]
    tiles = (("Queued", int(row["queued"])), ("Answered from queue", int(row["offered"])),
             ("Overflowed", int(row["overflowed"])), ("Abandoned", int(row["abandoned"])),
             ("Wait p90", format_seconds(row["wait_p90_s"])))
    for tile, (label, value) in zip(st.columns(len(tiles)), tiles, strict=True):
        tile.metric(label, value, border=True)
    st.caption(f"Queue `{queue}`: answered from queue = offered to an agent; overflowed "
               f"{_reasons(row)}; waits of callers who left the queue.")
    queue_chart(start, end, interval, tz, queue)
    st.dataframe(summary, hide_index=True, width="stretch")


def _reasons(row: pd.Series) -> str:
    parts = [f"{int(row[c])} {c.removeprefix('overflowed_').replace('_', ' ')}"
             for c in row.index if c.startswith("overflowed_") and row[c]]
    return "(" + ", ".join(parts) + ")" if parts else "(none)"


def queue_chart(start, end, interval: str, tz: str, queue: str) -> None:
    frame = data.fetch("routing.queue_intervals", start, end, interval, tz=tz)
    frame = frame[frame["queue"] == queue]
    # local wall times on a "utc" scale, as on Trends: the browser shows the tenant's hours
    wall = data.to_zone(frame, ("interval_start",), tz)["interval_start"].dt.tz_localize(None)
    shown = frame.assign(interval_start=wall).rename(columns=dict(QUEUE_SERIES)).melt(
        id_vars="interval_start", value_vars=[name for _, name in QUEUE_SERIES],
        var_name="figure", value_name="value").dropna()
    chart = alt.Chart(shown).mark_line(point=True).encode(
        x=alt.X("interval_start:T", title=tz, scale=alt.Scale(type="utc")),
        y=alt.Y("value:Q", title=None), color=alt.Color("figure:N", legend=None),
        tooltip=["interval_start:T", "figure", "value"],
    ).properties(height=110).facet(row=alt.Row("figure:N", title=None)).resolve_scale(
        y="independent")
    st.markdown(f"**Per {interval.split()[-1]} ({tz})**")
    st.altair_chart(chart)


render()
