"""The Kafka topics the stream processors read and write, declared once per app.

All three carry JSON bytes that :mod:`ingest.events` and :mod:`streams.records` encode, so
Faust passes them through untouched (``raw``) instead of re-serialising them. Keys are
the call id as UTF-8, which keeps each call on one partition next to its table rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import ChannelT

from tawag.settings import Settings

__all__ = ["Topics", "declare_topics"]


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


def _topic(app: faust.App, name: str, settings: Settings) -> ChannelT:
    """One raw-bytes topic with the stack's partition count (single-node replication)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=1,
    )


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the call-events, CDR and dead-letter topics named in ``settings``."""
    return Topics(
        call_events=_topic(app, settings.topic_call_events, settings),
        cdrs=_topic(app, settings.topic_cdrs, settings),
        dead_letter=_topic(app, settings.topic_dead_letter, settings),
    )
