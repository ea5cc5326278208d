"""The Kafka loop of the connectors worker: tawag.call-events and tawag.cdrs -> SyncWorker.

Offsets are committed only after the batch's CDRs are in the outbox (fsynced), so a
crash re-reads them and the outbox's keys drop the repeats. Once a second the loop
finishes click-to-calls that no call followed in time.

    consume(consumer, worker, settings, stop=stop, on_assigned=http.ready.set)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from connectors.sync import SyncWorker
from connectors.tenants import TenantWorkers
from core.events import InvalidEvent, from_json
from core.kafka_group import commit_journalled
from core.records import cdr_from_json
from core.settings import Settings

__all__ = ["consume", "handle_record"]

log = logging.getLogger("tawag.connectors")

EXPIRY_INTERVAL_S = 1.0
"""How often unclaimed click-to-calls are looked for (their deadlines are seconds long)."""


def handle_record(worker: SyncWorker | TenantWorkers, settings: Settings, record: Any) -> None:
    """Decode one record of either topic and hand it to the worker; skip malformed ones."""
    try:
        if record.topic == settings.topic_cdrs:
            worker.handle_cdr(cdr_from_json(record.value))
        else:
            worker.handle_event(from_json(record.value))
    except (InvalidEvent, ValueError, KeyError, TypeError) as exc:
        # Malformed input was already dead-lettered upstream; skip it here.
        log.error("skipped %s offset %s: %s", record.topic, record.offset, exc)


def consume(consumer: Any, worker: SyncWorker | TenantWorkers, settings: Settings, *,
            stop: threading.Event,
            on_assigned: Callable[[], None] = lambda: None,
            clock: Callable[[], float] = time.time) -> None:
    """Poll until ``stop``; ``on_assigned`` is called while the consumer holds partitions."""
    assigned: set[Any] = set()
    next_expiry = 0.0
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=100)
        if consumer.assignment() != assigned:
            assigned = set(consumer.assignment())
            log.info("consuming %d partitions of %s, %s", len(assigned),
                     settings.topic_call_events, settings.topic_cdrs)
        if assigned:
            on_assigned()
        for records in batch.values():
            for record in records:
                handle_record(worker, settings, record)
        if batch:
            commit_journalled(consumer)
        if clock() >= next_expiry:
            worker.expire_click_to_calls(clock())
            next_expiry = clock() + EXPIRY_INTERVAL_S
