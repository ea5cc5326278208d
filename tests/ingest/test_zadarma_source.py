"""ingest.zadarma: Zadarma's notifications (crm-contracts.md §4.2) as Tawag events, and the
CDRs they fold into equal to the edge's for the same calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest
from zadarma_calls import (
    ANSWERED_CALL,
    CALLS,
    IN_ID,
    MISSED_CALL,
    MISSED_ID,
    OUT_ID,
    OUTBOUND_CALL,
    TENANT,
    ZONE,
    comparable,
    edge_calls,
    utc,
)

from core.events import Direction, EventType, InvalidEvent, from_json, to_json
from core.records import Disposition, LegOutcome
from ingest.zadarma import SourceContext, notification_id, parse_form, to_events
from streams.folds import cdr as cdr_fold

CTX = SourceContext(TENANT, ZONE)


def events_of(notifications, ctx=CTX):
    return [ev for form, at in notifications for ev in to_events(form, ctx, at)]


def folded(call_id, events):
    return cdr_fold.to_cdr(reduce(cdr_fold.apply, events, cdr_fold.CallState(call_id)))


def test_the_contract_example_of_notify_end_is_the_calls_end_at_receipt():
    form, received = ANSWERED_CALL[-1]
    [end] = to_events(form, CTX, received)
    assert (end.type, end.tenant, end.call_id, end.leg_id) == (
        EventType.CALL_ENDED, "acme", IN_ID, IN_ID)
    assert (end.direction, end.caller, end.callee, end.did, end.agent) == (
        Direction.INBOUND, "+79161234567", "+74951234567", "+74951234567", "101")
    assert (end.ts, end.duration_ms, end.reason) == (utc(9, 15, 54), 42_000, "bye")
    assert end.extra == {"zadarma_event": "NOTIFY_END", "recorded": True, "status_code": "16",
                         "call_id_with_rec": "1759644907.2741"}
    assert end.source == "zadarma@acme"
    assert from_json(to_json(end)) == end  # a valid v1 event on the wire


def test_call_start_is_read_in_the_accounts_zone():
    form, _ = ANSWERED_CALL[0]
    [moscow] = to_events(form, CTX, utc(9, 15, 7))
    [manila] = to_events(form, SourceContext(TENANT, "Asia/Manila"), utc(9, 15, 7))
    assert moscow.ts == datetime(2026, 10, 5, 6, 15, 7, tzinfo=UTC)
    assert manila.ts == datetime(2026, 10, 5, 1, 15, 7, tzinfo=UTC)


def test_a_notification_without_a_time_of_its_own_is_never_before_the_start():
    form, _ = ANSWERED_CALL[1]
    [ringing] = to_events(form, CTX, utc(9, 15, 7) - timedelta(minutes=3))  # a slow clock
    assert ringing.ts == utc(9, 15, 7)


@pytest.mark.parametrize("call_id", list(CALLS))
def test_each_call_folds_into_the_cdr_the_edge_gives_for_it(call_id):
    zadarma_cdr = folded(call_id, events_of(CALLS[call_id]))
    edge_cdr = folded(call_id, edge_calls()[call_id])
    assert comparable(zadarma_cdr) == comparable(edge_cdr)
    assert [(leg.target, leg.outcome) for leg in zadarma_cdr.legs] == [
        (leg.target, leg.outcome) for leg in edge_cdr.legs]


def test_the_three_calls_in_figures():
    answered = folded(IN_ID, events_of(ANSWERED_CALL))
    assert (answered.disposition, answered.agent, answered.ring_ms, answered.talk_ms) == (
        Disposition.ANSWERED, "101", 5_000, 42_000)
    assert answered.started_at == datetime(2026, 10, 5, 6, 15, 7, tzinfo=UTC)
    assert [(leg.target, leg.outcome) for leg in answered.legs] == [
        ("101", LegOutcome.ANSWERED)]
    missed = folded(MISSED_ID, events_of(MISSED_CALL))
    assert (missed.disposition, missed.agent, missed.talk_ms, missed.ring_ms) == (
        Disposition.CANCELLED, None, 0, 16_000)
    outbound = folded(OUT_ID, events_of(OUTBOUND_CALL))
    assert (outbound.direction, outbound.caller, outbound.callee, outbound.agent) == (
        "outbound", "102", "+79161112233", "102")
    assert (outbound.ring_ms, outbound.talk_ms, outbound.pdd_ms) == (6_000, 75_000, 6_000)


@pytest.mark.parametrize("word,kind,code,disposition", [
    ("busy", EventType.CALL_FAILED, 486, Disposition.BUSY),
    ("no answer", EventType.CALL_FAILED, 408, Disposition.NO_ANSWER),
    ("cancel", EventType.CALL_CANCELLED, 487, Disposition.CANCELLED),
    ("failed", EventType.CALL_FAILED, 500, Disposition.FAILED),
    ("no money", EventType.CALL_FAILED, 402, Disposition.FAILED),
    ("unallocated number", EventType.CALL_FAILED, 404, Disposition.FAILED),
    ("line limit", EventType.CALL_FAILED, 503, Disposition.FAILED),
    ("no money, no limit", EventType.CALL_FAILED, 402, Disposition.FAILED),
])
def test_every_unanswered_disposition_word_is_the_edges_failure(word, kind, code,
                                                                 disposition):
    start, _ = MISSED_CALL[0]
    end = MISSED_CALL[-1][0] | {"disposition": word}
    [failure] = to_events(end, CTX, utc(9, 20, 30))
    assert (failure.type, failure.sip_code, failure.reason, failure.agent) == (
        kind, code, word, None)
    cdr = folded(start["pbx_call_id"], [*to_events(start, CTX, utc(9, 20, 0)), failure])
    assert (cdr.disposition, cdr.closed, cdr.ended_at) == (disposition, True, utc(9, 20, 30))


def test_an_answered_end_without_notify_answer_takes_the_answer_from_the_duration():
    start, internal, _answer, end = ANSWERED_CALL
    cdr = folded(IN_ID, events_of([start, internal, end]))
    assert (cdr.answered_at, cdr.talk_ms, cdr.agent) == (utc(9, 15, 12), 42_000, "101")


def test_notify_record_names_zadarmas_recording():
    form = {"event": "NOTIFY_RECORD", "call_id_with_rec": "1759644907.2741",
            "pbx_call_id": IN_ID}
    [ready] = to_events(form, CTX, utc(9, 16, 30))
    assert (ready.type, ready.call_id, ready.ts) == (
        EventType.CALL_RECORDING_READY, IN_ID, utc(9, 16, 30))
    assert ready.extra["call_id_with_rec"] == "1759644907.2741"


def test_identity_a_retry_is_the_same_and_each_extension_rung_is_its_own():
    form, at = ANSWERED_CALL[1]
    assert notification_id(TENANT, form) == notification_id(TENANT, dict(form))
    assert to_events(form, CTX, at)[0].event_id == to_events(
        form, CTX, at + timedelta(minutes=5))[0].event_id  # a retry, later: same event
    other = form | {"internal": "102"}
    assert notification_id(TENANT, other) != notification_id(TENANT, form)
    assert notification_id("globex", form) != notification_id(TENANT, form)
    ids = [ev.event_id for ev in events_of([*ANSWERED_CALL, *MISSED_CALL, *OUTBOUND_CALL])]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("change,reason", [
    ({"event": "NOTIFY_IVR"}, "unknown Zadarma notification 'NOTIFY_IVR'"),
    ({"event": ""}, "unknown Zadarma notification ''"),
    ({"duration": ""}, "NOTIFY_END: missing duration"),
    ({"pbx_call_id": ""}, "NOTIFY_END: missing pbx_call_id"),
    ({"duration": "4.2"}, "duration: expected whole seconds"),
    ({"duration": "-1"}, "duration: expected whole seconds"),
    ({"disposition": "hung"}, "disposition: unknown Zadarma disposition 'hung'"),
    ({"call_start": "2026-10-05T09:15:07+03:00"}, "call_start: expected 'Y-m-d H:i:s'"),
    ({"pbx_call_id": "in_1#2"}, "pbx_call_id: not a Zadarma call id"),
])
def test_a_malformed_notification_is_refused_with_the_reason(change, reason):
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(").replace(".", r"\.")):
        to_events(ANSWERED_CALL[-1][0] | change, CTX, utc(9, 16, 0))


def test_parse_form_reads_what_php_posts_and_refuses_the_rest():
    body = b"event=NOTIFY_START&call_start=2026-10-05+09%3A15%3A07&caller_id=79161234567"
    assert parse_form(body) == {"event": "NOTIFY_START", "call_start": "2026-10-05 09:15:07",
                                "caller_id": "79161234567"}
    assert parse_form(b"") == {}
    for bad in (b"\xff\xfe", b"event=A&event=B", b"no-equals-sign",
                b"&".join(b"f%d=1" % i for i in range(100))):
        with pytest.raises(InvalidEvent):
            parse_form(bad)
