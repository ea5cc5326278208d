"""Agent state and statistics stages (the rules live in folds.agent_state / agent_stats).

Two steps (run by :mod:`streams.runner`, declared in :mod:`streams.topology`):

1. ``agent-router`` reads ``tawag.call-events`` (keyed by call id) and re-sends each event
   once per extension it concerns, keyed ``tenant:agent``, to the internal repartition
   topic - Faust's ``group_by`` for one event -> several keys (an internal call concerns
   caller and callee). Undecodable input is skipped here: the CDR stage reading the same
   topic already dead-letters it.
2. ``agent-stats`` reads the repartition topic, folds each event into the agent's row of
   the agents table (co-partitioned: same key, same partition count) and sends the new
   state segments to ``tawag.agent-states`` and the changed interval rows to
   ``tawag.agent-stats``, keyed ``tenant:agent``.

Redelivery: the agent's row reaches the changelog before its records are sent, so a
worker killed in between gets the event again (offset not committed) and finds it folded.
A repeated event therefore sends the agent's current records around the event's time
again (``agent_state.resent_changes``: the segments from the event's time on;
``agent_stats.resent_stats``: the interval rows of its day) instead of nothing, which
would lose them. The
router is stateless: a redelivered event is re-keyed and sent again, and ends up a repeat
here.

The row is bounded (``folds.agent_state``): an event later than the lateness horizon is
counted without revising the timeline, or dropped when older than the late window; both
are logged here with the row's counters, and so is a row the size guard had to trim.

Each event writes the agent's new row (a dict, tens of KB for a busy agent) to the table.
Decoding that row again on the agent's next event was a third of the worker's time
(``bench/edge_load.py --profile``), so the decoded state is remembered next to the row
object it came from, and reused only while the table still holds *that very object*
(``is``): a row recovered from the changelog after a restart or a rebalance is another
object and is decoded afresh, so what the table holds stays the one truth.

Take-over: such a row may be older than the records its previous owner sent. Faust writes
the table through its send buffer, while records go to the Kafka client at once, so a
``kill -9`` can land records whose row never reached the changelog; the new owner folds
those events again (perhaps in another order, as Faust delivers around a restart), and
numbered by the row's own count its revisions would carry the orphans' versions, leaving
the warehouse to keep either (a CI run of test_kill_under_traffic: an agent's state ended
1 ms late for good). So a row decoded from the table is numbered from :func:`version_floor`
up (``agent_state.rebased``): whatever the new owner sends about a key supersedes the
orphans. ``tests/streams/test_take_over.py`` replays such crashes on a real run's
events (making the rows reach the changelog first instead - a flush before each send, or
Faust's ``take_events`` batches - stalled or lost events in test_kill_under_traffic).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from faust.types import CollectionT

from core.agent_records import AgentStateChange, AgentStats, record_to_json
from core.events import Event, InvalidEvent
from streams.agents.cdr import decode
from streams.folds.agent_state import (
    DEFAULT_CONFIG,
    Admission,
    AgentConfig,
    AgentState,
    admit,
    agent_keys,
    apply_admitted,
    rebased,
    resent_changes,
    row_size,
    state_changes,
    without_event,
)
from streams.folds.agent_stats import resent_stats, stats_changes

if TYPE_CHECKING:
    from streams.topology import Output

__all__ = ["ROUTER_NAME", "AGENT_NAME", "route_step", "step", "route", "fold_into"]

ROUTER_NAME = "agent-router"
AGENT_NAME = "agent-stats"

log = logging.getLogger(__name__)


def route_step(table: None, key: Any, value: Any) -> list[Output]:
    """agent-router: the event once per extension it concerns, keyed ``tenant:agent``."""
    return [("agent_events", agent.encode(), value) for agent in route(value)]


def step(agents: CollectionT, key: Any, value: Any,
         config: AgentConfig = DEFAULT_CONFIG) -> list[Output]:
    """agent-stats: fold the event into the agent's row; the changed segments go to
    ``agent_states``, the changed interval rows to ``agent_stats``."""
    key = key.decode() if isinstance(key, bytes) else str(key)
    changes, stats = fold_into(agents, key, decode(value), config)
    raw = key.encode()
    return ([("agent_states", raw, record_to_json(c)) for c in changes]
            + [("agent_stats", raw, record_to_json(r)) for r in stats])


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
    old = _state_of(key, row, config) if row is not None else AgentState(tenant, agent)
    admission = admit(old, event, config)
    if admission is Admission.UNRELATED:
        return [], []
    if admission is Admission.REPEAT:
        prior = without_event(old, event, config)
        return (resent_changes(old, event, config, prior),
                resent_stats(old, event, config, prior))
    new = apply_admitted(old, event, admission, config)
    _log_admission(admission, key, event, new)
    if new.trimmed > old.trimmed:
        log.warning("agent row %s over %d bytes: trimmed to %d (trimmed %d times so far)",
                    key, config.max_row_bytes, row_size(new), new.trimmed)
    changes, stats = state_changes(old, new, config), stats_changes(old, new, config)
    row = new.to_dict(prior=(old, row) if row is not None else None)
    agents[key] = row
    _DECODED[key, id(config)] = (row, config, new)
    return changes, stats


_DECODED: dict[tuple[str, int], tuple[dict[str, Any], AgentConfig, AgentState]] = {}
"""(``tenant:agent``, id of the config) -> (the row object this process last wrote, its
config, its state)."""


def _state_of(key: str, row: dict[str, Any], config: AgentConfig) -> AgentState:
    """The row's state: remembered if the table holds the very row written here last;
    otherwise decoded and taken over: numbered above any version sent before
    (:func:`version_floor`, ``agent_state.rebased``) and remembered as such."""
    cached = _DECODED.get((key, id(config)))
    if cached is not None and cached[0] is row and cached[1] is config:
        return cached[2]
    state = rebased(AgentState.from_dict(row, config), version_floor())
    _DECODED[key, id(config)] = (row, config, state)
    return state


def version_floor() -> int:
    """A version above any an earlier owner of a row can have sent: the time in units of
    100 ns. An owner numbers its revisions up from its own floor, one per event, and no
    agent's events come ten million a second, so a later owner's floor is higher."""
    return time.time_ns() // 100


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
