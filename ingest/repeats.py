"""Which events the bridge has already published, so the edge's resend adds nothing.

Each time an evapi client connects, the edge sends again the last ``evapi_resend`` events
it sent before (kamailio.cfg route[EVAPI_DRAIN]): a bridge that died may have held them
unread. Most of them did reach the spool, and so Kafka. Downstream recognises a repeat
by its ``event_id``, but recognising is not free: the agent stage answers a repeat by
sending the agent's records of the day again (``streams.agents.agent_stats``: that is
how it recovers from its own crash), so 500 repeats of a busy line's events made
hundreds of thousands of messages and held the agent figures back for minutes after a
restart of this bridge (test_kill_under_traffic, ingest case).

So the bridge's spool sink (``ingest.bridge.SpoolSink``) does not take again what it
already took; whatever wraps it (the reconciler) still hears the resend. What it knows
at start (``ingest.service.known_events``): the events
still waiting in its spool, and the tail of ``tawag.call-events`` (the last
``evapi_resend`` messages of each partition hold every event the edge can resend, since
the edge resends only what it sent last). After that, every event it spools. A spooled
event is durable (fsynced before the next read), so dropping its repeat loses nothing;
an event the dying bridge read but never spooled is in neither, and goes through.

:class:`RecentEvents` is the memory (pure, bounded); :func:`published_ids` reads the
topic's tail.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import orjson

__all__ = ["RecentEvents", "published_ids", "event_id_of_record"]


class RecentEvents:
    """The last ``capacity`` event ids published (or spooled), oldest forgotten first."""

    def __init__(self, capacity: int, ids: Iterable[str] = ()) -> None:
        self.capacity = max(capacity, 1)
        self._ids: OrderedDict[str, None] = OrderedDict()
        for event_id in ids:
            self.add(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def event_id_of_record(value: bytes) -> str | None:
    """The ``event_id`` of a v1 event as spooled or produced (None if it has none)."""
    try:
        event_id = orjson.loads(value).get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) else None


def published_ids(bootstrap: str, topic: str, per_partition: int, *,
                  timeout_s: float = 10.0) -> list[str]:
    """The event ids of the last ``per_partition`` messages of each partition of
    ``topic`` (no consumer group, nothing committed). Raises if Kafka cannot be asked
    or the tail is not read within ``timeout_s``: the caller goes on without it."""
    from kafka import KafkaConsumer, TopicPartition

    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, request_timeout_ms=5_000,
                             bootstrap_timeout_ms=5_000)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        left: dict[TopicPartition, int] = {}
        for tp in partitions:
            start = max(starts[tp], ends[tp] - per_partition)
            if start < ends[tp]:
                consumer.seek(tp, start)
                left[tp] = ends[tp]
        ids: list[str] = []
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the tail of {topic} not read in {timeout_s:.0f} s")
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for m in messages:
                    if m.offset < left.get(tp, -1):
                        event_id = event_id_of_record(m.value)
                        if event_id is not None:
                            ids.append(event_id)
                if tp in left and consumer.position(tp) >= left[tp]:
                    del left[tp]
        return ids
    finally:
        consumer.close(autocommit=False)
