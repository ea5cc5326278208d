"""Routing: which rules decided where inbound calls went, and how fast the edge decided.

A rule beyond the DID's own target (a white-listed caller sent straight to an extension, a
black-listed one refused) is a ``route.decided`` event; each call's decisions also show on
its Calls page. Figures: :mod:`warehouse.queries.routing` through :mod:`dashboards.data`.
"""

from __future__ import annotations

import streamlit as st

from dashboards import data, widgets
from dashboards.errors import warehouse_errors


def render() -> None:
    st.title("Routing")
    with warehouse_errors():
        tz = data.time_zone()
    first, last = widgets.period_input("routing_period", tz)
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
