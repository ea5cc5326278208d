"""The bridge's metrics endpoint, scraped after real evapi traffic over TCP.

The events go through the production path (the spool sink, then the forwarder) into the
fake Kafka of ``test_forwarder``, which acknowledges nothing until it is "up": the spool
gauges fill, then drain, and "produced" counts only what Kafka acknowledged.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from metrics_scrape import scrape, total, value
from prometheus_client import CollectorRegistry
from test_bridge import GREETING, call, ns, wait_until
from test_forwarder import FakeKafka

from core.metrics import serve
from ingest.bridge import CHANNEL_DEAD_LETTERS, CHANNEL_EVENTS, Bridge, Forwarder, SpoolSink
from ingest.decode import DecodeContext
from ingest.metrics import dead_letter_reason, watch_spool
from ingest.spool import Spool

CTX = DecodeContext(source="kamailio@test", tenant_for_domain=lambda d: "acme")
TOPICS = {CHANNEL_EVENTS: "events", CHANNEL_DEAD_LETTERS: "dead"}


def test_scrape_shows_events_spool_produced_dead_letters_and_reconnects(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sessions = [
        [GREETING + call("call.start", "c1", 10.0) + call("call.ringing", "c1", 10.5, code=180)
         + ns(b"{broken") + ns({"event": "call.teleport", "ts": 1})],
        [GREETING + call("call.start", "c2", 12.0), b"zz:not-a-netstring"],
    ]
    stop = threading.Event()

    def evapi():
        for chunks in sessions:
            conn, _ = server.accept()
            with conn:
                for chunk in chunks:
                    conn.sendall(chunk)
                    time.sleep(0.1)  # separate reads
        conn, _ = server.accept()  # the third connection stays open
        with conn:
            conn.sendall(GREETING)
            stop.wait(10)
        server.close()

    kafka = FakeKafka()  # down: accepts sends, acknowledges nothing yet
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    forwarder = Forwarder(spool, kafka.connect, TOPICS, slow_s=0.05)
    registry_hook = watch_spool(forwarder.metrics)
    metrics = serve("127.0.0.1", 0, "ingest")
    before = scrape(metrics.url)
    bridge = Bridge(("127.0.0.1", port), CTX, SpoolSink(spool, forwarder))
    threads = [threading.Thread(target=evapi, daemon=True),
               threading.Thread(target=bridge.run, args=(stop,), daemon=True),
               threading.Thread(target=forwarder.run, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: bridge.stats.connects == 3 and bridge.stats.ready.is_set(), timeout=10.0)
        wait_until(lambda: forwarder.filling_since is not None, timeout=10.0)
        down = scrape(metrics.url)
        kafka.up.set()
        wait_until(lambda: spool.depth == 0, timeout=10.0)
        after = scrape(metrics.url)
    finally:
        stop.set()
        for t in threads[1:]:
            t.join(5)
        metrics.stop()
        from prometheus_client import REGISTRY

        REGISTRY.unregister(registry_hook)
        spool.close()

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("tawag_ingest_events_total", type="call.offered") == 2
    assert delta("tawag_ingest_events_total", type="call.ringing") == 1
    assert delta("tawag_ingest_dead_letters_total", reason="not_json") == 1
    assert delta("tawag_ingest_dead_letters_total", reason="unknown_event") == 1
    assert delta("tawag_ingest_dead_letters_total", reason="framing") == 1
    assert delta("tawag_ingest_evapi_connects_total") == 3
    assert delta("tawag_ingest_evapi_reconnects_total") == 2
    assert value(after, "tawag_ingest_evapi_connected") == 1
    # while Kafka is away: spooled, not produced
    assert value(down, "tawag_ingest_spool_depth") == 6  # 3 events + 3 dead letters
    assert value(down, "tawag_ingest_spool_filling") == 1
    assert total(down, "tawag_ingest_events_produced_total") == total(
        before, "tawag_ingest_events_produced_total")
    # once it is back: every event acknowledged, the spool drained
    assert delta("tawag_ingest_events_produced_total") == 3
    assert value(after, "tawag_ingest_spool_depth") == 0
    assert value(after, "tawag_ingest_spooled_total") == 6
    assert value(after, "tawag_ingest_forwarded_total") == 6
    assert len(kafka.log) == 6


@pytest.mark.parametrize(("error", "reason"), [
    ("evapi payload is not JSON: Expecting value", "not_json"),
    ("evapi payload is not a JSON object", "not_object"),
    ("unknown evapi event 'call.teleport'", "unknown_event"),
    ("call.start: missing call_id", "missing_field"),
    ("bad netstring length: b'zz'", "framing"),
    ("code: expected an integer SIP code, got 'x'", "invalid_field"),
])
def test_dead_letter_reasons_are_a_small_fixed_set(error, reason):
    assert dead_letter_reason(error) == reason


def test_a_spool_is_exported_through_one_hook():
    registry = CollectorRegistry()
    state = {"spool_depth": 3, "spooled_total": 10, "spool_overflow_total": 0,
             "spool_new_thing": 1}
    watch_spool(lambda: dict(state), registry)
    server = serve("127.0.0.1", 0, "ingest", registry)
    try:
        first = scrape(server.url)
        state.update(spool_depth=0, spooled_total=12, spool_overflow_total=4)
        second = scrape(server.url)
    finally:
        server.stop()
    assert value(first, "tawag_ingest_spool_depth") == 3
    assert value(second, "tawag_ingest_spool_depth") == 0
    assert value(second, "tawag_ingest_spooled_total") == 12
    assert value(second, "tawag_ingest_spool_overflow_total") == 4
    assert value(second, "tawag_ingest_spool_new_thing") == 1
