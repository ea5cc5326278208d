"""Named queries of the wallboard: the calls happening now and the agents' current states.

*Live* calls are the tenant's CDRs (FINAL: latest revision) that are not closed yet and
started at or after ``since`` (a call whose end never arrived would otherwise stay
"live" for ever; the page asks for the last few hours). A live call is **ringing**
until it is answered (``answered_at`` not set) and **talking** after.

An agent's **current state** is its open state segment in ``tawag.agent_states``
(FINAL, retracted segments skipped): ``until`` not set yet. Agents with no open
segment are not counted (the stream closes a segment only when the next one opens).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from warehouse.client import WarehouseClient
from warehouse.queries.window import day_bounds
from warehouse.schema import AGENT_STATES, CDRS

__all__ = ["AGENT_STATES_ORDER", "live_summary", "live_calls", "agents_by_state"]

AGENT_STATES_ORDER = ("available", "ringing", "on_call", "wrap_up", "offline")
"""States in the order the wallboard shows them (the agent fold's vocabulary)."""

_LIVE = (f"tenant = {{tenant:String}} AND {day_bounds('since')} AND NOT closed "
         "AND started_at >= {since:DateTime64(3, 'UTC')}")


def live_summary(client: WarehouseClient, tenant: str, since: datetime) -> dict[str, int]:
    """``ringing`` and ``talking`` calls now (not closed, started at or after ``since``)."""
    rows = client.query(
        "SELECT countIf(answered_at IS NULL) AS ringing, "
        f"countIf(answered_at IS NOT NULL) AS talking FROM {CDRS} FINAL WHERE {_LIVE}",
        {"tenant": tenant, "since": since})
    return {key: int(value) for key, value in rows[0].items()}


def live_calls(client: WarehouseClient, tenant: str, since: datetime,
               limit: int = 100) -> pd.DataFrame:
    """The live calls, oldest first: ``started_at, caller, callee, did, agent, state``
    (``ringing`` / ``talking``), ``ring_ms`` so far is not known (the CDR has it at the end)."""
    return client.query_df(
        "SELECT started_at, caller, callee, did, agent, "
        "if(answered_at IS NULL, 'ringing', 'talking') AS state, answered_at "
        f"FROM {CDRS} FINAL WHERE {_LIVE} ORDER BY started_at, call_id LIMIT {{limit:UInt32}}",
        {"tenant": tenant, "since": since, "limit": limit})


def agents_by_state(client: WarehouseClient, tenant: str) -> dict[str, Any]:
    """Agents per current state, every state of :data:`AGENT_STATES_ORDER` present (0 if none)."""
    rows = client.query(
        "SELECT state, uniqExact(agent) AS agents "
        f"FROM {AGENT_STATES} FINAL WHERE tenant = {{tenant:String}} AND NOT deleted "
        "AND until IS NULL GROUP BY state",
        {"tenant": tenant})
    counts = dict.fromkeys(AGENT_STATES_ORDER, 0)
    counts.update({r["state"]: int(r["agents"]) for r in rows})
    return counts
