"""Routing: which rules decided where inbound calls went, and how fast the edge decided.

A rule beyond the DID's own target (a white-listed caller sent straight to an extension, a
black-listed one refused) is a ``route.decided`` event; each call's decisions also show on
its Calls page. Figures: :mod:`warehouse.queries.routing` through :mod:`dashboards.data`.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors


def render() -> None:
    st.title("Routing")
    with warehouse_errors():
        tz = data.time_zone()
    today = data.today(tz)
    period = st.date_input(f"Period (days in {tz})", (today - timedelta(days=6), today),
                           key="routing_period")
    first, last = (period[0], period[-1]) if isinstance(period, tuple | list) and period \
        else (today, today)
    st.caption(f"Tenant `{data.tenant()}` · {first} to {last} ({tz}) · inbound calls a "
               "routing rule decided")
    with warehouse_errors():
        counts = data.fetch("routing.rule_counts", *data.period_bounds(first, last, tz))
    st.markdown("**Rule hits**", help=data.definition("routing.rule_counts"))
    if counts.empty:
        st.info("No routing rule fired in the period: every call went where its DID says.")
        return
    cols = st.columns(2)
    cols[0].metric("Calls decided by a rule", int(counts["calls"].sum()), border=True)
    cols[1].metric("Slowest decision (p99, µs)", int(counts["p99_decision_us"].max()),
                   border=True)
    st.dataframe(counts, hide_index=True, width="stretch")


render()
