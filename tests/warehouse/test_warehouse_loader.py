"""The loader: decoding into rows, dead letters, idempotent writes, commit after write."""

import json
from collections import namedtuple
from datetime import timedelta

import pytest
from conftest import SETTINGS, T0, cdr_records, event_records, make_cdr, make_event

from core.events import EventType
from core.records import Disposition
from warehouse import schema
from warehouse.client import QueryError
from warehouse.loader import (
    DeadLetter,
    KafkaDeadLetters,
    Loader,
    Record,
    build_batch,
    dedup_token,
    poll_once,
    routes_for,
    write_batch,
    write_batches,
)

ROUTES = routes_for(SETTINGS)
EVENTS = ROUTES[SETTINGS.topic_call_events]
CDRS = ROUTES[SETTINGS.topic_cdrs]


def count(client, table, where="1"):
    return client.query(f"SELECT count() AS n FROM {table} WHERE {where}")[0]["n"]


# --- decoding (pure) ---------------------------------------------------------------------


def test_event_rows_keep_every_field_and_the_raw_message():
    event = make_event(type=EventType.CALL_ENDED, sip_code=200, duration_ms=4200,
                       media={"mos": 4.3}, extra={"x": 1})
    record = event_records([event], first_offset=7)[0]
    batch = build_batch([record], EVENTS)
    row = batch.rows[0]
    assert (row["event_id"], row["type"], row["ts"], row["sip_code"], row["duration_ms"]) \
        == ("e1", "call.ended", T0, 200, 4200)
    assert row["media"] == {"mos": 4.3} and json.loads(row["extra"]) == {"x": 1}
    assert row["raw"] == record.value.decode()
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) \
        == (SETTINGS.topic_call_events, 0, 7)


def test_agent_events_have_an_empty_call_id():
    event = make_event(type=EventType.AGENT_REGISTERED, call_id=None, leg_id=None,
                       agent="101")
    assert build_batch(event_records([event]), EVENTS).rows[0]["call_id"] == ""


def test_undecodable_messages_become_dead_letters_and_the_rest_loads():
    good = event_records([make_event("e1"), make_event("e2")])
    bad = [Record(SETTINGS.topic_call_events, 0, 2, b"{not json"),
           Record(SETTINGS.topic_call_events, 0, 3, b'{"schema": 1, "bogus": 1}'),
           Record(SETTINGS.topic_call_events, 0, 4, None)]
    batch = build_batch(good + bad, EVENTS)
    assert [r["event_id"] for r in batch.rows] == ["e1", "e2"]
    assert [d.offset for d in batch.dead_letters] == [2, 3, 4]
    assert "not JSON" in batch.dead_letters[0].error
    assert "unknown fields: bogus" in batch.dead_letters[1].error
    assert (batch.first_offset, batch.last_offset) == (0, 4)


@pytest.mark.parametrize("raw", [b"[]", b'{"tenant": "acme"}',
                                 b'{"disposition": "exploded"}'])
def test_malformed_cdrs_are_dead_letters(raw):
    batch = build_batch([Record(SETTINGS.topic_cdrs, 1, 9, raw)], CDRS)
    assert batch.rows == [] and len(batch.dead_letters) == 1


def test_a_cdr_with_a_wrongly_typed_field_is_a_dead_letter_not_a_failed_insert():
    raw = json.loads(cdr_records([make_cdr()])[0].value)
    raw["ring_ms"] = "soon"
    batch = build_batch([Record(SETTINGS.topic_cdrs, 0, 0, json.dumps(raw).encode())], CDRS)
    assert batch.rows == [] and "ring_ms" in batch.dead_letters[0].error


def test_dead_letter_json_names_where_it_came_from_and_why():
    letter = DeadLetter.of(Record("t", 2, 5, b"\xffoops"), "not JSON")
    assert json.loads(letter.to_json()) == {"topic": "t", "partition": 2, "offset": 5,
                                            "error": "not JSON", "value": "\ufffdoops"}


def test_the_token_depends_only_on_the_offsets():
    batch = build_batch(event_records([make_event("a"), make_event("b")], 10), EVENTS)
    assert batch.dedup_token == dedup_token(SETTINGS.topic_call_events, 0, 10, 11)
    assert batch.dedup_token != dedup_token(SETTINGS.topic_call_events, 1, 10, 11)


# --- writing (chdb) ------------------------------------------------------------------------


def test_a_batch_written_twice_with_the_same_token_adds_nothing(store):
    batch = build_batch(event_records([make_event(f"e{i}") for i in range(5)]), EVENTS)
    write_batch(store, batch)
    write_batch(store, batch)
    assert count(store, schema.CALL_EVENTS) == 5


def test_a_reread_after_a_crash_with_other_boundaries_adds_no_duplicates(store):
    records = event_records([make_event(f"e{i}") for i in range(10)])
    Loader(store, ROUTES, dead_letters=lambda d: None).load(records[:4])
    # crashed before commit; the restarted loader reads from offset 0 and gets more
    restarted = Loader(store, ROUTES, dead_letters=lambda d: None)
    batch = restarted.load(records)
    assert (batch.first_offset, batch.last_offset) == (4, 9)
    assert restarted.stats.skipped == 4
    assert count(store, schema.CALL_EVENTS) == 10
    assert restarted.load(records) is None  # everything already stored


def test_events_keep_microsecond_precision_as_milliseconds_and_utc(store):
    ts = T0 + timedelta(milliseconds=345)
    Loader(store, ROUTES, lambda d: None).load(event_records([make_event(ts=ts)]))
    assert store.query(f"SELECT ts FROM {schema.CALL_EVENTS}") == [{"ts": ts}]


def test_final_returns_the_highest_cdr_version_whatever_the_arrival_order(store):
    revisions = [make_cdr("c1", version=3, disposition=Disposition.ANSWERED, closed=True),
                 make_cdr("c1", version=1),
                 make_cdr("c1", version=2, disposition=Disposition.ANSWERED)]
    loader = Loader(store, ROUTES, lambda d: None)
    for i, revision in enumerate(revisions):  # three separate inserts: three parts
        loader.load(cdr_records([revision], first_offset=i))
    assert count(store, schema.CDRS) == 3
    rows = store.query(f"SELECT version, closed FROM {schema.CDRS} FINAL "
                       "WHERE tenant = {t:String} AND call_id = {c:String}",
                       {"t": "acme", "c": "c1"})
    assert rows == [{"version": 3, "closed": True}]


def test_dead_letters_are_published_and_counted(store):
    published = []
    loader = Loader(store, ROUTES, dead_letters=published.extend)
    records = event_records([make_event("e1")]) + [
        Record(SETTINGS.topic_call_events, 0, 1, b"garbage")]
    loader.load(records)
    assert [d.offset for d in published] == [1]
    assert loader.stats.dead_letters == 1
    assert loader.stats.rows[schema.CALL_EVENTS] == 1


def test_messages_of_an_unknown_topic_are_dead_letters(store):
    published = []
    Loader(store, ROUTES, dead_letters=published.extend).load([Record("other", 0, 0, b"{}")])
    assert "no warehouse table" in published[0].error


def test_partitions_written_together_twice_add_nothing_and_one_table_per_insert(store):
    """Two partitions of call-events in one INSERT (the token joins both ranges): written
    again, nothing is added. Batches of two tables cannot share an INSERT."""
    a = build_batch(event_records([make_event("a1"), make_event("a2")], 10), EVENTS)
    b = build_batch(event_records([make_event("b1")], 3, partition=1), EVENTS)
    write_batches(store, [a, b])
    write_batches(store, [a, b])
    assert count(store, schema.CALL_EVENTS) == 3
    with pytest.raises(ValueError, match="one table"):
        write_batches(store, [a, build_batch(cdr_records([make_cdr()]), CDRS)])


# --- the Kafka edge, with a fake consumer ----------------------------------------------------

TP = namedtuple("TP", "topic partition")
Message = namedtuple("Message", "topic partition offset value")


class FakeConsumer:
    def __init__(self, polls):
        self.polls = list(polls)
        self.commits, self.seeks = [], []

    def poll(self, timeout_ms=0, max_records=None):
        return self.polls.pop(0) if self.polls else {}

    def commit(self, offsets=None):
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def seek(self, partition, offset):
        self.seeks.append((partition, offset))


def messages(records):
    return [Message(r.topic, r.partition, r.offset, r.value) for r in records]


def test_offsets_are_committed_after_the_write(store):
    tp_events, tp_cdrs = TP(SETTINGS.topic_call_events, 0), TP(SETTINGS.topic_cdrs, 3)
    consumer = FakeConsumer([{
        tp_events: messages(event_records([make_event("e1"), make_event("e2")], 40)),
        tp_cdrs: messages(cdr_records([make_cdr()], 7, partition=3))}])
    assert poll_once(consumer, Loader(store, ROUTES, lambda d: None)) == 3
    assert consumer.commits == [{tp_events: 42}, {tp_cdrs: 8}]
    assert count(store, schema.CALL_EVENTS) == 2 and count(store, schema.CDRS) == 1


class CountingClient:
    """The store, counting INSERTs per table."""

    def __init__(self, inner):
        self.inner, self.inserts = inner, []

    def query(self, sql, params=None):
        return self.inner.query(sql, params)

    def insert_rows(self, table, rows, dedup_token=None):
        self.inserts.append((table, len(rows)))
        self.inner.insert_rows(table, rows, dedup_token=dedup_token)


def test_a_poll_writes_one_insert_per_table_then_commits_its_partitions(store):
    """Four partitions of call-events and one of cdrs in one poll: two INSERTs (chdb spends
    ~15 ms of CPU on each whatever its size), then each table's partitions committed.
    Polled again from the same offsets (a crash before the commit), nothing is doubled."""
    parts = {TP(SETTINGS.topic_call_events, p): messages(event_records(
        [make_event(f"p{p}e{i}") for i in range(3)], 20 * p, partition=p)) for p in range(4)}
    tp_cdrs = TP(SETTINGS.topic_cdrs, 2)
    poll = {**parts, tp_cdrs: messages(cdr_records([make_cdr()], 7, partition=2))}
    client = CountingClient(store)
    consumer = FakeConsumer([poll, poll])
    loader = Loader(client, ROUTES, lambda d: None)
    assert poll_once(consumer, loader) == 13
    assert client.inserts == [(schema.CALL_EVENTS, 12), (schema.CDRS, 1)]
    assert consumer.commits == [{tp: 20 * tp.partition + 3 for tp in parts}, {tp_cdrs: 8}]
    assert poll_once(consumer, Loader(client, ROUTES, lambda d: None)) == 13
    assert client.inserts == [(schema.CALL_EVENTS, 12), (schema.CDRS, 1)]  # all skipped
    assert count(store, schema.CALL_EVENTS) == 12 and count(store, schema.CDRS) == 1


class FailingClient:
    """A warehouse that is down: every write fails."""

    def __init__(self, inner):
        self.inner = inner

    def query(self, sql, params=None):
        return self.inner.query(sql, params)

    def insert_rows(self, table, rows, dedup_token=None):
        raise QueryError("Code: 241. DB::Exception: Memory limit exceeded", 241)


def test_a_failed_write_commits_nothing_and_rewinds_every_pending_partition(store):
    tp_a, tp_b = TP(SETTINGS.topic_call_events, 0), TP(SETTINGS.topic_call_events, 1)
    consumer = FakeConsumer([{
        tp_a: messages(event_records([make_event("e1")], 5)),
        tp_b: messages(event_records([make_event("e2")], 9, partition=1))}])
    with pytest.raises(QueryError):
        poll_once(consumer, Loader(FailingClient(store), ROUTES, lambda d: None))
    assert consumer.commits == []
    assert consumer.seeks == [(tp_a, 5), (tp_b, 9)]


class FakeFuture:
    def get(self, timeout=None):
        return None


class FakeProducer:
    def __init__(self):
        self.sent, self.flushed = [], 0

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout=None):
        self.flushed += 1


def test_kafka_dead_letters_are_sent_keyed_by_origin_and_flushed():
    producer = FakeProducer()
    KafkaDeadLetters(producer, SETTINGS.topic_dead_letter)(
        [DeadLetter("tawag.cdrs", 1, 2, "bad", "x")])
    assert producer.sent == [(SETTINGS.topic_dead_letter, b"tawag.cdrs:1:2",
                              DeadLetter("tawag.cdrs", 1, 2, "bad", "x").to_json())]
    assert producer.flushed == 1
