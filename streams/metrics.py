"""The stream processors' Prometheus metrics (served by :func:`core.metrics.serve` on
``streams_metrics_port`` by :func:`streams.app.run_worker`).

- events in and out: the stage runner (:mod:`streams.runner`) counts what each agent
  takes (:func:`received`, by source topic) and sends (:func:`sent`, by output: the field
  of :class:`streams.topics.Topics`), and what it dead-letters. Counted there rather than
  by a Faust sensor: the stream a sensor sees (``stream.events()``) no longer carries the
  agent's name;
- consumer lag: :class:`LagMonitor` asks Kafka every ``streams_lag_interval_s`` for the
  group's committed offsets and the partitions' end offsets (kafka-python admin and
  consumer calls, in a thread of its own). Measured outside the worker's event loop, so
  a stuck worker still shows its lag growing -- the case the metric is for -- and it
  covers every partition of the group, whichever worker holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge

__all__ = ["EVENTS_IN", "EVENTS_OUT", "DEAD_LETTERS", "CONSUMER_LAG",
           "LAG_CHECK_ERRORS", "LagMonitor", "received", "sent", "group_lag"]

log = logging.getLogger(__name__)

EVENTS_IN = Counter("tawag_streams_events_in",
                    "Events taken by an agent's stream, by agent and source topic",
                    ["agent", "topic"])
EVENTS_OUT = Counter("tawag_streams_events_out",
                     "Records an agent sent, by agent and output (cdrs, agent_events, "
                     "agent_states, agent_stats, callback_cdrs, callbacks, dead_letter)",
                     ["agent", "output"])
DEAD_LETTERS = Counter("tawag_streams_dead_letters",
                       "Messages an agent could not decode or fold, sent to the dead-letter "
                       "topic, by agent", ["agent"])
CONSUMER_LAG = Gauge("tawag_streams_consumer_lag",
                     "End offset minus the consumer group's committed offset, per "
                     "topic-partition (messages not yet processed)",
                     ["group", "topic", "partition"])
LAG_CHECK_ERRORS = Counter("tawag_streams_lag_check_errors",
                           "Lag checks that failed (Kafka not reachable or not answering)")


def sent(agent: str, output: str, n: int = 1) -> None:
    """Count ``n`` records sent by ``agent`` to ``output``."""
    EVENTS_OUT.labels(agent, output).inc(n)


def received(agent: str, event: Any) -> None:
    """Count one event taken by ``agent`` (a Faust ``EventT``), by its source topic."""
    EVENTS_IN.labels(agent, event.message.topic).inc()


def group_lag(committed: Mapping[Any, Any], end: Mapping[Any, int]) -> dict[Any, int]:
    """Lag per topic-partition: end offset minus committed offset (never below 0)."""
    lag = {}
    for tp, meta in committed.items():
        offset = getattr(meta, "offset", meta)
        if tp in end and offset is not None and offset >= 0:
            lag[tp] = max(0, end[tp] - offset)
    return lag


class LagMonitor:
    """Updates :data:`CONSUMER_LAG` for ``group`` every ``interval_s`` until stopped.

    ``clients`` makes the (admin, consumer) pair; by default kafka-python's, on
    ``bootstrap``. Partitions the group never committed are not reported (no lag known).
    """

    def __init__(self, bootstrap: str, group: str, interval_s: float, *,
                 clients: Callable[[], tuple[Any, Any]] | None = None) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.interval_s = interval_s
        self._clients = clients or self._kafka_clients
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streams-lag", daemon=True)
        self._reported: set[tuple[str, str]] = set()

    def _kafka_clients(self) -> tuple[Any, Any]:
        from kafka import KafkaAdminClient, KafkaConsumer

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                 client_id=f"{self.group}-lag")
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                 client_id=f"{self.group}-lag", enable_auto_commit=False)
        return admin, consumer

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self, admin: Any, consumer: Any) -> dict[Any, int]:
        """One measurement: set the gauges, drop partitions the group no longer has."""
        # kafka-python 3: {group: {TopicPartition: OffsetAndMetadata}}
        committed = admin.list_group_offsets(self.group).get(self.group) or {}
        end = consumer.end_offsets(list(committed)) if committed else {}
        lag = group_lag(committed, end)
        seen = set()
        for tp, value in lag.items():
            labels = (tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(self.group, *labels).set(value)
            seen.add(labels)
        for gone in self._reported - seen:
            CONSUMER_LAG.remove(self.group, *gone)
        self._reported = seen
        return lag

    def _run(self) -> None:
        clients = None
        while not self._stop.is_set():
            try:
                if clients is None:
                    clients = self._clients()
                self.check(*clients)
            except Exception as exc:  # Kafka away: count it, try again with new clients
                LAG_CHECK_ERRORS.inc()
                log.warning("consumer lag of %s not measured: %s", self.group, exc)
                self._close(clients)
                clients = None
            self._stop.wait(self.interval_s)
        self._close(clients)

    @staticmethod
    def _close(clients: tuple[Any, Any] | None) -> None:
        for client in clients or ():
            try:
                client.close()
            except Exception:  # closing a half-broken client: nothing left to do
                log.debug("closing a lag client failed", exc_info=True)
