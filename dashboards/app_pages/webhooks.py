"""Webhooks: each subscription's delivery log - what was sent, the receiver's status code,
the attempts, and the latency from the event at the source to the receiver's 2xx.

Figures: the API process's outbox journal through :func:`dashboards.data.webhook_deliveries`
(the same rows as ``GET /api/v1/webhooks/{id}/deliveries``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors
from dashboards.formatting import NO_VALUE, format_rate

# Streamlit runs this file as a script: constants get comments, not docstrings.

REFRESH_S = 10  # deliveries retry with backoff: the log moves while one looks at it
SECONDS = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
SHOWN = {"event_id": "event", "state": "state", "last_status": "status",
         "attempts": "attempts", "latency_ms": "latency (ms)",
         "last_attempt_ms": "last attempt (ms)", "first_attempt_at": "first attempt",
         "delivered_at": "delivered", "last_error": "last error"}


def render() -> None:
    st.title("Webhooks")
    with warehouse_errors():
        tz = data.time_zone()
    st.caption(f"Tenant `{data.tenant()}` · times in {tz} · latency = event time at the "
               "source (a closed call: its end) to the receiver's 2xx; subscriptions are "
               "managed through the API (`/api/v1/webhooks`)")
    deliveries(tz)


def percentile_ms(values: pd.Series, q: float) -> str:
    values = values.dropna()
    return NO_VALUE if values.empty else f"{values.quantile(q):.0f} ms"


@st.fragment(run_every=REFRESH_S)
def deliveries(tz: str) -> None:
    log = data.webhook_deliveries()
    if log.empty:
        st.info("No webhook deliveries yet: a subscription (POST /api/v1/webhooks) gets "
                "the tenant's events from its creation on.")
        return
    for (sub, url, fmt), rows in log.groupby(["subscription", "url", "format"], sort=False):
        st.subheader(f"{url}", help=f"Subscription {sub}, format {fmt}")
        done = rows[rows.state == "done"]
        cols = st.columns(5)
        cols[0].metric("Delivered", len(done), border=True)
        cols[1].metric("Pending", int((rows.state == "pending").sum()), border=True)
        cols[2].metric("Given up", int((rows.state == "rejected").sum()), border=True)
        cols[3].metric("First try ok", format_rate(
            (done.attempts == 1).sum() / len(rows) if len(rows) else None), border=True)
        cols[4].metric("Latency p50 / p99", f"{percentile_ms(done.latency_ms, 0.5)} / "
                       f"{percentile_ms(done.latency_ms, 0.99)}", border=True)
        table = data.to_zone(rows, ("first_attempt_at", "delivered_at"), tz)
        table = table[list(SHOWN)].rename(columns=SHOWN)
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "first attempt": SECONDS, "delivered": SECONDS,
            "status": st.column_config.NumberColumn(format="%d")})


render()
