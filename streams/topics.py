"""The Kafka topics the stream processors read and write, declared once per app.

All carry JSON bytes that :mod:`core.events`, :mod:`core.records` and
:mod:`core.agent_records` encode, so Faust passes them through untouched (``raw``)
instead of re-serialising them. Keys are UTF-8: the call id for call events and CDRs,
``tenant:agent`` for the agent topics, ``tenant:client`` for callbacks, which keeps each
key on one partition next to its table rows.

The agent and callback outputs have no settings fields yet; their names are the
``*_TOPIC`` constants below (to become ``settings.topic_agent_states`` & co.). The two
``*-repartition`` topics are internal: the app re-keys call events by agent and CDRs by
client through them (Faust's ``group_by``, generalised to one event -> several keys,
because an internal call concerns two extensions).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import ChannelT

from core.settings import Settings

__all__ = [
    "Topics",
    "contiguous_sources",
    "declare_topics",
    "AGENT_EVENTS_REPARTITION",
    "CALLBACK_CDRS_REPARTITION",
    "CONTACT_LOOKUPS_REPARTITION",
    "CRM_CONTACTS_PARTITIONS",
    "ROUTING_PARTITIONS",
]

AGENT_EVENTS_REPARTITION = "tawag-streams-agent-events-repartition"
"""Internal: call and agent events re-keyed ``tenant:agent`` (one copy per extension)."""
CALLBACK_CDRS_REPARTITION = "tawag-streams-callback-cdrs-repartition"
"""Internal: CDR revisions of calls with a client, re-keyed ``tenant:client``."""
CONTACT_LOOKUPS_REPARTITION = "tawag-streams-contact-lookups-repartition"
"""Internal: CRM contact lookups re-keyed ``tenant:phone`` (the stack's partition count)."""
CRM_CONTACTS_PARTITIONS = 1
"""``tawag.crm-contacts`` is read whole by routing (:func:`tawag.kafka.topic_specs`)."""
ROUTING_PARTITIONS = 1
"""``tawag.routing`` is small and read whole by the edge's one applier."""


@dataclass(frozen=True)
class Topics:
    """Where the agents read and write; tests swap outputs for in-memory ``app.channel()``s.

        topics = declare_topics(app, settings)
        await topics.cdrs.send(key=b"1-2345@127.0.0.1", value=cdr_to_json(cdr))
    """

    call_events: ChannelT
    """``tawag.call-events``: schema-v1 events keyed by call id (written by ingest)."""
    cdrs: ChannelT
    """``tawag.cdrs``: CDR revisions keyed by call id (read by the warehouse loader)."""
    dead_letter: ChannelT
    """``tawag.dead-letter``: input we could not process, with the reason."""
    agent_events: ChannelT
    """Internal repartition topic: events keyed ``tenant:agent`` (read by agent stats)."""
    agent_states: ChannelT
    """``tawag.agent-states``: state segments keyed ``tenant:agent``."""
    agent_stats: ChannelT
    """``tawag.agent-stats``: interval statistics keyed ``tenant:agent``."""
    callback_cdrs: ChannelT
    """Internal repartition topic: CDR revisions keyed ``tenant:client``."""
    callbacks: ChannelT
    """``tawag.callbacks``: callback item revisions keyed ``tenant:client``."""
    crm_contacts: ChannelT
    """``tawag.crm-contacts``: the connectors' contact lookups keyed ``tenant:phone:crm``
    (one partition), read by routing."""
    contact_lookups: ChannelT
    """Internal repartition topic: CRM contact lookups keyed ``tenant:phone``."""
    routing: ChannelT
    """``tawag.routing``: routing facts keyed by fact (:mod:`core.routing`), for the edge."""


def _topic(app: faust.App, name: str, settings: Settings, *,
           internal: bool = False, partitions: int | None = None) -> ChannelT:
    """One raw-bytes topic with the stack's partition count (single-node replication)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions or settings.topic_partitions,
        replicas=1,
        internal=internal,
    )


def contiguous_sources(topics: Topics) -> frozenset[str]:
    """The topics the stages read whose offsets have no holes: never compacted and written
    without transactions (:func:`tawag.kafka.topic_specs`; the repartition topics are
    Faust's, delete-only). A jump in what the consumer hands over from one of these is a
    skip, never a compacted-away record (:func:`streams.commit_watch.hold_skips`);
    ``tawag.cdrs`` and ``tawag.crm-contacts`` are compacted and not listed."""
    return frozenset(name for t in (
        topics.call_events, topics.agent_events, topics.agent_states, topics.agent_stats,
        topics.callback_cdrs, topics.contact_lookups)
        for name in getattr(t, "topics", ()))  # a test's in-memory channel has none


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the topics named in ``settings`` and the internal repartition topics."""
    return Topics(
        call_events=_topic(app, settings.topic_call_events, settings),
        cdrs=_topic(app, settings.topic_cdrs, settings),
        dead_letter=_topic(app, settings.topic_dead_letter, settings),
        agent_events=_topic(app, AGENT_EVENTS_REPARTITION, settings, internal=True),
        agent_states=_topic(app, settings.topic_agent_states, settings),
        agent_stats=_topic(app, settings.topic_agent_stats, settings),
        callback_cdrs=_topic(app, CALLBACK_CDRS_REPARTITION, settings, internal=True),
        callbacks=_topic(app, settings.topic_callbacks, settings),
        crm_contacts=_topic(app, settings.crm_topic_contacts, settings,
                            partitions=CRM_CONTACTS_PARTITIONS),
        contact_lookups=_topic(app, CONTACT_LOOKUPS_REPARTITION, settings, internal=True),
        routing=_topic(app, settings.topic_routing, settings, partitions=ROUTING_PARTITIONS),
    )
