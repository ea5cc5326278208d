"""No event lost while Kafka is away: the ingest bridge's spool against a real broker.

A fake Kamailio (a TCP peer speaking evapi's netstrings, as in tests/ingest/test_bridge.py)
feeds the bridge; the broker is the real KRaft broker of tests/kafka/test_broker.py,
stopped and started by PID on ports 25092/25093 (apart from that module's 29092).

1. Broker stopped while the bridge runs: the bridge keeps taking events into its spool;
   once the broker is back they all reach ``tawag.call-events`` exactly once, in order per
   call, and the spool is empty.
2. Broker stopped, the bridge process (``python -m tawag ingest``) SIGKILLed with a full
   spool, restarted while the broker is still down and fed more events of the same calls,
   then the broker started: the spooled events go first, everything arrives exactly once,
   in order per call.

Every wait is on a named condition (events in the spool on disk, the spool drained, the
events on the topic).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from test_broker import Broker, _port_free

from core.events import from_json
from core.settings import REPO_ROOT, Settings, load, to_environ
from ingest.bridge import (
    CHANNEL_DEAD_LETTERS,
    CHANNEL_EVENTS,
    Bridge,
    Forwarder,
    SpoolSink,
    kafka_producer,
)
from ingest.decode import DecodeContext
from ingest.repeats import published_ids
from ingest.service import ready_file
from ingest.spool import Spool, scan
from tawag import kafka as tk

pytestmark = pytest.mark.integration

KAFKA_PORT, CONTROLLER_PORT, EVAPI_PORT = 25092, 25093, 25448
EVENTS = ("call.start", "call.ringing", "call.answered", "call.end")
SCHEMA_TYPES = {"call.start": "call.offered", "call.ringing": "call.ringing",
                "call.answered": "call.answered", "call.end": "call.ended"}


def wait_for(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    """Poll ``condition`` until truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval, not a wait for an event
    return value


def ns(payload: dict) -> bytes:
    raw = json.dumps(payload).encode()
    return b"%d:%s," % (len(raw), raw)


GREETING = ns({"event": "evapi.connected", "ts": 1.0, "client": "x"})


def evapi(event: str, call_id: str, ts: float) -> bytes:
    extra = {"call.ringing": {"code": 180}, "call.answered": {"code": 200},
             "call.end": {"answered_ts": ts - 1, "duration": 1}}.get(event, {})
    return ns({"event": event, "ts": ts, "call_id": call_id, "from": "101", "to": "102",
               **extra})


def steps(call_ids: list[str], events: tuple[str, ...], t0: float) -> tuple[bytes, list]:
    """The evapi bytes of ``events`` for each call, interleaved across calls, and the
    (call, schema type) pairs the topic must show."""
    wire, expected = b"", []
    for step, event in enumerate(events):
        for i, call_id in enumerate(call_ids):
            wire += evapi(event, call_id, t0 + step + i / 1000)
            expected.append((call_id, SCHEMA_TYPES[event]))
    return wire, expected


class EvapiPeer:
    """Plays Kamailio's evapi server: accepts the bridge, greets it, sends what it is told."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.5)
        self.conn: socket.socket | None = None

    def accept(self, alive: Callable[[], bool] = lambda: True, timeout: float = 60) -> None:
        """Wait for the bridge to connect (failing early if ``alive`` turns false)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        deadline = time.monotonic() + timeout
        while self.conn is None:
            assert alive(), "the bridge died before connecting to evapi"
            assert time.monotonic() < deadline, "the bridge never connected to evapi"
            try:
                self.conn, _ = self.server.accept()
            except TimeoutError:
                continue
        self.conn.sendall(GREETING)

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


def topic_records(settings: Settings, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    """(key, value) of every message on ``topic``, per partition in offset order, from
    offset 0 up to the end offsets read first."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, f"stuck below end offsets {end}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.partition] += [(r.key, r.value) for r in records if r.offset < end[tp]]
        return out
    finally:
        consumer.close()


def read_topic(settings: Settings, prefix: str) -> list[tuple[str, str, str]]:
    """(call id, type, event_id) of every event of calls named ``prefix*`` on the events
    topic, in partition order."""
    out: list[tuple[str, str, str]] = []
    for _, records in sorted(topic_records(settings, settings.topic_call_events).items()):
        for key, value in records:
            ev = from_json(value)
            assert key == ev.call_id.encode()
            if ev.call_id.startswith(prefix):
                out.append((ev.call_id, ev.type.value, ev.event_id))
    return out


def assert_exactly_once_in_order(got: list[tuple[str, str, str]], expected: list) -> None:
    """Each event once (by event_id), and each call's events in the order they were sent."""
    duplicated = {eid: n for eid, n in Counter(eid for _, _, eid in got).items() if n > 1}
    assert duplicated == {}, f"duplicated on the topic: {duplicated}"
    per_call_got: dict[str, list[str]] = defaultdict(list)
    per_call_expected: dict[str, list[str]] = defaultdict(list)
    for call_id, typ, _ in got:
        per_call_got[call_id].append(typ)
    for call_id, typ in expected:
        per_call_expected[call_id].append(typ)
    assert dict(per_call_got) == dict(per_call_expected)
    assert len(got) == len(expected)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = load(data_dir=tmp_path_factory.mktemp("spool-outage"),
             kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
             kafka_controller_port=CONTROLLER_PORT, evapi_port=EVAPI_PORT,
             sip_port=25060, kamailio_http_port=25071)
    if tk.missing_jars(s):
        pytest.skip(f"Kafka jars not installed in {s.kafka_libs}: run {tk.INSTALLER}")
    for port in (KAFKA_PORT, CONTROLLER_PORT, EVAPI_PORT):
        if not _port_free(port):
            pytest.fail(f"port {port} is busy: something from an earlier run is still up?")
    return s


@pytest.fixture(scope="module")
def broker(settings: Settings) -> Iterator[Broker]:
    b = Broker(settings)
    try:
        b.start()
        tk.ensure_topics(settings)
        yield b
    finally:
        b.stop()


@pytest.fixture
def peer() -> Iterator[EvapiPeer]:
    p = EvapiPeer(EVAPI_PORT)
    yield p
    p.close()


def test_broker_restart_loses_nothing_while_the_bridge_runs(
        broker: Broker, peer: EvapiPeer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    s = broker.settings
    calls = [f"run-{i}" for i in range(12)]
    spool = Spool(tmp_path / "spool", max_bytes=s.ingest_spool_max_bytes)
    forwarder = Forwarder(spool, lambda: kafka_producer(s.kafka_bootstrap),
                          {CHANNEL_EVENTS: s.topic_call_events,
                           CHANNEL_DEAD_LETTERS: s.topic_dead_letter}, slow_s=1.0)
    ctx = DecodeContext(source="kamailio@test", tenant_for_domain=lambda d: "acme")
    bridge = Bridge(("127.0.0.1", EVAPI_PORT), ctx, SpoolSink(spool, forwarder))
    stop = threading.Event()
    threads = [threading.Thread(target=target, args=(stop,), daemon=True)
               for target in (bridge.run, forwarder.run)]
    caplog.set_level(logging.INFO, logger="tawag.ingest")
    for t in threads:
        t.start()
    try:
        peer.accept()
        before, expected_before = steps(calls, EVENTS[:1], 100.0)
        peer.send(before)  # the broker is up: these go straight through
        wait_for("the first events acknowledged by Kafka",
                 lambda: forwarder.delivered_total == len(calls) and spool.depth == 0, 60)

        broker.stop()
        during, expected_during = steps(calls, EVENTS[1:], 100.0 + 1)
        peer.send(during)
        n_during = len(expected_during)
        wait_for("the bridge to take every event sent during the outage",
                 lambda: bridge.stats.events == len(calls) + n_during, 30)
        wait_for("the forwarder to say the spool is filling",
                 lambda: forwarder.filling_since is not None, 30)
        on_disk = scan(spool.directory)
        assert [(from_json(r.value).call_id, from_json(r.value).type.value)
                for r in on_disk] == expected_during  # in the spool, fsynced, in order
        assert spool.depth == n_during and forwarder.delivered_total == len(calls)

        broker.start()
        wait_for("the spool to drain into Kafka",
                 lambda: spool.depth == 0 and forwarder.filling_since is None, 120)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        spool.close()
    assert_exactly_once_in_order(read_topic(s, "run-"), expected_before + expected_during)
    assert forwarder.delivered_total == len(calls) + n_during
    assert "spool filling" in caplog.text and "spool drained" in caplog.text
    assert spool.overflowed == 0


def test_bridge_killed_while_the_broker_is_down_delivers_its_spool_first(
        broker: Broker, peer: EvapiPeer, tmp_path: Path) -> None:
    s = broker.settings
    calls = [f"kill-{i}" for i in range(10)]
    env = {**os.environ, **to_environ(s), "PYTHONPATH": str(REPO_ROOT)}
    log_path = tmp_path / "ingest.log"

    def start_bridge() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tawag", "ingest"], cwd=REPO_ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        peer.accept(alive=lambda: proc.poll() is None)
        wait_for("the bridge to read evapi", lambda: ready_file(s).exists(), 30)
        return proc

    def spooled() -> list[tuple[str, str]]:
        return [(from_json(r.value).call_id, from_json(r.value).type.value)
                for r in scan(s.spool_dir)]

    broker.stop()
    bridge = start_bridge()
    try:
        first, expected_first = steps(calls, EVENTS[:2], 200.0)
        peer.send(first)
        wait_for("every event of the first run in the spool on disk",
                 lambda: spooled() == expected_first, 30)

        bridge.send_signal(signal.SIGKILL)
        assert bridge.wait(10) == -signal.SIGKILL
        assert spooled() == expected_first  # nothing lost with the process

        bridge = start_bridge()  # the broker is still down
        second, expected_second = steps(calls, EVENTS[2:], 202.0)
        peer.send(second)
        wait_for("the second run's events behind the first run's in the spool",
                 lambda: spooled() == expected_first + expected_second, 30)

        broker.start()
        wait_for("the spool to drain into Kafka", lambda: spooled() == [], 120)
        got = read_topic(s, "kill-")
    finally:
        if bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(30)
    log_text = log_path.read_text(errors="replace")
    assert bridge.returncode == 0, log_text[-3000:]
    assert_exactly_once_in_order(got, expected_first + expected_second)
    assert "20 events from an earlier run still wait for Kafka" in log_text
    assert "spool drained" in log_text and "Traceback" not in log_text


def test_the_bridge_reads_the_last_events_of_each_partition(broker: Broker) -> None:
    """What a starting bridge learns of what is already published (``ingest.repeats``):
    exactly the event ids of the last ``per_partition`` messages of each partition."""
    s = broker.settings
    topic = "tawag.tail-test"  # created on first use, with the stack's partition count
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    for i in range(40):
        producer.send(topic, key=f"tail-{i % 7}".encode(),
                      value=json.dumps({"event_id": f"tail-{i}"}).encode())
    producer.flush()
    producer.close()
    by_partition = {p: [json.loads(value)["event_id"] for _, value in records]
                    for p, records in topic_records(s, topic).items()}
    assert len(by_partition) > 1  # the keys spread over several partitions
    expected = sorted(i for ids in by_partition.values() for i in ids[-3:])
    assert sorted(published_ids(s.kafka_bootstrap, topic, 3)) == expected
