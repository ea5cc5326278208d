"""The stream topology, declared once: which stage reads which topic, folds into which
table and writes what. The Faust worker (:mod:`streams.app`) and ``tawag replay`` both run
:func:`stages`, so a stage added here is in both, or in neither.

    for stage in stages(agent_config, callback_config):
        outputs = stage.step(table_or_None, key, value)   # [(topic field, key, value), ...]

A step is a plain function of one message: it decodes the value, folds it into its
table row (if it has a table) and returns the messages to send, named by their field in
:class:`streams.topics.Topics`. It raises on input it cannot process; the runner then
sends the message to the dead-letter topic with the reason (one path for every stage,
:mod:`streams.runner`). Flow order::

    call_events --cdr-assembly----> cdrs --callback-router--> callback_cdrs --callbacks--> callbacks
    call_events --agent-router----> agent_events --agent-stats--> agent_states, agent_stats

and, live only (:func:`routing_stages`: routing facts describe now, so replay, which
rebuilds history, does not run them)::

    agent_states --routing-agents--> routing
    agent_stats --routing-calls--> routing
    crm_contacts --routing-contacts-router--> contact_lookups --routing-contacts--> routing
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from streams.agents import agent_stats, callbacks, cdr, routing
from streams.folds.agent_state import DEFAULT_CONFIG, AgentConfig
from streams.folds.callbacks import CallbackConfig

__all__ = ["Output", "Stage", "Step", "stages", "routing_stages"]

Output = tuple[str, bytes, bytes]
"""One message to send: (field of :class:`streams.topics.Topics`, key, value)."""

Step = Callable[[MutableMapping[str, Any] | None, Any, Any], list[Output]]
"""(table or None, message key, message value) -> the messages to send."""


@dataclass(frozen=True)
class Stage:
    key: str
    """Its name in :attr:`streams.app.Streams.agents` (and in the tests)."""
    name: str
    """The Faust agent's name (its consumer and log name)."""
    source: str
    """The field of :class:`streams.topics.Topics` it reads."""
    table: str | None
    """The field of :class:`streams.tables.Tables` it folds into; None for a router."""
    outputs: tuple[str, ...]
    """The fields of :class:`streams.topics.Topics` its step may write."""
    step: Step


def stages(agent_config: AgentConfig, callback_config: CallbackConfig) -> tuple[Stage, ...]:
    """Every stage, in flow order (an upstream stage before the stages reading its output)."""
    return (
        Stage("cdr", cdr.AGENT_NAME, "call_events", "calls", ("cdrs",), cdr.step),
        Stage("agent_router", agent_stats.ROUTER_NAME, "call_events", None,
              ("agent_events",), agent_stats.route_step),
        Stage("agent_stats", agent_stats.AGENT_NAME, "agent_events", "agents",
              ("agent_states", "agent_stats"), partial(agent_stats.step, config=agent_config)),
        Stage("callback_router", callbacks.ROUTER_NAME, "cdrs", None,
              ("callback_cdrs",), partial(callbacks.route_step, config=callback_config)),
        Stage("callbacks", callbacks.AGENT_NAME, "callback_cdrs", "callbacks",
              ("callbacks",), partial(callbacks.step, config=callback_config)),
    )


def routing_stages(agent_config: AgentConfig = DEFAULT_CONFIG) -> tuple[Stage, ...]:
    """The stages that keep the edge's live routing facts (:mod:`streams.agents.routing`)."""
    return (
        Stage("routing_agents", routing.AGENTS_NAME, "agent_states", "routing_agents",
              ("routing",), routing.agent_step),
        Stage("routing_calls", routing.CALLS_NAME, "agent_stats", "routing_calls",
              ("routing",), partial(routing.calls_step, config=agent_config)),
        Stage("routing_contacts_router", routing.CONTACTS_ROUTER_NAME, "crm_contacts", None,
              ("contact_lookups",), routing.contact_route_step),
        Stage("routing_contacts", routing.CONTACTS_NAME, "contact_lookups", "routing_contacts",
              ("routing",), routing.contact_step),
    )
