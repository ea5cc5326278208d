"""The webhook worker's Kafka loop: tawag.call-events and tawag.cdrs -> :class:`Webhooks`.

As the CRM connectors' loop (connectors/consume.py): offsets are committed only after the
batch is in the outbox (fsynced), so a crash re-reads it and the outbox's keys drop the
repeats. Its own consumer group, so it reads every event whatever the connectors do.
The same records tie ``POST /calls`` originations to their calls (:mod:`api.originations`),
and once a second the loop expires those no call followed in time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from api.originations import Originations
from api.webhooks import Webhooks
from core.events import InvalidEvent, from_json
from core.kafka_group import commit_journalled, group_consumer
from core.records import cdr_from_json
from core.settings import Settings

__all__ = ["CONSUMER_GROUP", "consume", "handle_record", "make_consumer"]

log = logging.getLogger("tawag.api.webhooks")

CONSUMER_GROUP = "tawag-webhooks"
EXPIRY_INTERVAL_S = 1.0
"""How often unclaimed originations are looked for (their windows are seconds long)."""


def handle_record(hooks: Webhooks, settings: Settings, record: Any,
                  originations: Originations | None = None) -> None:
    """Decode one record of either topic and fan it out; skip malformed ones."""
    try:
        if record.topic == settings.topic_cdrs:
            cdr = cdr_from_json(record.value)
            if originations is not None:
                originations.handle_cdr(cdr)
            hooks.handle_cdr(cdr)
        else:
            event = from_json(record.value)
            if originations is not None:
                originations.handle_event(event)
            hooks.handle_event(event)
    except (InvalidEvent, ValueError, KeyError, TypeError) as exc:
        # malformed input was already dead-lettered upstream; skip it here
        log.error("skipped %s offset %s: %s", record.topic, record.offset, exc)


def make_consumer(settings: Settings) -> Any:
    return group_consumer(settings, CONSUMER_GROUP, settings.api_instance_id,
                          [settings.topic_call_events, settings.topic_cdrs],
                          fetch_max_wait_ms=20)


def consume(consumer: Any, hooks: Webhooks, settings: Settings, *,
            stop: threading.Event, originations: Originations | None = None,
            clock: Callable[[], float] = time.time) -> None:
    """Poll until ``stop``; commit after each batch is journalled."""
    next_expiry = 0.0
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=100)
        for records in batch.values():
            for record in records:
                handle_record(hooks, settings, record, originations)
        if batch:
            commit_journalled(consumer)
        if originations is not None and clock() >= next_expiry:
            originations.expire(clock())
            next_expiry = clock() + EXPIRY_INTERVAL_S
