"""Joining a Kafka consumer group only once the client knows the topics' partitions.

kafka-python's consumer joins its group as soon as it polls, whether or not its metadata
lists the subscribed topics yet. A group leader that joins without them assigns none of
their partitions ("No partition metadata for topic tawag.cdrs"); the metadata refresh
that follows does not always mend it: a CI run's CRM connectors worker (static
membership, ``group.instance.id``) held no partition 90 s later and never became ready.
Asking for the partitions first closes that window.

A group can still rebalance under a consumer between its poll and its commit (a CI run's
webhook worker: the leader rejoined 250 ms after its first assignment, and the commit of
the batch it had just journalled raised ``RebalanceInProgressError`` and ended the
thread). :func:`commit_journalled` is the commit of consumers whose work is already
durable and keyed (an outbox): a commit the rebalance refused only means a re-read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["commit_journalled", "group_consumer", "subscribe_known"]

log = logging.getLogger(__name__)


def subscribe_known(consumer: Any, topics: Sequence[str], *, listener: Any = None,
                    timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> None:
    """Subscribe ``consumer`` (kafka-python's) to ``topics`` once its metadata holds the
    partitions of each, or after ``timeout_s`` (with a warning: a topic not created yet
    is then taken up by a later rebalance, as before)."""
    deadline = clock() + timeout_s
    missing = sorted(topics)
    while missing:
        missing = [t for t in missing if not consumer.partitions_for_topic(t)]
        if missing and clock() >= deadline:
            log.warning("joining the group without partition metadata for %s",
                        ", ".join(missing))
            break
        if missing:
            sleep(0.5)
    if listener is None:
        consumer.subscribe(list(topics))
    else:
        consumer.subscribe(list(topics), listener=listener)


def group_consumer(settings: Settings, group: str, instance_id: str, topics: Sequence[str], *,
                   listener: Any = None, **options: Any) -> Any:
    """A kafka-python consumer of ``topics`` in ``group``, configured the way every Tawag
    group consumer is: offsets committed by the caller after its work, a new group reading
    from the earliest offset, metadata refreshed every ``kafka_metadata_max_age_ms``,
    static membership under ``instance_id`` ("" for none); subscribed by
    :func:`subscribe_known`. ``options`` go to ``KafkaConsumer`` as they are."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
                             group_instance_id=instance_id or None, **options)
    subscribe_known(consumer, topics, listener=listener)
    return consumer


def commit_journalled(consumer: Any) -> bool:
    """Commit the consumer's position after a batch whose records are already journalled
    under their own keys; ``False`` if a rebalance refused it.

    The refused offsets are re-read by whoever owns the partitions after the rebalance
    (this consumer again, usually) and the journal's keys drop the repeats, so the loop
    polls on: the next poll completes the rebalance, as kafka-python asks.
    """
    from kafka.errors import (
        CommitFailedError,
        IllegalGenerationError,
        RebalanceInProgressError,
        UnknownMemberIdError,
    )

    try:
        consumer.commit()
    except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError,
            UnknownMemberIdError) as exc:
        log.warning("commit refused by a rebalance (the batch is journalled; a re-read is "
                    "dropped by its keys): %s", exc)
        return False
    return True
