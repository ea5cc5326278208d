from datetime import UTC, datetime

import pytest

from core.events import (
    AGENT_TYPES,
    CALL_KEYED,
    CALL_TYPES,
    Direction,
    Event,
    EventType,
    InvalidEvent,
    from_json,
    to_json,
)

TS = datetime(2026, 11, 26, 7, 1, 2, 345000, tzinfo=UTC)


def make(**kw) -> Event:
    base = dict(event_id="e1", type=EventType.CALL_ANSWERED, tenant="acme", ts=TS,
                source="kamailio@test", call_id="c1", caller="101", callee="102",
                direction=Direction.INTERNAL, agent="102", sip_code=200)
    return Event(**(base | kw))


def test_round_trip_is_lossless_and_stable():
    ev = make(media={"mos": 4.3}, extra={"origin": "downstream"})
    wire = to_json(ev)
    assert from_json(wire) == ev
    assert to_json(from_json(wire)) == wire
    assert b'"ts":"2026-11-26T07:01:02.345Z"' in wire
    assert b'"schema":1' in wire


def test_every_type_is_keyed_by_its_call_or_its_agent():
    assert set(EventType) == CALL_KEYED | AGENT_TYPES
    assert not CALL_KEYED & AGENT_TYPES
    assert {EventType.ROUTE_DECIDED} == CALL_KEYED - CALL_TYPES


def test_keys_keep_a_call_on_one_partition_and_agents_by_tenant():
    assert make().key == "c1"
    reg = make(type=EventType.AGENT_REGISTERED, call_id=None, agent="101")
    assert reg.key == "acme:101"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"event_id":"e","type":"call.offered","tenant":"a","source":"s"}', "missing fields: ts"),
        (b'{"event_id":"e","type":"call.exploded","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z","call_id":"c"}', "unknown event type"),
        (b'{"event_id":"e","type":"call.offered","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z"}', "call_id: missing"),
        (b'{"event_id":"e","type":"call.failed","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00","call_id":"c"}', "without a time zone"),
        (b'{"event_id":"e","type":"call.failed","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z","call_id":"c","sip_code":"486"}', "sip_code: expected"),
        (b'{"event_id":"e","type":"call.failed","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z","call_id":"c","sip_code":999}', "out of range"),
        (b'{"event_id":"e","type":"agent.registered","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z"}', "agent: missing"),
        (b'{"event_id":"e","type":"call.failed","tenant":"a","source":"s","bogus":1,'
         b'"ts":"2026-11-26T00:00:00Z","call_id":"c"}', "unknown fields: bogus"),
        (b'{"schema":2,"event_id":"e","type":"call.failed","tenant":"a","source":"s",'
         b'"ts":"2026-11-26T00:00:00Z","call_id":"c"}', "unsupported version"),
    ],
)
def test_invalid_input_is_refused_with_its_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        from_json(raw)


def test_to_dict_is_the_dataclass_form_and_copies_what_it_may_share():
    """The field-by-field to_dict gives exactly what dataclasses.asdict gave (so the wire
    bytes did not change), and changing it leaves the frozen event alone."""
    import dataclasses

    from core.events import to_dict

    ev = Event(event_id="e1", type=EventType.CALL_ENDED, tenant="acme",
               ts=datetime(2026, 12, 6, 10, 0, 0, 5000, tzinfo=UTC), source="edge",
               call_id="c1", direction=Direction.INBOUND, media={"mos": 4.1},
               extra={"legs": [{"agent": "102", "ms": 1500}], "note": "ё"})
    legacy = dataclasses.asdict(ev) | {"type": "call.ended", "direction": "inbound",
                                       "ts": "2026-12-06T10:00:00.005Z"}
    assert to_dict(ev) == legacy
    out = to_dict(ev)
    out["extra"]["legs"][0]["agent"] = "999"
    out["media"]["mos"] = 1.0
    assert ev.extra["legs"][0]["agent"] == "102" and ev.media == {"mos": 4.1}
