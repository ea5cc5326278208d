"""Agent state and statistics agents (the rules live in folds.agent_state / agent_stats).

Two thin loops:

1. ``agent-router`` reads ``tawag.call-events`` (keyed by call id) and re-sends each event
   once per extension it concerns, keyed ``tenant:agent``, to the internal repartition
   topic - Faust's ``group_by`` for one event -> several keys (an internal call concerns
   caller and callee). Undecodable input is skipped here: the CDR agent reading the same
   topic already dead-letters it.
2. ``agent-stats`` reads the repartition topic, folds each event into the agent's row of
   the agents table (co-partitioned: same key, same partition count) and sends the new
   state segments to ``tawag.agent-states`` and the changed interval rows to
   ``tawag.agent-stats``, keyed ``tenant:agent``.

Redelivery: the agent's row reaches the changelog before its records are sent, so a
worker killed in between gets the event again (offset not committed) and finds it folded.
A repeated event therefore sends the agent's current records around the event's time
again (``agent_state.resent_changes``, ``agent_stats.resent_stats``: from the start of the
day holding it, not the whole history) instead of nothing, which would lose them. The
router is stateless: a redelivered event is re-keyed and sent again, and ends up a repeat
here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, CollectionT, StreamT

from ingest.events import Event, InvalidEvent
from streams.agent_records import AgentStateChange, AgentStats, record_to_json
from streams.agents.cdr import decode
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    AgentConfig,
    AgentState,
    agent_keys,
    apply,
    resent_changes,
    round_trips,
    state_changes,
    without_event,
)
from streams.folds.agent_stats import resent_stats, stats_changes
from streams.tables import Tables
from streams.topics import Topics

__all__ = ["ROUTER_NAME", "AGENT_NAME", "register", "route", "fold_into", "DecodedStates"]

ROUTER_NAME = "agent-router"
AGENT_NAME = "agent-stats"

log = logging.getLogger(__name__)


def register(app: faust.App, topics: Topics, tables: Tables,
             config: AgentConfig = DEFAULT_CONFIG) -> dict[str, AgentT]:
    """Declare the router and the per-agent fold on ``app``; each yields what it sent."""

    @app.agent(topics.call_events, name=ROUTER_NAME)
    async def route_to_agents(stream: StreamT) -> AsyncIterator[Any]:
        """Re-key every call/agent event by each extension it concerns."""
        async for event in stream.events():
            keys = route(event.value)
            for key in keys:
                await topics.agent_events.send(key=key.encode(), value=event.value)
            yield keys

    @app.agent(topics.agent_events, name=AGENT_NAME)
    async def fold_agents(stream: StreamT) -> AsyncIterator[Any]:
        """Fold events into the agent's state; publish changed segments and intervals."""
        async for event in stream.events():
            key = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
            try:
                changes, stats = fold_into(tables.agents, key, decode(event.value), config)
            except Exception:  # a fold bug must not stall the partition
                log.exception("agent fold failed for %s", key)
                yield None
                continue
            for change in changes:
                await topics.agent_states.send(key=key.encode(), value=record_to_json(change))
            for row in stats:
                await topics.agent_stats.send(key=key.encode(), value=record_to_json(row))
            yield changes, stats

    return {"agent_router": route_to_agents, "agent_stats": fold_agents}


def route(value: Any) -> list[str]:
    """The ``tenant:agent`` keys a raw call-events message goes to ([] if undecodable)."""
    try:
        return agent_keys(decode(value))
    except InvalidEvent:
        return []


class DecodedStates:
    """Decoded agent states by key, each valid only while the table holds the very row it
    was decoded from or written as.

    Decoding a row costs O(kept history) (JSON to events, then the derived timeline); the
    fold itself costs what the event changes. The table stays the source of truth: after a
    rebalance or a restart Faust puts rows rebuilt from the changelog (new objects) in the
    table, so the identity check misses and the row is decoded again. The accepted count
    and the number of events also have to agree, against a row edited in place.
    """

    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self._states: OrderedDict[str, tuple[dict[str, Any], AgentState]] = OrderedDict()
        self.decoded = 0
        """Rows decoded so far (misses): a fold that hits the cache decodes nothing."""

    def state(self, key: str, row: dict[str, Any]) -> AgentState:
        """The state of ``row`` (the table's value for ``key``), decoded only on a miss."""
        hit = self._states.get(key)
        if (hit is not None and hit[0] is row and row.get("accepted") == hit[1].accepted
                and len(row.get("events", ())) == len(hit[1].events)):
            self._states.move_to_end(key)
            return hit[1]
        self.decoded += 1
        return AgentState.from_dict(row)

    def remember(self, key: str, row: dict[str, Any], state: AgentState) -> None:
        self._states[key] = (row, state)
        self._states.move_to_end(key)
        while len(self._states) > self.max_keys:
            self._states.popitem(last=False)


DECODED = DecodedStates()
"""The process's cache (Faust worker or replay): one decoded state per recent agent."""


def fold_into(agents: CollectionT, key: str, event: Event,
              config: AgentConfig = DEFAULT_CONFIG, decoded: DecodedStates = DECODED,
              ) -> tuple[list[AgentStateChange], list[AgentStats]]:
    """Fold ``event`` into the agent's row; the segments and interval rows it changed, or,
    for a repeated event, the current ones it concerns again (module docstring)."""
    tenant, _, agent = key.partition(":")
    row = agents.get(key)
    old = decoded.state(key, row) if row is not None else AgentState(tenant, agent)
    new = apply(old, event, config)
    if new is old:
        if row is not None:
            decoded.remember(key, row, old)
        if row is None or not old.has(event.event_id):
            return [], []  # unrelated or too old: the first delivery sent nothing either
        prior = without_event(old, event, config)
        return (resent_changes(old, event, config, prior),
                resent_stats(old, event, config, prior))
    changes, stats = state_changes(old, new, config), stats_changes(old, new, config)
    row = new.to_dict()
    agents[key] = row
    if round_trips(new, event):  # else the next fold must see the event as the table has it
        decoded.remember(key, row, new)
    return changes, stats
