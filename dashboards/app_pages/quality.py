"""Quality: how MOS, packet loss and jitter are distributed, and the worst calls, each
linked to its record in the Calls page.

Figures: :mod:`warehouse.queries.quality` through :mod:`dashboards.data`.
"""

from __future__ import annotations

import streamlit as st

from dashboards import data, widgets
from dashboards.errors import warehouse_errors
from dashboards.formatting import NO_VALUE, cdr_table

# Streamlit runs this file as a script: constants get comments, not docstrings.

TITLES = {"mos": "MOS", "packet_loss": "Packet loss (fraction)", "jitter_ms": "Jitter (ms)"}
WORST_LIMIT = 20


def render() -> None:
    st.title("Quality")
    with warehouse_errors():
        tz = data.time_zone()
    first, last = widgets.period_input("quality_period", tz)
    st.caption(f"Tenant `{data.tenant()}` · {first} to {last} ({tz}) · calls with media "
               "figures")
    with warehouse_errors():
        page(*data.period_bounds(first, last, tz))


def number(value, fmt: str) -> str:
    return NO_VALUE if value is None else fmt.format(value)


def page(start, end) -> None:
    summary = data.fetch("quality.quality_summary", start, end)
    help_ = data.definition("quality.quality_summary")
    cols = st.columns(5)
    cols[0].metric("Calls measured", summary["calls"], border=True, help=help_)
    cols[1].metric("Average MOS", number(summary["mos_avg"], "{:.2f}"), border=True,
                   help=help_)
    cols[2].metric("Poor calls (MOS < 3.6)", summary["poor_calls"], border=True, help=help_)
    cols[3].metric("Average loss", number(summary["loss_avg"] and summary["loss_avg"] * 100,
                                          "{:.2f}%"), border=True, help=help_)
    cols[4].metric("Average jitter", number(summary["jitter_avg"], "{:.1f} ms"), border=True,
                   help=help_)
    if not summary["calls"]:
        st.info("No call with media figures in the period.")
        return
    for column, metric in zip(st.columns(len(TITLES)), TITLES, strict=True):
        with column:
            st.markdown(f"**{TITLES[metric]}**", help=data.definition("quality.distribution"))
            bins = data.fetch("quality.distribution", start, end, metric)
            st.bar_chart(bins.set_index("bin_start")["calls"], x_label=TITLES[metric],
                         y_label="calls")
    worst(start, end)


def worst(start, end) -> None:
    st.subheader(f"Worst {WORST_LIMIT} calls", help=data.definition("quality.worst_calls"))
    calls = data.fetch("quality.worst_calls", start, end, WORST_LIMIT)
    table = cdr_table(calls)
    table.insert(0, "record", [f"calls?call={c}" for c in calls["call_id"]])
    table["MOS"] = calls["mos"].round(2)
    table["loss"] = calls["packet_loss"].round(4)
    table["jitter ms"] = calls["jitter_ms"].round(1)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "record": st.column_config.LinkColumn("record", display_text="open"),
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


render()
