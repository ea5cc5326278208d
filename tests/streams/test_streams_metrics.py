"""The stream processors' metrics: events in (Faust sensor) and out per agent, dead
letters, and the consumer-lag arithmetic, scraped from a served registry after the
agents ran in Faust's test context."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust_harness import run, streams_on_channels
from metrics_scrape import scrape, total, value
from test_cdr_agent import ANSWERED, ENDED, KEY, OFFERED, RINGING

from core.events import to_json
from core.metrics import serve
from core.settings import load
from streams.metrics import CONSUMER_LAG, LagMonitor, group_lag


@pytest.fixture()
def metrics():
    server = serve("127.0.0.1", 0, "streams")
    yield server
    server.stop()


def test_events_in_and_out_and_dead_letters_per_agent(tmp_path: Path, metrics) -> None:
    streams = streams_on_channels(load(environ={}, data_dir=tmp_path))
    events = [(KEY, to_json(e)) for e in (OFFERED, RINGING, ANSWERED, ENDED)]
    before = scrape(metrics.url)
    cdr_out = run(streams, "cdr", [*events, (b"bad", b"{not json")])
    router_out = run(streams, "agent_router", events)
    after = scrape(metrics.url)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("tawag_streams_events_in_total", agent="cdr-assembly",
                 topic="tawag.call-events") == 5
    assert delta("tawag_streams_events_in_total", agent="agent-router") == 4
    assert delta("tawag_streams_events_out_total", agent="cdr-assembly",
                 output="cdrs") == len(cdr_out["cdrs"]) == 4
    assert delta("tawag_streams_events_out_total", agent="cdr-assembly",
                 output="dead_letter") == 1
    assert delta("tawag_streams_dead_letters_total", agent="cdr-assembly") == 1
    assert delta("tawag_streams_events_out_total", agent="agent-router",
                 output="agent_events") == len(router_out["agent_events"]) > 0


class TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TP) and (self.topic, self.partition) == (
            other.topic, other.partition)


class Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_lag_is_end_minus_committed_and_vanished_partitions_are_dropped(metrics) -> None:
    p0, p1 = TP("tawag.call-events", 0), TP("tawag.call-events", 1)

    class Admin:
        committed = {p0: Meta(40), p1: Meta(7)}

        def list_group_offsets(self, group):
            assert group == "g-test"
            return {group: dict(self.committed)}

    class Consumer:
        ends = {p0: 52, p1: 7}

        def end_offsets(self, tps):
            return {tp: self.ends[tp] for tp in tps}

    admin, consumer = Admin(), Consumer()
    monitor = LagMonitor("unused:1", "g-test", 1.0)
    assert monitor.check(admin, consumer) == {p0: 12, p1: 0}
    first = scrape(metrics.url)
    assert value(first, "tawag_streams_consumer_lag", group="g-test",
                 topic="tawag.call-events", partition="0") == 12
    assert ("tawag_streams_consumer_lag", frozenset(
        {"group": "g-test", "topic": "tawag.call-events", "partition": "1"}.items())) in first
    Admin.committed = {p0: Meta(52)}  # partition 1 left the group's commits
    monitor.check(admin, consumer)
    second = scrape(metrics.url)
    assert value(second, "tawag_streams_consumer_lag", group="g-test",
                 topic="tawag.call-events", partition="0") == 0
    assert ("tawag_streams_consumer_lag", frozenset(
        {"group": "g-test", "topic": "tawag.call-events", "partition": "1"}.items())) \
        not in second
    CONSUMER_LAG.remove("g-test", "tawag.call-events", "0")


def test_group_lag_ignores_partitions_without_a_commit_or_end() -> None:
    p0, p1, p2 = TP("t", 0), TP("t", 1), TP("t", 2)
    assert group_lag({p0: Meta(-1), p1: Meta(5), p2: Meta(9)}, {p1: 8, p0: 3}) == {p1: 3}


def test_a_failing_lag_check_is_counted_and_retried(metrics) -> None:
    calls = []

    def clients():
        calls.append(1)
        raise ConnectionError("no broker")

    before = total(scrape(metrics.url), "tawag_streams_lag_check_errors_total")
    monitor = LagMonitor("unused:1", "g-test", 0.01, clients=clients).start()
    try:
        import time

        deadline = time.monotonic() + 5
        while len(calls) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        monitor.stop()
    assert total(scrape(metrics.url), "tawag_streams_lag_check_errors_total") - before >= 3
