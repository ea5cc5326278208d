"""The edge's resend on connect adds nothing the bridge already published.

Tried: events read, then the same events sent again as Kamailio does to a client that
connects (route[EVAPI_DRAIN] repeats its last EVAPI_RESEND), mixed with new ones; a
bridge started with events still in its spool, some of which Kafka already holds.
Asserted: each event reaches the spool once, in order, repeats are counted and logged,
and a sink wrapping the spool's (the reconciler's tracking) still sees the resend;
the spooled events already in Kafka are acknowledged in the spool instead of being sent
again, the others stay pending; the memory stays bounded.
"""

import json
import logging

import pytest
from test_bridge import CTX, GREETING, call

from core.events import Event, from_json, to_json
from core.settings import Settings
from ingest import service
from ingest.bridge import CHANNEL_EVENTS, Bridge, SpoolSink
from ingest.decode import decode_evapi
from ingest.repeats import RecentEvents, event_id_of_record
from ingest.spool import Spool


def start_event(call_id: str, ts: float) -> Event:
    payload = {"event": "call.start", "ts": ts, "call_id": call_id, "from": "101", "to": "102"}
    return decode_evapi(json.dumps(payload).encode(), CTX)


def test_recent_events_forget_the_oldest_past_their_capacity():
    recent = RecentEvents(3, ["a", "b", "c"])
    recent.add("d")
    assert "a" not in recent and [i in recent for i in "bcd"] == [True] * 3
    recent.add("b")  # seen again: now the newest
    recent.add("e")
    assert "c" not in recent and "b" in recent and len(recent) == 3


class Following:
    """A sink wrapping another, the way the reconciler's TrackingSink does."""

    def __init__(self, sink) -> None:
        self.sink, self.seen = sink, []

    def event(self, ev):
        self.seen.append(ev.type.value)
        self.sink.event(ev)

    def dead_letter(self, record):
        self.sink.dead_letter(record)

    def flush(self):
        self.sink.flush()


def test_a_resent_event_already_published_is_not_spooled_again(
        tmp_path, caplog: pytest.LogCaptureFixture):
    frames = [call("call.start", "c1", 10.0), call("call.ringing", "c1", 10.5, code=180),
              call("call.answered", "c1", 11.0, code=200)]
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    sink = SpoolSink(spool, recent=RecentEvents(10))
    following = Following(sink)
    bridge = Bridge(("127.0.0.1", 0), CTX, following)
    assert bridge.handle_bytes(GREETING + frames[0] + frames[1]) == b""
    caplog.set_level(logging.INFO, logger="tawag.ingest")
    # reconnect: the edge greets, resends the last two it sent, then the new one
    bridge.handle_bytes(GREETING + frames[0] + frames[1] + frames[2])
    spooled = [from_json(r.value) for r in spool.pending(10)]
    assert [e.type.value for e in spooled] == ["call.offered", "call.ringing",
                                               "call.answered"]
    assert len({e.event_id for e in spooled}) == 3 and sink.repeats == 2
    # what wraps the spool (the reconciler's tracking) still hears the edge's resend
    assert following.seen == ["call.offered", "call.ringing"] * 2 + ["call.answered"]
    assert "dropped 2 events the edge sent again that were already published" in caplog.text
    spool.close()


def test_without_a_memory_every_event_is_spooled(tmp_path):
    frame = call("call.start", "c1", 10.0)
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    Bridge(("127.0.0.1", 0), CTX, SpoolSink(spool)).handle_bytes(frame + frame)
    assert spool.depth == 2  # downstream recognises the repeat by its event_id
    spool.close()


def test_spooled_events_already_in_kafka_are_not_sent_again(tmp_path, monkeypatch):
    events = [start_event(f"c{i}", 10.0 + i) for i in range(4)]
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    seqs = [spool.append(CHANNEL_EVENTS, ev.key.encode(), to_json(ev)) for ev in events]
    spool.sync()
    in_kafka = [events[0].event_id, events[1].event_id, "older-event"]
    asked = []

    def published_ids(bootstrap, topic, per_partition):
        asked.append((topic, per_partition))
        return in_kafka

    monkeypatch.setattr(service, "published_ids", published_ids)
    settings = Settings(evapi_resend=7)
    recent = service.known_events(settings, spool)
    assert asked == [(settings.topic_call_events, 7)]
    assert [r.seq for r in spool.pending(10)] == seqs[2:]
    assert all(ev.event_id in recent for ev in events) and "older-event" in recent
    assert [event_id_of_record(r.value) for r in spool.pending(10)] == [
        ev.event_id for ev in events[2:]]
    spool.close()


def test_a_broker_that_cannot_be_asked_leaves_the_spool_as_it_is(tmp_path, monkeypatch,
                                                                  caplog):
    ev = start_event("c1", 10.0)
    spool = Spool(tmp_path / "spool", max_bytes=2**20)
    spool.append(CHANNEL_EVENTS, ev.key.encode(), to_json(ev))
    spool.sync()

    def unreachable(*_args):
        raise OSError("no brokers")

    monkeypatch.setattr(service, "published_ids", unreachable)
    recent = service.known_events(Settings(), spool)
    assert ev.event_id in recent and spool.depth == 1
    assert "could not read the last events of" in caplog.text
    spool.close()
