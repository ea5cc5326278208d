"""Joining a Kafka consumer group only once the client knows the topics' partitions.

kafka-python's consumer joins its group as soon as it polls, whether or not its metadata
lists the subscribed topics yet. A group leader that joins without them assigns none of
their partitions ("No partition metadata for topic tawag.cdrs"); the metadata refresh
that follows does not always mend it: a CI run's CRM connectors worker (static
membership, ``group.instance.id``) held no partition 90 s later and never became ready.
Asking for the partitions first closes that window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["subscribe_known"]

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
