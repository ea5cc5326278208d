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

The row is bounded (``folds.agent_state``): an event later than the lateness horizon is
counted without revising the timeline, or dropped when older than the late window; both
are logged here with the row's counters, and so is a row the size guard had to trim.
Nothing is cached between events: each event decodes the agent's row from the table (a
few KB) and writes the new one, so a rebalance or a restart changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, CollectionT, StreamT

from ingest.events import Event, InvalidEvent
from streams.agent_records import AgentStateChange, AgentStats, record_to_json
from streams.agents.cdr import decode
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    Admission,
    AgentConfig,
    AgentState,
    admit,
    agent_keys,
    apply,
    resent_changes,
    row_size,
    state_changes,
    without_event,
)
from streams.folds.agent_stats import resent_stats, stats_changes
from streams.tables import Tables
from streams.topics import Topics

__all__ = ["ROUTER_NAME", "AGENT_NAME", "register", "route", "fold_into"]

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


def fold_into(agents: CollectionT, key: str, event: Event,
              config: AgentConfig = DEFAULT_CONFIG,
              ) -> tuple[list[AgentStateChange], list[AgentStats]]:
    """Fold ``event`` into the agent's row; the segments and interval rows it changed, or,
    for a repeated event, the current ones it concerns again (module docstring)."""
    tenant, _, agent = key.partition(":")
    row = agents.get(key)
    old = AgentState.from_dict(row, config) if row is not None else AgentState(tenant, agent)
    admission = admit(old, event, config)
    if admission is Admission.UNRELATED:
        return [], []
    if admission is Admission.REPEAT:
        prior = without_event(old, event, config)
        return (resent_changes(old, event, config, prior),
                resent_stats(old, event, config, prior))
    new = apply(old, event, config)
    _log_admission(admission, key, event, new)
    if new.trimmed > old.trimmed:
        log.warning("agent row %s over %d bytes: trimmed to %d (trimmed %d times so far)",
                    key, config.max_row_bytes, row_size(new), new.trimmed)
    changes, stats = state_changes(old, new, config), stats_changes(old, new, config)
    agents[key] = new.to_dict()
    return changes, stats


def _log_admission(admission: Admission, key: str, event: Event, new: AgentState) -> None:
    """A late event is worth a line: counted late, or dropped (with the row's counters)."""
    if admission in (Admission.FINISHED, Admission.TOO_LATE):
        log.warning("agent %s: %s event %s (%s at %s) dropped, newest event %s; %d dropped",
                    key, admission.value, event.event_id, event.type.value,
                    event.ts.isoformat(), new.newest, new.dropped)
    elif admission is Admission.LATE:
        log.info("agent %s: event %s at %s later than the horizon (newest %s), counted "
                 "without revising the timeline; %d late", key, event.event_id,
                 event.ts.isoformat(), new.newest, new.late)
