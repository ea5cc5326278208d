"""Runs a :class:`streams.topology.Stage` as a Faust agent: one loop for every stage.

Per message: ``stage.step(table, key, value)``, then each returned message is sent to its
topic. A message the step cannot process (bad input or a fold bug) goes to the
dead-letter topic with the stage, where it came from, the reason and its exact bytes, and
is counted per source partition; the partition goes on with the next message (the way
wazo-call-logd isolates one failing call). This is the only dead-letter path of the
stream processors.

Start-up: a table's changelog topic is created when the worker starts, and the consumer's
metadata may not list its partitions until its next refresh (``consumer_metadata_max_age_ms``);
until then Faust's partition check (``PartitionsMismatch``: "the changelog topic has 0
partitions") fails every write to the table. That is no fault of the message: the stage
waits for the metadata (at most :data:`METADATA_WAIT_S`) and steps the same message again,
instead of dead-lettering the first events of a fresh stack (the agents' registrations).

Redelivery: a stage's table row reaches the changelog before its outputs are sent, so a
worker killed in between gets the message again (offset not committed); each step then
sends its current records again instead of nothing (see the stage modules).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.exceptions import PartitionsMismatch
from faust.types import AgentT, EventT, StreamT

from core.events import InvalidEvent
from streams import metrics
from streams.tables import Tables
from streams.topics import Topics
from streams.topology import Output, Stage

__all__ = ["METADATA_WAIT_S", "register", "dead_letter_record"]

log = logging.getLogger(__name__)

METADATA_WAIT_S = 60.0
"""How long a stage waits for its changelog's partitions to show in the consumer's
metadata (several refreshes) before it treats the failure as the message's."""
METADATA_POLL_S = 0.5


def register(app: faust.App, topics: Topics, tables: Tables, stage: Stage) -> AgentT:
    """Declare ``stage`` as an agent on ``app``; it yields what it sent (for tests)."""
    table = getattr(tables, stage.table) if stage.table else None

    async def run(stream: StreamT) -> AsyncIterator[Any]:
        async for event in stream.events():
            metrics.received(stage.name, event)
            try:
                outputs: list[Output] = await _step(stage, table, event)
            except Exception as exc:  # bad input or a fold bug: park it, keep going
                yield await _dead_letter(topics, tables, stage, event, exc)
                continue
            for topic, key, value in outputs:
                await getattr(topics, topic).send(key=key, value=value)
                metrics.sent(stage.name, topic)
            yield outputs

    run.__doc__ = f"Stage {stage.name}: {stage.source} -> {stage.table or 'router'}."
    return app.agent(getattr(topics, stage.source), name=stage.name)(run)


async def _step(stage: Stage, table: Any, event: EventT) -> list[Output]:
    """``stage.step`` on the event, stepped again while the table's changelog is not in the
    consumer's metadata yet (module docstring: start-up)."""
    deadline = time.monotonic() + METADATA_WAIT_S
    while True:
        try:
            return stage.step(table, event.key, event.value)
        except PartitionsMismatch:
            if not _changelog_pending(table) or time.monotonic() > deadline:
                raise
            log.warning("%s waits for the partitions of %s in the consumer's metadata",
                        stage.name, table.changelog_topic_name)
            await asyncio.sleep(METADATA_POLL_S)


def _changelog_pending(table: Any) -> bool:
    """Whether the consumer does not know the table's changelog partitions yet (a topic
    just created reads as 0 partitions until the next metadata refresh)."""
    return table is not None and not table.app.consumer.topic_partitions(
        table.changelog_topic_name)


async def _dead_letter(topics: Topics, tables: Tables, stage: Stage, event: EventT,
                       exc: Exception) -> dict[str, Any]:
    msg = event.message
    record = dead_letter_record(msg.topic, msg.partition, msg.offset, msg.key, event.value,
                                exc, stage=stage.name)
    if not isinstance(exc, InvalidEvent):
        log.exception("%s failed on %s[%s]@%s", stage.name, msg.topic, msg.partition,
                      msg.offset)
    log.warning("%s dead-lettered %s[%s]@%s: %s", stage.name, msg.topic, msg.partition,
                msg.offset, record["error"])
    tables.dead_letters[f"{msg.topic}:{msg.partition}"] += 1
    value = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    await topics.dead_letter.send(key=msg.key, value=value)
    metrics.DEAD_LETTERS.labels(stage.name).inc()
    metrics.sent(stage.name, "dead_letter")
    return record


def dead_letter_record(topic: str, partition: int, offset: int, key: Any, value: Any,
                       exc: Exception, *, stage: str = "") -> dict[str, Any]:
    """The dead-letter JSON: which stage, where the message came from, why, and its bytes."""
    error = str(exc) if isinstance(exc, InvalidEvent) else f"{type(exc).__name__}: {exc}"
    text, encoding = _as_text(value)
    return {
        "stage": stage,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key": _as_text(key)[0],
        "error": error,
        "value": text,
        "value_encoding": encoding,
    }


def _as_text(raw: Any) -> tuple[str | None, str]:
    """UTF-8 text when possible, else base64, so the exact bytes can be replayed."""
    if raw is None or isinstance(raw, str):
        return raw, "utf-8"
    if not isinstance(raw, bytes):
        return repr(raw), "repr"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
