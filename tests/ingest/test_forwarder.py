"""The bridge's spool sink and the forwarder against a fake Kafka that can go away.

Tried: Kafka down while events arrive (acknowledging nothing), Kafka unreachable when
the forwarder first connects, Kafka failing one record of a batch, a full spool. Asserted:
the bridge never waits for Kafka; every event reaches the fake topic exactly once and in
spool order once Kafka is back; nothing is forgotten before Kafka acknowledged it; the
spool's filling and drained moments and every refused event are in the log and the
counters.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

from core.events import from_json
from ingest.bridge import CHANNEL_DEAD_LETTERS, CHANNEL_EVENTS, Bridge, Forwarder, SpoolSink
from ingest.decode import DecodeContext
from ingest.spool import Spool

CTX = DecodeContext(source="kamailio@test", tenant_for_domain=lambda d: "acme")
TOPICS = {CHANNEL_EVENTS: "events", CHANNEL_DEAD_LETTERS: "dead"}


def ns(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def frame(event: str, call_id: str, ts: float) -> bytes:
    return ns(b'{"event":"%s","ts":%r,"call_id":"%s","from":"101","to":"102"}'
              % (event.encode(), ts, call_id.encode()))


def calls(n_calls: int, first_ts: float = 10.0) -> bytes:
    """``n_calls`` calls' start/ringing events, interleaved between calls."""
    return b"".join(frame(event, f"c{i}", first_ts + step + i / 100)
                    for step, event in enumerate(("call.start", "call.ringing"))
                    for i in range(n_calls))


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval
    return value


class FakeKafka:
    """A topic log; while ``up`` is clear, sends are accepted and never acknowledged."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.log: list[tuple[str, bytes, bytes]] = []
        self.refuse_connect = 0
        self.fail_sends: set[int] = set()  # indices (over all sends) that fail
        self.sends = 0
        self.producers = 0

    def connect(self) -> FakeProducer:
        if self.refuse_connect:
            self.refuse_connect -= 1
            raise KafkaTimeoutError("Unable to bootstrap")
        self.producers += 1
        return FakeProducer(self)


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.waiting: list[tuple[Future, tuple[str, bytes, bytes], bool]] = []
        self.closed = False

    def send(self, topic: str, *, key: bytes, value: bytes) -> Future:
        future = Future()
        self.waiting.append((future, (topic, key, value), self.kafka.sends in
                             self.kafka.fail_sends))
        self.kafka.sends += 1
        return future

    def flush(self, timeout: float | None = None) -> None:
        if not self.kafka.up.wait(timeout):
            raise KafkaTimeoutError("flush")
        for future, record, fails in self.waiting:
            if fails:
                future.failure(NotLeaderForPartitionError())
            else:
                self.kafka.log.append(record)
                future.success(None)
        self.waiting.clear()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def spool(tmp_path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", max_bytes=2**20)
    yield s
    s.close()


def start(forwarder: Forwarder) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def topic_events(kafka: FakeKafka) -> list[tuple[str, str]]:
    return [(from_json(v).call_id, from_json(v).type.value) for t, _, v in kafka.log
            if t == "events"]


def test_kafka_away_events_wait_in_the_spool_and_arrive_in_order_when_it_is_back(
        kafka, spool, caplog):
    forwarder = Forwarder(spool, kafka.connect, TOPICS, batch_size=7, slow_s=0.05)
    bridge = Bridge(("127.0.0.1", 0), CTX, SpoolSink(spool, forwarder))
    stop, thread = start(forwarder)
    with caplog.at_level(logging.INFO, logger="tawag.ingest"):
        bridge.handle_bytes(calls(10))  # Kafka is down: returns at once all the same
        assert spool.depth == 20 and spool.spooled_total == 20
        wait_for("the filling line", lambda: "spool filling" in caplog.text)
        assert forwarder.metrics()["spool_filling"] == 1
        assert kafka.log == []
        kafka.up.set()
        wait_for("the spool to drain", lambda: spool.depth == 0 and "drained" in caplog.text)
    stop.set()
    thread.join(5)
    expected = [(f"c{i}", t) for t in ("call.offered", "call.ringing") for i in range(10)]
    assert topic_events(kafka) == expected
    assert [k for _, k, _ in kafka.log] == [c.encode() for c, _ in expected]
    assert forwarder.delivered_total == 20 and forwarder.metrics()["spool_filling"] == 0
    assert caplog.text.count("spool filling") == 1 and caplog.text.count("spool drained") == 1


def test_dead_letters_take_the_same_road_to_their_own_topic(kafka, spool):
    kafka.up.set()
    forwarder = Forwarder(spool, kafka.connect, TOPICS)
    bridge = Bridge(("127.0.0.1", 0), CTX, SpoolSink(spool, forwarder))
    stop, thread = start(forwarder)
    bridge.handle_bytes(ns(b"{broken") + frame("call.start", "c1", 1.0))
    wait_for("both on Kafka", lambda: len(kafka.log) == 2)
    stop.set()
    thread.join(5)
    assert [t for t, _, _ in kafka.log] == ["dead", "events"]
    assert b"not JSON" in kafka.log[0][2]


def test_kafka_unreachable_at_start_is_retried(kafka, spool):
    kafka.up.set()
    kafka.refuse_connect = 2
    forwarder = Forwarder(spool, kafka.connect, TOPICS, retry_s=0.01)
    SpoolSink(spool, forwarder).event(from_json(_event("c1")))
    spool.sync()
    stop, thread = start(forwarder)
    wait_for("the event on Kafka", lambda: len(kafka.log) == 1)
    stop.set()
    thread.join(5)
    assert forwarder.failures == 2 and kafka.producers == 1 and spool.depth == 0


def test_a_record_kafka_fails_is_sent_again_by_a_new_producer_and_none_is_lost(kafka, spool):
    kafka.up.set()
    kafka.fail_sends = {3}
    forwarder = Forwarder(spool, kafka.connect, TOPICS, batch_size=5, retry_s=0.01)
    sink = SpoolSink(spool, forwarder)
    for i in range(5):
        sink.event(from_json(_event(f"c{i}")))
    sink.flush()
    stop, thread = start(forwarder)
    wait_for("the spool to drain", lambda: spool.depth == 0)
    stop.set()
    thread.join(5)
    assert [c for c, _ in topic_events(kafka)] == ["c0", "c1", "c2", "c4", "c3"]
    assert kafka.producers == 2 and forwarder.failures == 1
    assert kafka.sends == 6  # the four acknowledged were not sent again


def test_stop_while_kafka_is_away_keeps_the_records_for_the_next_run(kafka, tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    forwarder = Forwarder(spool, kafka.connect, TOPICS)
    Bridge(("127.0.0.1", 0), CTX, SpoolSink(spool, forwarder)).handle_bytes(calls(3))
    stop, thread = start(forwarder)
    wait_for("a batch in flight", lambda: kafka.sends == 6)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    spool.close()
    again = Spool(tmp_path / "spool", max_bytes=2**20)
    assert again.depth == 6 and again.recovered == 6
    again.close()


def test_a_full_spool_logs_each_refused_event(tmp_path, caplog):
    spool = Spool(tmp_path / "spool", max_bytes=500)
    sink = SpoolSink(spool)
    with caplog.at_level(logging.WARNING):
        for i in range(4):
            sink.event(from_json(_event(f"c{i}")))
    assert spool.depth == 1 and spool.overflowed == 3
    assert caplog.text.count("call.offered of call c") == 3
    assert "event_id e-c3" in caplog.text and "is full" in caplog.text
    spool.close()


def _event(call_id: str) -> str:
    return json.dumps({"schema": 1, "event_id": f"e-{call_id}", "type": "call.offered",
                       "tenant": "acme", "ts": "2026-01-01T00:00:00.000Z", "source": "t",
                       "call_id": call_id})
