"""Kafka -> warehouse loader: the only writer of ``call_events`` and ``cdrs``.

The flow for one table's share of a poll (the records of its topic's partitions)::

    records --skip_loaded(watermark)--> fresh --build_batch--> Batch(rows, dead_letters, token)
        (one per partition)
        --> client.insert_rows(table, rows, dedup_token=tokens)  (1) write, one INSERT
        --> dead-letter sink (produce + flush)                    (2) park what did not decode
        --> consumer.commit(last offset + 1 of each partition)   (3) only then commit

One INSERT per table and poll, and the broker holds each fetch up to
``warehouse_fetch_wait_ms`` to fill it: chdb spends ~15 ms of CPU on an INSERT whatever
its size (``bench/loader_throughput.py``: 327 rows per CPU second in batches of 5
messages, 9,495 in batches of 500), and at 20 calls/s a poll holds a few records per
partition.

Idempotence, two layers, because a crash can hit between (1) and (3):

* ``insert_deduplication_token`` = (topic, partition, first offset, last offset) of each
  partition in the INSERT: the same batches written again (a retry, or a zombie consumer
  after a rebalance) add nothing,
  thanks to ``non_replicated_deduplication_window`` on the tables.
* a re-read after a crash need not have the same boundaries (more messages may have
  arrived), so a different token alone would write the old rows again. The loader
  therefore reads the partition's *watermark* (highest ``kafka_offset`` already stored)
  once per assignment and skips records at or below it.

Everything above the Kafka edge (:func:`poll_once`, :func:`run_loader`) is pure or takes a
:class:`~warehouse.client.WarehouseClient`, so it is tested without a broker.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from core.agent_records import AgentStateChange, AgentStats, CallbackItem, record_from_json
from core.events import Event, from_json
from core.kafka_group import group_consumer
from core.records import Cdr, cdr_from_json
from warehouse import metrics, schema
from warehouse.client import WarehouseClient, WarehouseError

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "GROUP_ID",
    "Record",
    "DeadLetter",
    "Batch",
    "Route",
    "Loader",
    "DeadLetterError",
    "dedup_token",
    "event_row",
    "cdr_row",
    "decode_event",
    "decode_cdr",
    "decode_agent_state",
    "decode_agent_stats",
    "decode_callback",
    "routes_for",
    "skip_loaded",
    "build_batch",
    "write_batch",
    "write_batches",
    "poll_once",
    "broker_reachable",
    "run_loader",
]

log = logging.getLogger(__name__)

GROUP_ID = "tawag-warehouse"


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One Kafka message, as far as the loader cares."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be loaded, and why; published to ``topic_dead_letter``."""

    topic: str
    partition: int
    offset: int
    error: str
    value: str | None

    @classmethod
    def of(cls, record: Record, error: str) -> DeadLetter:
        value = None if record.value is None else record.value.decode("utf-8", "replace")
        return cls(record.topic, record.partition, record.offset, error, value)

    @property
    def key(self) -> bytes:
        return f"{self.topic}:{self.partition}:{self.offset}".encode()

    def to_json(self) -> bytes:
        return json.dumps({"topic": self.topic, "partition": self.partition,
                           "offset": self.offset, "error": self.error, "value": self.value},
                          ensure_ascii=False).encode()


@dataclass(frozen=True)
class Batch:
    """What one topic-partition's records become: rows for one table plus dead letters."""

    table: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: list[dict[str, Any]]
    dead_letters: list[DeadLetter]

    @property
    def dedup_token(self) -> str:
        return dedup_token(self.topic, self.partition, self.first_offset, self.last_offset)


def dedup_token(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The insert_deduplication_token of a batch: the same offsets give the same token."""
    return f"{topic}/{partition}/{first_offset}-{last_offset}"


# --- decoding (pure) ---------------------------------------------------------------------------


def _kafka_columns(record: Record) -> dict[str, Any]:
    return {"kafka_topic": record.topic, "kafka_partition": record.partition,
            "kafka_offset": record.offset}


def event_row(event: Event, record: Record) -> dict[str, Any]:
    """The ``call_events`` row of one event, with the raw message kept verbatim."""
    return {
        "tenant": event.tenant, "ts": event.ts, "call_id": event.call_id or "",
        "event_id": event.event_id, "type": event.type.value, "schema": event.schema,
        "source": event.source, "leg_id": event.leg_id,
        "direction": event.direction.value if event.direction else None,
        "caller": event.caller, "callee": event.callee, "did": event.did,
        "agent": event.agent, "sip_code": event.sip_code, "reason": event.reason,
        "hangup_by": event.hangup_by, "duration_ms": event.duration_ms,
        "media": {k: float(v) for k, v in (event.media or {}).items()},
        "extra": json.dumps(event.extra, ensure_ascii=False, sort_keys=True),
        "raw": (record.value or b"").decode("utf-8"),
        **_kafka_columns(record),
    }


def _check_cdr(cdr: Cdr) -> None:
    # Types are checked by the codec (cdr_from_json); what the columns add is ranges. A
    # value a column cannot hold would fail the whole batch's INSERT and stall the
    # partition; rejected here, only that message goes to the dead letters.
    if not cdr.tenant or not cdr.call_id:
        raise ValueError("tenant and call_id are required")
    for name in ("version", "event_count"):
        if not 0 <= getattr(cdr, name) < 2**32:
            raise ValueError(f"{name}: out of range: {getattr(cdr, name)}")
    if cdr.sip_code is not None and not 100 <= cdr.sip_code <= 699:
        raise ValueError(f"sip_code: out of range: {cdr.sip_code}")


def cdr_row(cdr: Cdr, record: Record) -> dict[str, Any]:
    """The ``cdrs`` row of one CDR revision: its fields, legs/forwards/transfers as arrays
    of named tuples (JSON objects on the way in)."""
    _check_cdr(cdr)
    return {**_fields_row(cdr), **_kafka_columns(record)}


def decode_event(record: Record) -> dict[str, Any]:
    """``call_events`` row of a message, or ValueError (InvalidEvent) saying why not."""
    if record.value is None:
        raise ValueError("empty message (tombstone)")
    event = from_json(record.value)
    try:
        return event_row(event, record)
    except (TypeError, AttributeError) as exc:  # e.g. a media value that is not a number
        raise ValueError(f"event {event.event_id}: {type(exc).__name__}: {exc}") from exc


def decode_cdr(record: Record) -> dict[str, Any]:
    """``cdrs`` row of a message, or ValueError saying why not."""
    if record.value is None:
        raise ValueError("empty message (tombstone)")
    return cdr_row(cdr_from_json(record.value), record)


# --- agent states, agent stats, callbacks (records of core.agent_records) ---------------
#
# Decoded by the records' own validating codec; a row is the record's fields, so a new
# field is one edit in core.agent_records plus one migration (tests/warehouse/
# test_columns.py checks the two agree). A value a column cannot hold becomes a dead letter
# instead of failing the whole batch.

_KEYS = ("tenant", "agent", "client", "item_id")
"""Key columns: a row without them could not be found again."""


def record_row(kind: type[Any], record: Record) -> dict[str, Any]:
    """The row of one agent-state, agent-stats or callback message, or ValueError why not."""
    if record.value is None:
        raise ValueError("empty message (tombstone)")
    row = _fields_row(record_from_json(kind, record.value))
    for name, value in row.items():
        if name in _KEYS and not value:
            raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 2**63:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return {**row, **_kafka_columns(record)}


def _fields_row(record: Any) -> dict[str, Any]:
    """A record's fields as column values: enums as their text, a tuple of records (a
    CDR's legs) as a list of objects."""
    return {f.name: _column(getattr(record, f.name)) for f in fields(record)}


def _column(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple):
        return [_fields_row(part) for part in value]
    return value


def decode_agent_state(record: Record) -> dict[str, Any]:
    """``agent_states`` row of a state-segment message, or ValueError saying why not."""
    return record_row(AgentStateChange, record)


def decode_agent_stats(record: Record) -> dict[str, Any]:
    """``agent_stats`` row of an interval-statistics message, or ValueError saying why not."""
    return record_row(AgentStats, record)


def decode_callback(record: Record) -> dict[str, Any]:
    """``callbacks`` row of a callback-item message, or ValueError saying why not."""
    return record_row(CallbackItem, record)


@dataclass(frozen=True)
class Route:
    """Where a topic's messages go and how they are decoded."""

    table: str
    decode: Callable[[Record], dict[str, Any]]


def routes_for(settings: Settings) -> dict[str, Route]:
    """Topic -> route for the topics the warehouse loads."""
    return {settings.topic_call_events: Route(schema.CALL_EVENTS, decode_event),
            settings.topic_cdrs: Route(schema.CDRS, decode_cdr),
            settings.topic_agent_states: Route(schema.AGENT_STATES, decode_agent_state),
            settings.topic_agent_stats: Route(schema.AGENT_STATS, decode_agent_stats),
            settings.topic_callbacks: Route(schema.CALLBACKS, decode_callback)}


def skip_loaded(records: Sequence[Record], watermark: int) -> list[Record]:
    """Records above ``watermark`` (the highest offset already stored; -1 for none)."""
    return [r for r in records if r.offset > watermark]


def build_batch(records: Sequence[Record], route: Route) -> Batch:
    """Decode one topic-partition's records; what fails to decode becomes a dead letter."""
    if not records:
        raise ValueError("build_batch needs at least one record")
    if len({(r.topic, r.partition) for r in records}) != 1:
        raise ValueError("build_batch takes the records of one topic-partition")
    rows, dead = [], []
    for record in records:
        try:
            rows.append(route.decode(record))
        except (ValueError, UnicodeDecodeError) as exc:
            dead.append(DeadLetter.of(record, str(exc)))
    first, last = records[0], records[-1]
    return Batch(route.table, first.topic, first.partition, first.offset, last.offset,
                 rows, dead)


def write_batch(client: WarehouseClient, batch: Batch) -> None:
    """Insert a batch's rows with its deduplication token (a retry adds nothing)."""
    write_batches(client, [batch])


def write_batches(client: WarehouseClient, batches: Sequence[Batch]) -> None:
    """Insert the batches of one table (one per topic-partition) as one INSERT, its token
    their tokens joined (why one INSERT: the module docstring)."""
    tables = {b.table for b in batches}
    if len(tables) != 1:
        raise ValueError(f"write_batches takes the batches of one table, not {sorted(tables)}")
    rows = batches[0].rows if len(batches) == 1 else [r for b in batches for r in b.rows]
    client.insert_rows(batches[0].table, rows,
                       dedup_token=";".join(b.dedup_token for b in batches))


# --- the loader -----------------------------------------------------------------------------


class DeadLetterError(RuntimeError):
    """The dead letters could not be published; the batch must not be committed."""


DeadLetterSink = Callable[[Sequence[DeadLetter]], None]


@dataclass
class LoadStats:
    """Counters since start: rows written per table, dead letters, records skipped."""

    rows: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    skipped: int = 0


class Loader:
    """Writes batches and remembers each partition's watermark while it is assigned.

    Usage::

        loader = Loader(client, routes_for(settings), dead_letters=sink)
        loader.load(records_of_one_topic_partition)   # raises WarehouseError on failure
    """

    def __init__(self, client: WarehouseClient, routes: Mapping[str, Route],
                 dead_letters: DeadLetterSink) -> None:
        self._client = client
        self._routes = dict(routes)
        self._dead_letters = dead_letters
        self._watermarks: dict[tuple[str, int], int] = {}
        self.stats = LoadStats()

    def watermark(self, topic: str, partition: int) -> int:
        """Highest offset of ``topic``/``partition`` already stored (-1 if none)."""
        key = (topic, partition)
        if key not in self._watermarks:
            self._watermarks[key] = self._stored_watermark(topic, partition)
        return self._watermarks[key]

    def _stored_watermark(self, topic: str, partition: int) -> int:
        # A full scan of the kafka_* columns, done once per partition assignment.
        rows = self._client.query(
            f"SELECT count() AS n, max(kafka_offset) AS top FROM {self._routes[topic].table} "
            "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:UInt32}",
            {"topic": topic, "partition": partition})
        return int(rows[0]["top"]) if rows and rows[0]["n"] else -1

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop cached watermarks of revoked partitions (another consumer may write them)."""
        for key in partitions:
            self._watermarks.pop(tuple(key), None)  # type: ignore[arg-type]

    def load(self, records: Sequence[Record]) -> Batch | None:
        """Write one topic-partition's records and park what did not decode.

        Returns the batch written (None if every record was already stored). Raises
        WarehouseError or DeadLetterError, in which case nothing may be committed.
        """
        batches = self.load_parts([records])
        return batches[0] if batches else None

    def table_of(self, topic: str) -> str | None:
        """The table ``topic`` is loaded into (None: its records become dead letters)."""
        route = self._routes.get(topic)
        return route.table if route is not None else None

    def load_parts(self, parts: Sequence[Sequence[Record]]) -> list[Batch]:
        """Write several topic-partitions' records bound for one table in one INSERT
        (:func:`write_batches`) and park what did not decode; the batches written. Raises
        like :meth:`load`."""
        batches: list[Batch] = []
        for records in parts:
            if not records:
                continue
            topic, partition = records[0].topic, records[0].partition
            if topic not in self._routes:
                self._park(records, f"no warehouse table for topic {topic!r}")
                continue
            fresh = skip_loaded(records, self.watermark(topic, partition))
            self.stats.skipped += len(records) - len(fresh)
            metrics.SKIPPED.inc(len(records) - len(fresh))
            if fresh:
                batches.append(build_batch(fresh, self._routes[topic]))
        if not batches:
            return []
        write_batches(self._client, batches)
        table = batches[0].table.rpartition(".")[2]  # the label without the database
        metrics.BATCHES.labels(table).inc()
        for batch in batches:
            self._publish(batch.dead_letters)
            if batch.rows:
                self._watermarks[(batch.topic, batch.partition)] = max(
                    r["kafka_offset"] for r in batch.rows)
            self.stats.rows[batch.table] += len(batch.rows)
            metrics.ROWS_LOADED.labels(table).inc(len(batch.rows))
        return batches

    def _park(self, records: Sequence[Record], error: str) -> None:
        self._publish([DeadLetter.of(r, error) for r in records])
        return None

    def _publish(self, dead: Sequence[DeadLetter]) -> None:
        if not dead:
            return
        for letter in dead:
            log.warning("dead letter %s/%s@%s: %s", letter.topic, letter.partition,
                        letter.offset, letter.error)
        self._dead_letters(dead)
        self.stats.dead_letters += len(dead)
        for letter in dead:
            metrics.DEAD_LETTERS.labels(letter.topic).inc()


# --- the Kafka edge ----------------------------------------------------------------------------


class KafkaDeadLetters:
    """Publishes dead letters and waits for the broker's ack (before offsets are committed)."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def __call__(self, dead: Sequence[DeadLetter]) -> None:
        from kafka.errors import KafkaError

        try:
            futures = [self._producer.send(self._topic, key=d.key, value=d.to_json())
                       for d in dead]
            self._producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=self._timeout_s)
        except KafkaError as exc:
            raise DeadLetterError(f"cannot publish dead letters: {exc}") from exc


class Consumer(Protocol):
    """The part of kafka-python's KafkaConsumer that :func:`poll_once` uses."""

    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> Mapping[Any, Any]:
        ...

    def commit(self, offsets: Mapping[Any, Any] | None = ...) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...


def _records(messages: Sequence[Any]) -> list[Record]:
    return [Record(m.topic, m.partition, m.offset, m.value) for m in messages]


def _rewind(consumer: Consumer, pending: Sequence[tuple[Any, Sequence[Any]]]) -> None:
    for tp, messages in pending:
        try:
            consumer.seek(tp, messages[0].offset)
        except Exception as exc:  # revoked meanwhile: its next owner re-reads it anyway
            log.warning("loader: cannot rewind %s: %s", tp, exc)


def poll_once(consumer: Consumer, loader: Loader, *, timeout_ms: int = 500) -> int:
    """One poll: load the records bound for each table in one INSERT, then commit their
    partitions' offsets.

    If a load or a commit fails, every partition of this poll not yet committed is
    rewound to its first record (the consumer's position has already moved past them,
    and a later commit would otherwise skip them) and the error is raised for the
    caller to back off. Returns the number of records handled.
    """
    from kafka.structs import OffsetAndMetadata

    polled = list(consumer.poll(timeout_ms=timeout_ms).items())
    groups: dict[str, list[tuple[Any, Sequence[Any]]]] = {}
    for tp, messages in polled:
        groups.setdefault(loader.table_of(tp.topic) or f"?{tp.topic}", []).append(
            (tp, messages))
    ordered = list(groups.values())
    for index, group in enumerate(ordered):
        try:
            loader.load_parts([_records(messages) for _, messages in group])
            consumer.commit({tp: OffsetAndMetadata(messages[-1].offset + 1, "", -1)
                             for tp, messages in group})
        except Exception:
            _rewind(consumer, [part for rest in ordered[index:] for part in rest])
            raise
    return sum(len(messages) for _, messages in polled)


def _make_consumer(settings: Settings, loader: Loader) -> Any:
    from kafka import ConsumerRebalanceListener

    class _Forget(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            loader.forget((tp.topic, tp.partition) for tp in revoked)

        def on_partitions_assigned(self, assigned: Any) -> None:
            loader.forget((tp.topic, tp.partition) for tp in assigned)

    return group_consumer(settings, GROUP_ID, settings.warehouse_instance_id,
                          sorted(routes_for(settings)), listener=_Forget(),
                          client_id=GROUP_ID, max_poll_records=1000,
                          fetch_min_bytes=256 * 1024,
                          fetch_max_wait_ms=settings.warehouse_fetch_wait_ms)


def _make_producer(settings: Settings) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                         client_id=f"{GROUP_ID}-dead-letters")


def broker_reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether any ``host:port`` of ``bootstrap`` accepts a TCP connection.

    kafka-python's constructors block for ~30 s against a broker that is not up; probing
    first keeps the loader (and the process's shutdown) responsive meanwhile.
    """
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def _connect(settings: Settings, loader: Loader, stop: threading.Event,
             retry_s: float) -> tuple[Any, Any] | None:
    """Consumer and producer, retrying while the broker is not up (None once stopped)."""
    from kafka.errors import KafkaError

    while not stop.is_set():
        try:
            if broker_reachable(settings.kafka_bootstrap):
                return _make_consumer(settings, loader), _make_producer(settings)
            reason = "connection refused"
        except KafkaError as exc:
            reason = str(exc)
        log.warning("loader: Kafka at %s not reachable (%s); retrying in %.0fs",
                    settings.kafka_bootstrap, reason, retry_s)
        stop.wait(retry_s)
    return None


def run_loader(settings: Settings, client: WarehouseClient, stop: threading.Event, *,
               retry_s: float = 5.0) -> Loader:
    """Consume every topic of :func:`routes_for` into the warehouse until ``stop``.

    Never crashes on bad input (dead letters) nor on a failed write (rewind, back off,
    retry). Between polls it rebuilds the KPI rollup of the days loaded since
    (:class:`warehouse.rollup.Refresher`: every 30 s, days untouched for a minute), in this
    thread, so one loader is one refresher. Returns the loader (with its counters) when
    stopped.
    """
    from kafka.errors import KafkaError

    sink: list[KafkaDeadLetters] = []
    loader = Loader(client, routes_for(settings), dead_letters=lambda d: sink[0](d))
    connected = _connect(settings, loader, stop, retry_s)
    if connected is None:
        return loader
    consumer, producer = connected
    sink.append(KafkaDeadLetters(producer, settings.topic_dead_letter))
    log.info("loader: consuming %s as group %s", ", ".join(sorted(routes_for(settings))),
             GROUP_ID)
    from warehouse.rollup import Refresher

    refresher = Refresher(client)
    try:
        while not stop.is_set():
            try:
                poll_once(consumer, loader)
                refresher.maybe_run()
            except (WarehouseError, DeadLetterError, KafkaError) as exc:
                # Partitions were rewound (or, on a failed commit, will be re-read by
                # their next owner): nothing is lost, the watermark prevents duplicates.
                log.error("loader: batch failed, will retry in %.0fs: %s", retry_s, exc)
                metrics.LOAD_FAILURES.inc()
                stop.wait(retry_s)
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
    return loader
