"""Faust tables of the stream processors, declared once per app.

The store is ``memory://`` (no RocksDB build on this platform), so every table lives in
RAM and is rebuilt from its compacted changelog topic (``tawag-streams-<name>-changelog``)
when a worker starts or takes over a partition. Values are JSON-able dicts/ints.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import CollectionT

from core.settings import Settings

__all__ = ["Tables", "declare_tables", "CALLS_TABLE", "DEAD_LETTERS_TABLE", "AGENTS_TABLE",
           "CALLBACKS_TABLE", "ROUTING_AGENTS_TABLE", "ROUTING_CONTACTS_TABLE",
           "ROUTING_CALLS_TABLE"]

CALLS_TABLE = "calls"
DEAD_LETTERS_TABLE = "dead-letters"
AGENTS_TABLE = "agents"
CALLBACKS_TABLE = "callbacks"
ROUTING_AGENTS_TABLE = "routing-agents"
ROUTING_CONTACTS_TABLE = "routing-contacts"
ROUTING_CALLS_TABLE = "routing-calls"


@dataclass(frozen=True)
class Tables:
    """The tables the agents write.

        tables = declare_tables(app, settings)
        state = tables.calls.get(call_id)          # CallState.to_dict() or None
        tables.dead_letters["tawag.call-events:0"] # messages dead-lettered from partition 0
    """

    calls: CollectionT
    """Call id -> :meth:`streams.folds.cdr.CallState.to_dict` (co-partitioned with events)."""
    dead_letters: CollectionT
    """``<topic>:<partition>`` -> messages sent to the dead-letter topic from there.

    Keyed per partition because a table row lives in the changelog partition of the
    message that wrote it; one key written from several partitions would not recover."""
    agents: CollectionT
    """``tenant:agent`` -> :meth:`streams.folds.agent_state.AgentState.to_dict`
    (co-partitioned with the agent-events repartition topic)."""
    callbacks: CollectionT
    """``tenant:client`` -> :meth:`streams.folds.callbacks.CallbackState.to_dict`
    (co-partitioned with the callback-cdrs repartition topic)."""
    routing_agents: CollectionT
    """``tenant:agent`` -> the agent's routing fact JSON (co-partitioned with
    ``tawag.agent-states``)."""
    routing_contacts: CollectionT
    """``tenant:phone`` -> every CRM's latest lookup of the client (co-partitioned with
    the contact-lookups repartition topic)."""
    routing_calls: CollectionT
    """``tenant:agent`` -> the agent's calls-today fact JSON (co-partitioned with
    ``tawag.agent-stats``)."""


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    """Declare the tables; partitions match the call-events topic (Faust requires it)."""
    # Keys and values are JSON in the changelog. The calls table must not say
    # ``value_type=dict``: Faust would then read each changelog value back as a Faust
    # model (``dict.from_data``) and recovery would fail; untyped JSON comes back as a dict.
    return Tables(
        calls=app.Table(
            CALLS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="Call state (CallState.to_dict) by call id",
        ),
        dead_letters=app.Table(
            DEAD_LETTERS_TABLE, key_type=str, value_type=int, default=int,
            partitions=settings.topic_partitions, help="Dead-lettered messages by topic:partition",
        ),
        agents=app.Table(
            AGENTS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="Agent state (AgentState.to_dict) by tenant:agent",
        ),
        callbacks=app.Table(
            CALLBACKS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="Client calls for callbacks (CallbackState.to_dict) by tenant:client",
        ),
        routing_agents=app.Table(
            ROUTING_AGENTS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="Agent routing fact (core.routing JSON) by tenant:agent",
        ),
        routing_contacts=app.Table(
            ROUTING_CONTACTS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="CRM lookups of a client by tenant:phone",
        ),
        routing_calls=app.Table(
            ROUTING_CALLS_TABLE, key_type=str, partitions=settings.topic_partitions,
            help="Agent calls-today fact (core.routing JSON) by tenant:agent",
        ),
    )
