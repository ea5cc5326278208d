"""The stream agents in Faust's test context: no broker, memory store.

The app is built as in production except that every output topic (and the repartition
topics the routers write) is an in-memory channel, so a test reads back the very keys and
JSON an agent sent instead of patching ``Topic.send``. ``recover`` rebuilds a table from
its changelog codec, as a restarted worker does.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from faust.types import Message

from core.settings import Settings
from streams.app import Streams, build_streams, new_app
from streams.topics import declare_topics

OUTPUTS = ("cdrs", "dead_letter", "agent_events", "agent_states", "agent_stats",
           "callback_cdrs", "callbacks", "contact_lookups", "routing")
"""Every topic an agent writes, by its field name in :class:`streams.topics.Topics`."""

Sent = list[tuple[bytes, bytes]]


def streams_on_channels(settings: Settings) -> Streams:
    """The production app with each of :data:`OUTPUTS` an in-memory channel."""
    app = new_app(settings)
    channels = {name: app.channel() for name in OUTPUTS}
    return build_streams(app, settings,
                         topics=replace(declare_topics(app, settings), **channels))


def deliver(streams: Streams, agent: str, messages: list[tuple[bytes | None, Any]]
            ) -> list[dict[str, Sent]]:
    """Run ``messages`` through ``agent`` (a fresh worker); what each one sent, per topic."""

    async def go() -> list[dict[str, Sent]]:
        clones = {name: getattr(streams.topics, name).clone(is_iterator=True)
                  for name in OUTPUTS}
        sent = []
        async with streams.agents[agent].test_context() as running:
            for key, value in messages:
                await running.put(value, key=key)  # returns once the agent yielded for it
                sent.append({name: _drain(ch) for name, ch in clones.items()})
        return sent

    return asyncio.run(go())


def run(streams: Streams, agent: str, messages: list[tuple[bytes | None, Any]]
        ) -> dict[str, Sent]:
    """Everything ``agent`` sent for ``messages``, per topic, in order."""
    out: dict[str, Sent] = {name: [] for name in OUTPUTS}
    for sent in deliver(streams, agent, messages):
        for name, records in sent.items():
            out[name] += records
    return out


def _drain(channel: Any) -> Sent:
    out = []
    while not channel.queue.empty():
        event = channel.queue.get_nowait()
        out.append((event.key, event.value))
    return out


async def recover(table: Any, rows: dict[str, Any]) -> None:
    """Replay ``rows`` through the table's changelog codec, as Faust's recovery does."""
    topic = table.changelog_topic
    events = []
    for offset, (key, value) in enumerate(rows.items()):
        raw_key, _ = topic.prepare_key(key, table.key_serializer)
        raw_value, _ = topic.prepare_value(value, table.value_serializer)
        message = Message(topic=topic.get_topic_name(), partition=0, offset=offset,
                          timestamp=0.0, timestamp_type=0, headers=[], key=raw_key,
                          value=raw_value, checksum=None)
        events.append(await topic.decode(message, propagate=True))
    table.apply_changelog_batch(events)
