"""Calls: the CDR explorer. Filters, the matching calls, CSV export, and one call's legs,
events (as a timeline) and recording.

A call is opened by picking it in the table, or by a link ``calls?call=<call id>`` (the
quality page's worst calls link here). The tenant is the session's, never a filter.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, widgets
from dashboards.errors import warehouse_errors
from dashboards.formatting import cdr_table, format_duration_ms, wall_clock

# Streamlit runs this file as a script: constants get comments, not docstrings.

SHOWN_LIMIT = 500  # rows listed in the page (the CSV export has them all)
DIRECTIONS = ["inbound", "outbound", "internal"]
DISPOSITIONS = ["answered", "busy", "no_answer", "cancelled", "failed", "interrupted",
                "in_progress"]
ALL = "(all)"


def render() -> None:
    st.title("Calls")
    with warehouse_errors():
        st.caption(f"Tenant `{data.tenant()}` · times in {data.time_zone()}")
    with warehouse_errors():
        explorer()


def choice(column, label: str, options: list[str], key: str) -> str | None:
    picked = column.selectbox(label, [ALL, *options], key=key)
    return None if picked == ALL else picked


def filters() -> tuple[tuple, dict[str, str | None]]:
    """The period and the filters the user set."""
    tz = data.time_zone()
    first, last = widgets.period_input("calls_period", tz)
    start, end = data.period_bounds(first, last, tz)
    values = data.fetch("calls.filter_values", start, end)
    a, b, c = st.columns(3)
    chosen = {"direction": choice(a, "Direction", DIRECTIONS, "calls_direction"),
              "disposition": choice(b, "Disposition", DISPOSITIONS, "calls_disposition"),
              "agent": choice(c, "Agent", values["agents"], "calls_agent")}
    d, e, f = st.columns(3)
    chosen["group"] = choice(d, "Group / number dialled", values["groups"], "calls_group")
    chosen["did"] = choice(e, "DID", values["dids"], "calls_did")
    chosen["number"] = f.text_input("Number contains", key="calls_number").strip() or None
    return (start, end), chosen


def explorer() -> None:
    (start, end), chosen = filters()
    total = data.fetch("calls.count_calls", start, end, **chosen)
    found = data.fetch("calls.find_calls", start, end, limit=SHOWN_LIMIT, **chosen)
    st.subheader(f"{total} calls" + (f" (newest {SHOWN_LIMIT} listed)" if total > SHOWN_LIMIT
                                     else ""))
    st.download_button("Download CSV", lambda: data.export_calls_csv(start, end, **chosen),
                       file_name="calls.csv", mime="text/csv", key="calls_csv",
                       disabled=total == 0, help=f"All {total} calls the filters select.")
    picked = None
    if not found.empty:
        event = st.dataframe(
            pd.concat([found[["call_id"]], cdr_table(found)], axis=1), hide_index=True,
            width="stretch", on_select="rerun", selection_mode="single-row",
            key="calls_table", column_config={
                "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})
        rows = event.selection.rows if event is not None else []
        picked = found["call_id"].iloc[rows[0]] if rows else None
    call_id = st.text_input("Call id", value=picked or st.query_params.get("call", ""),
                            key="calls_call_id").strip()
    if call_id:
        show_call(call_id)


def show_call(call_id: str) -> None:
    record = data.fetch("calls.find_call", call_id)
    if record is None:
        st.warning(f"No call {call_id} for this tenant.")
        return
    st.subheader(f"Call {call_id}")
    cols = st.columns(5)
    cols[0].metric("Disposition", record["disposition"])
    cols[1].metric("From", record["caller"] or "—")
    cols[2].metric("To", record["callee"] or "—")
    cols[3].metric("Wait", format_duration_ms(record["ring_ms"]),
                   help="Offer to answer, or to the end if unanswered (ring_ms).")
    cols[4].metric("Talk", format_duration_ms(record["talk_ms"]),
                   help="Answer to end (talk_ms).")
    show_recording(record.get("recording"))
    legs = data.fetch("calls.call_legs", call_id)
    events = data.fetch("calls.call_events", call_id)
    if events.empty:
        st.info("No events recorded for this call.")
        return
    decisions = data.fetch("routing.call_decisions", call_id)
    if not decisions.empty:
        st.markdown("**Routing decisions**", help=data.definition("routing.call_decisions"))
        st.dataframe(decisions.assign(ts=wall_clock(decisions["ts"], data.time_zone())),
                     hide_index=True, width="stretch")
    st.markdown("**Legs**")
    st.dataframe(legs, hide_index=True, width="stretch")
    st.markdown("**Events**")
    tz = data.time_zone()
    shown = events.assign(leg=events["leg_id"].fillna(call_id), ts=wall_clock(events["ts"], tz))
    timeline = alt.Chart(shown).mark_circle(
        size=120).encode(x=alt.X("ts:T", title=f"time ({tz})", scale=alt.Scale(type="utc")),
                         y=alt.Y("leg:N", title="leg"),
                         color=alt.Color("type:N"), tooltip=["ts:T", "type", "leg",
                                                             "sip_code", "reason"])
    st.altair_chart(timeline, width="stretch")
    st.dataframe(events, hide_index=True, width="stretch")


def show_recording(recording: str | None) -> None:
    path = data.recording_file(recording)
    if path is not None:
        st.audio(str(path))
    elif recording:
        st.caption(f"Recording {recording} is not available on this server.")


render()
