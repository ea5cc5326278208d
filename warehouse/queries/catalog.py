"""The schema browser's named queries: the analyst-visible tables, their columns and what
each column means; and the tenants present (for an administrator's tenant choice).

ClickHouse keeps column types (``system.columns``); the meanings live here, next to
the SQL box's list of tables (:data:`warehouse.queries.sql_box.TENANT_TABLES`), because
the migrations carry none. A column without a description is shown with an empty one.
"""

from __future__ import annotations

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.schema import (
    AGENT_STATES,
    AGENT_STATS,
    CALL_EVENTS,
    CALLBACKS,
    CDRS,
    DATABASE,
    TENANTS,
)

__all__ = ["TABLE_DESCRIPTIONS", "COLUMN_DESCRIPTIONS", "list_columns", "list_tenants"]

_KAFKA = {
    "kafka_topic": "Kafka topic the row was loaded from.",
    "kafka_partition": "Kafka partition the row was loaded from.",
    "kafka_offset": "Kafka offset of the message (with topic and partition: its origin).",
    "loaded_at": "When the warehouse stored the row (UTC).",
}

TABLE_DESCRIPTIONS = {
    CDRS: "One row per call revision; read with FINAL for one row per call (latest).",
    CALL_EVENTS: "Every call and agent event as it arrived (audit log; de-duplicate by "
                 "event_id).",
    AGENT_STATES: "Agent state segments (offline, available, ringing, on_call, wrap_up); "
                  "FINAL, skip deleted.",
    AGENT_STATS: "Per-agent figures per 15m / hour / day interval; FINAL.",
    CALLBACKS: "Missed-call callback items (open until an answered call reaches the "
               "client); FINAL, skip deleted.",
    TENANTS: "Each tenant's IANA time zone and trunk, loaded from provisioning at every "
             "start; FINAL.",
}
"""Analyst-visible tables -> what one row is."""

COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    CDRS: {
        "tenant": "Customer (PBX tenant) the call belongs to.",
        "call_id": "Call id, stable across the call's legs.",
        "version": "Revision number; FINAL keeps the highest.",
        "direction": "inbound, outbound or internal.",
        "caller": "Calling number (E.164 when the country is known).",
        "callee": "Called number, extension or ring group.",
        "did": "Number dialled from outside (inbound calls).",
        "agent": "Extension that handled the call: answered it, or placed it (outbound).",
        "started_at": "When the call was offered (UTC).",
        "call_day": "UTC day of started_at, in the sort key: add call_day >= ... to a "
                    "window on started_at and only those days are read.",
        "answered_at": "When it was answered (UTC), NULL if never.",
        "ended_at": "When it ended (UTC), NULL while in progress.",
        "ring_ms": "Caller's wait: offer to answer, or to the end if unanswered (ms).",
        "talk_ms": "Answer to end (ms).",
        "disposition": "in_progress, answered, busy, no_answer, cancelled (caller hung "
                       "up while ringing), failed or interrupted (the end was lost: the "
                       "edge restarted mid-call; closed at the last time known alive).",
        "sip_code": "Final SIP response code.",
        "reason": "Reason phrase of the final response.",
        "hangup_by": "caller or callee.",
        "closed": "The call has ended (its outcome is final).",
        "recording": "Path of the call's recording, if recorded.",
        "mos": "Mean opinion score 1..5 reported by rtpengine at hangup.",
        "packet_loss": "Packet loss fraction 0..1 (rtpengine).",
        "jitter_ms": "Jitter in ms (rtpengine).",
        "event_count": "Distinct events folded into this revision.",
        "last_event_ts": "Time of the latest event folded in (UTC).",
        "route_target": "Where the PBX routed the call: ext:<user>, group:<name>, "
                        "tel:<number> (trunk), mask:<code>.",
        "route_group": "Group (queue) the call was routed to or rang through.",
        "pdd_ms": "Post-dial delay of a trunk call: INVITE to first 18x or answer (ms, "
                  "RFC 6076).",
        "hold_ms": "Time on hold (ms); included in talk_ms.",
        **_KAFKA,
    },
    CALL_EVENTS: {
        "tenant": "Customer the event belongs to.", "ts": "Event time at the source (UTC).",
        "call_id": "Call id ('' for agent events).", "event_id": "Deterministic event id.",
        "type": "call.offered, call.ringing, call.answered, call.ended, agent.*, ...",
        "schema": "Event schema version.", "source": "Which process emitted the event.",
        "leg_id": "Leg of the call.", "direction": "inbound, outbound or internal.",
        "caller": "Calling number.", "callee": "Called number.", "did": "Number dialled.",
        "agent": "Extension concerned.", "sip_code": "SIP response code.",
        "reason": "Reason phrase.", "hangup_by": "caller or callee.",
        "duration_ms": "Duration the source reported (ms).",
        "media": "Media figures (mos, packet_loss, jitter_ms) by name.",
        "extra": "Other fields of the event (JSON).", "raw": "The message as received.",
        **_KAFKA,
    },
    AGENT_STATES: {
        "tenant": "Customer.", "agent": "Extension.", "since": "Segment start (UTC).",
        "state": "offline, available, ringing, on_call or wrap_up.",
        "until": "Segment end (UTC), NULL while current.", "version": "Revision.",
        "deleted": "Retracted segment (skip).", **_KAFKA,
    },
    AGENT_STATS: {
        "tenant": "Customer.", "agent": "Extension.",
        "interval_kind": "15m, hour or day.", "interval_start": "Interval start (UTC).",
        "version": "Revision.", "logged_in_ms": "Time registered (ms).",
        "available_ms": "Time available (ms).", "ringing_ms": "Time ringing (ms).",
        "talk_ms": "Time on calls (ms).", "wrap_up_ms": "Time in wrap-up (ms).",
        "offered": "Calls that rang the agent.", "answered": "Calls the agent answered.",
        "missed": "Calls that rang the agent and were not answered by them.",
        "handled": "Calls whose talk ended in the interval.",
        "handled_talk_ms": "Whole talk of the handled calls (ms).",
        "aht_talk_ms": "AHT, talk only: handled_talk_ms / handled.",
        "occupancy": "(talk + wrap-up) / (talk + wrap-up + available).",
        "complete_until": "The row is final up to this time.", **_KAFKA,
    },
    CALLBACKS: {
        "tenant": "Customer.", "client": "Client's number (normalised).",
        "item_id": "Id of the item (its first missed call).", "version": "Revision.",
        "status": "open or closed.", "opened_at": "First missed call (UTC).",
        "last_missed_at": "Latest missed call of the item (UTC).",
        "attempts": "Missed inbound calls of the item.",
        "callback_attempts": "Outbound calls to the client that were not answered.",
        "closed_at": "Answer of the call that closed the item (UTC).",
        "closed_by_call_id": "That call's id.", "called_back_by": "Extension that "
        "reached the client.", "callback_direction": "outbound (called back) or inbound "
        "(the client called again and was answered).",
        "time_to_callback_ms": "First missed call to the closing answer (ms).",
        "deleted": "Retracted item (skip).",
        "night": "First missed call outside business hours (tenant's time zone).",
        "weekend": "First missed call on a non-working day (tenant's time zone).",
        "time_zone": "IANA zone the night/weekend flags were computed in.", **_KAFKA,
    },
    TENANTS: {
        "tenant": "Customer.", "time_zone": "IANA time zone of the tenant's days and hours.",
        "trunk": "The tenant's trunk (ip:port), from provisioning.",
        "loaded_at": "When provisioning was loaded (the latest load wins).",
    },
}
"""Table -> column -> meaning."""


def list_columns(client: WarehouseClient) -> pd.DataFrame:
    """``table, column, type, description`` of every analyst-visible table, in table order
    and the columns' declared order."""
    rows = client.query(
        "SELECT concat(database, '.', table) AS qualified, name AS column, type "
        "FROM system.columns WHERE database = {db:String} AND table IN {tables:Array(String)} "
        "ORDER BY qualified, position",
        {"db": DATABASE, "tables": [t.split(".", 1)[1] for t in TABLE_DESCRIPTIONS]})
    order = list(TABLE_DESCRIPTIONS)
    frame = pd.DataFrame(rows, columns=["qualified", "column", "type"]) \
        .rename(columns={"qualified": "table"})
    frame["description"] = [COLUMN_DESCRIPTIONS.get(t, {}).get(c, "")
                            for t, c in zip(frame["table"], frame["column"], strict=True)]
    frame["_order"] = frame["table"].map(order.index)
    return frame.sort_values("_order", kind="stable").drop(columns="_order") \
        .reset_index(drop=True)


def list_tenants(client: WarehouseClient) -> list[str]:
    """Every tenant with calls, sorted (the sort key's first column: cheap)."""
    rows = client.query(f"SELECT DISTINCT tenant FROM {CDRS} ORDER BY tenant")
    return [str(r["tenant"]) for r in rows]
