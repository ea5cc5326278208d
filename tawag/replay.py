"""``tawag replay``: rebuild every CDR and statistic from the raw call events, and compare.

    report = replay(settings)            # reads tawag.call-events from offset 0
    print(report.summary())              # equal, or the first differing rows per table

1. **read**: an own kafka-python consumer (no group, no commit) assigned every partition
   of ``settings.topic_call_events``, from the beginning up to the end offsets seen at
   the start. Partitions are merged by the record's Kafka timestamp (then partition,
   offset), the order in which the live worker most likely met them.
2. **fold**: the worker's own topology (:func:`streams.topology.stages`, the very steps
   the Faust agents run) over plain dicts instead of Faust tables, in the agents'
   emission order: each event goes to the call
   assembly (a CDR revision if the call changed, the current one again if the event is a
   repeat), then to the agent router (one fold per extension concerned); each CDR
   revision goes on to the callback router and fold. A repeated event or revision sends
   its agent's current records again here as live (which is what makes a crash between
   a changelog write and the send lose nothing there); they change no row as read.
3. **write**: through :class:`warehouse.loader.Loader` into a fresh chdb store
   (``settings.data_dir / "replay" / <UTC timestamp>``), the same rows the live loader
   writes (the raw events keep their real Kafka coordinates; derived rows get synthetic
   ones, which are not compared).
4. **compare** with the live warehouse (its HTTP interface in embedded mode): ``cdrs``,
   ``agent_states``, ``agent_stats`` and ``callbacks`` with FINAL - the rows readers see -,
   every column except the Kafka coordinates and ``loaded_at``, ordered by key;
   ``call_events`` by event id. For ``agent_states``, ``agent_stats`` and ``callbacks``
   the ``version`` column is left out too (:data:`DELIVERY_VERSIONED`), and so are
   retractions, which readers skip (:data:`warehouse.queries.replay.AS_READ`), for this reason:

Why some versions depend on delivery. A CDR's version counts the distinct events of *one
call*, which all sit on one partition of ``tawag.call-events`` (key = call id), so every
reader meets them in the same order: CDR versions are compared. An agent's (or client's)
row is different: its ``version`` is the number of events the *agent's* state had folded
(for callbacks: the sum of the client's CDR versions) when that row last changed, and the
agent's events come from every partition. The live worker meets them in the order its
``agent-router`` happened to interleave the four partitions into the repartition topic
(fetch sizes, timing, and after a crash the redelivered events), an order the raw topic
does not record; the replay uses (Kafka timestamp, partition, offset). Folding the live
repartition topic's exact sequence gives the live versions exactly, so they are a record
of delivery, not of the calls. What readers use - every other column, ``complete_until``
included (capped at the interval's end so that it is order-free, see
``streams.folds.agent_stats``) - is a function of the set of events and must be equal;
that is what is compared. ``version`` only orders a row's revisions for
ReplacingMergeTree, which FINAL has already applied on each side (and a live worker that
took an agent's row over after a restart numbers it from the clock up:
``streams.agents.agent_stats``, take-over).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings
from streams.app import agent_config, callback_config
from streams.folds.agent_state import DEFAULT_CONFIG as AGENT_CONFIG
from streams.folds.agent_state import AgentConfig
from streams.folds.callbacks import CallbackConfig
from streams.topology import stages
from warehouse.client import ChdbClient, HttpClient, WarehouseClient, connect, service_client
from warehouse.loader import Loader, Record, routes_for
from warehouse.migrate import migrate
from warehouse.queries.replay import COMPARED, DELIVERY_VERSIONED, compared_rows

__all__ = ["TableDiff", "ReplayReport", "Folded", "Replayer", "read_topic", "replay",
           "fold_records", "compare", "COMPARED", "DELIVERY_VERSIONED"]

BATCH = 5_000
"""Rows per warehouse insert during a replay."""

# --- reading ---------------------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, *, poll_ms: int = 500,
               max_records: int = 5_000) -> Iterator[tuple[int, Record]]:
    """``(kafka timestamp ms, Record)`` of every message of ``topic`` up to its current end,
    partition by partition in offset order (no consumer group, nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {tp: off for tp, off in consumer.end_offsets(partitions).items() if off > 0}
        position = {tp: -1 for tp in ends}
        while any(position[tp] + 1 < end for tp, end in ends.items()):
            batches = consumer.poll(timeout_ms=poll_ms, max_records=max_records)
            for tp, messages in batches.items():
                for m in messages:
                    if tp in ends and m.offset < ends[tp]:
                        position[tp] = m.offset
                        yield m.timestamp, Record(topic, tp.partition, m.offset, m.value)
    finally:
        consumer.close(autocommit=False)


def merge_by_time(records: Iterable[tuple[int, Record]]) -> list[Record]:
    """Records in (Kafka timestamp, partition, offset) order: a deterministic stand-in
    for the order the live worker interleaved partitions in."""
    keyed = sorted(((ts, r.partition, r.offset), r) for ts, r in records)
    return [r for _, r in keyed]


# --- folding -------------------------------------------------------------------------------


@dataclass
class Folded:
    """What the agents would have published, as loader records per topic."""

    cdrs: list[bytes] = field(default_factory=list)
    agent_states: list[bytes] = field(default_factory=list)
    agent_stats: list[bytes] = field(default_factory=list)
    callbacks: list[bytes] = field(default_factory=list)
    dead: int = 0


class Replayer:
    """The stream topology (:func:`streams.topology.stages`) over plain dicts instead of
    Faust tables and topics: each message goes, depth first, to every stage reading its
    topic, in flow order - the agents' own emission order for one event."""

    def __init__(self, country: str = "RU", agent_config: AgentConfig = AGENT_CONFIG,
                 callback_config: CallbackConfig | None = None) -> None:
        self.stages = stages(agent_config, callback_config or CallbackConfig(country=country))
        self.tables: dict[str, dict[str, Any]] = {s.table: {} for s in self.stages if s.table}
        self.out = Folded()
        self._readers: dict[str, list[Any]] = {}
        for stage in self.stages:  # each topic's readers, in flow order
            self._readers.setdefault(stage.source, []).append(stage)

    def event(self, value: bytes | None) -> None:
        """One message of tawag.call-events."""
        self.deliver("call_events", None, value)

    def deliver(self, topic: str, key: bytes | None, value: Any) -> None:
        """A message on ``topic`` (a Topics field) to every stage that reads it."""
        for stage in self._readers.get(topic, ()):
            try:
                outputs = stage.step(self.tables.get(stage.table or ""), key, value)
            except Exception:  # the worker dead-letters it (streams.runner)
                self.out.dead += 1
                continue
            for out_topic, out_key, out_value in outputs:
                sent = getattr(self.out, out_topic, None)
                if sent is not None:
                    sent.append(out_value)
                self.deliver(out_topic, out_key, out_value)


def fold_records(records: Iterable[Record], country: str = "RU",
                 agent_config: AgentConfig = AGENT_CONFIG,
                 callback_config: CallbackConfig | None = None) -> Replayer:
    replayer = Replayer(country, agent_config, callback_config)
    for record in records:
        replayer.event(record.value)
    return replayer


# --- writing -------------------------------------------------------------------------------


def _chunks(items: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write(client: WarehouseClient, settings: Settings, events: Sequence[Record],
          folded: Folded) -> dict[str, int]:
    """Load the raw events (per partition, real offsets) and the folded records."""
    loader = Loader(client, routes_for(settings), dead_letters=lambda dead: None)
    by_partition: dict[int, list[Record]] = {}
    for r in events:
        by_partition.setdefault(r.partition, []).append(r)
    for records in by_partition.values():
        for chunk in _chunks(sorted(records, key=lambda r: r.offset), BATCH):
            loader.load(chunk)
    derived = {settings.topic_cdrs: folded.cdrs,
               settings.topic_agent_states: folded.agent_states,
               settings.topic_agent_stats: folded.agent_stats,
               settings.topic_callbacks: folded.callbacks}
    for topic, values in derived.items():
        records = [Record(topic, 0, i, v) for i, v in enumerate(values)]
        for chunk in _chunks(records, BATCH):
            loader.load(chunk)
    return dict(loader.stats.rows)


# --- comparing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableDiff:
    table: str
    live_rows: int
    replay_rows: int
    equal: bool
    version_only: bool = False
    """Every column but ``version`` is equal (see the module docstring)."""
    first_live: dict[str, Any] | None = None
    first_replay: dict[str, Any] | None = None

    def line(self) -> str:
        if self.equal:
            return f"{self.table}: equal ({self.live_rows} rows)"
        if self.version_only:
            return f"{self.table}: equal but for versions ({self.live_rows} rows)"
        return (f"{self.table}: DIFFERENT (live {self.live_rows} rows, replay "
                f"{self.replay_rows})\n  live:   {self.first_live}\n"
                f"  replay: {self.first_replay}")


def _first_difference(live: list[dict[str, Any]], replayed: list[dict[str, Any]],
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    for a, b in zip(live, replayed, strict=False):
        if a != b:
            return a, b
    n = min(len(live), len(replayed))
    return (live[n] if n < len(live) else None), (replayed[n] if n < len(replayed) else None)


def _without_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "version"} for r in rows]


def compare_table(table: str, live: WarehouseClient, replayed: WarehouseClient) -> TableDiff:
    """Live and replayed rows of ``table``; ``version`` left out for
    :data:`DELIVERY_VERSIONED` tables (for the others, ``version_only`` flags rows that
    differ in nothing else)."""
    a, b = compared_rows(live, table), compared_rows(replayed, table)
    if table in DELIVERY_VERSIONED:
        a, b = _without_version(a), _without_version(b)
    if a == b:
        return TableDiff(table, len(a), len(b), True)
    first_a, first_b = _first_difference(a, b)
    return TableDiff(table, len(a), len(b), False,
                     version_only=_without_version(a) == _without_version(b),
                     first_live=first_a, first_replay=first_b)


def compare(live: WarehouseClient, replayed: WarehouseClient,
            tables: Iterable[str] = tuple(COMPARED)) -> list[TableDiff]:
    return [compare_table(t, live, replayed) for t in tables]


# --- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayReport:
    store: Path
    events: int
    dead: int
    cdr_revisions: int
    rows: dict[str, int]
    read_s: float
    fold_s: float
    write_s: float
    diffs: tuple[TableDiff, ...] = ()

    @property
    def equal(self) -> bool:
        """True when every compared table equals the live one row for row."""
        return bool(self.diffs) and all(d.equal for d in self.diffs)

    @property
    def events_per_s(self) -> float:
        total = self.read_s + self.fold_s + self.write_s
        return self.events / total if total else 0.0

    def summary(self) -> str:
        head = (f"replayed {self.events} events ({self.dead} undecodable) into {self.store}: "
                f"{self.cdr_revisions} CDR revisions; read {self.read_s:.1f}s, fold "
                f"{self.fold_s:.1f}s, write {self.write_s:.1f}s "
                f"({self.events_per_s:,.0f} events/s)")
        return "\n".join([head, *(d.line() for d in self.diffs)])


def default_store(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return settings.data_dir / "replay" / stamp


def replay(settings: Settings, *, store: Path | None = None, compare_live: bool = True,
           live: WarehouseClient | None = None,
           progress: Callable[[str], None] | None = None) -> ReplayReport:
    """Rebuild CDRs, agent states/stats and callbacks from ``topic_call_events`` into a
    fresh chdb store and (``compare_live``) compare with the live warehouse."""
    say = progress or (lambda line: None)
    store = store or default_store(settings)
    t0 = time.perf_counter()
    events = merge_by_time(read_topic(settings.kafka_bootstrap, settings.topic_call_events))
    t1 = time.perf_counter()
    say(f"read {len(events)} events in {t1 - t0:.1f}s")
    replayer = fold_records(events, settings.default_country, agent_config(settings),
                            callback_config(settings))
    t2 = time.perf_counter()
    say(f"folded into {len(replayer.out.cdrs)} CDR revisions in {t2 - t1:.1f}s")
    client = ChdbClient(store)
    try:
        migrate(client)
        rows = write(client, settings, events, replayer.out)
        t3 = time.perf_counter()
        say(f"written to {store} in {t3 - t2:.1f}s")
        diffs: list[TableDiff] = []
        if compare_live:
            reader = live or connect(settings)
            try:
                diffs = compare(reader, client)
            finally:
                if live is None:
                    reader.close()
    finally:
        client.close()
    return ReplayReport(store=store, events=len(events), dead=replayer.out.dead,
                        cdr_revisions=len(replayer.out.cdrs), rows=rows, read_s=t1 - t0,
                        fold_s=t2 - t1, write_s=t3 - t2, diffs=tuple(diffs))


def live_client(settings: Settings) -> HttpClient:
    """The live warehouse's read-only HTTP interface (embedded mode), as the service user."""
    return service_client(settings)
