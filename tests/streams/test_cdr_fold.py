"""The call fold (streams.folds.cdr) on hand-written calls, one per shape, plus properties.

Each golden call is a pasted sequence of (ms after the offer, event type, fields) the way
the ingest bridge emits them for Kamailio's evapi events; the expected CDR fields are
worked out by hand from the rules in the fold's docstring, not by running the fold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from builders import call_events
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import Direction, Event, EventType
from core.records import Disposition, cdr_from_json, cdr_to_json
from streams.folds.cdr import CallState, IncompleteCall, apply, fold, to_cdr

T0 = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)
CALL = "1-2345@127.0.0.1"

OFFERED, RINGING, ANSWERED = EventType.CALL_OFFERED, EventType.CALL_RINGING, EventType.CALL_ANSWERED
FAILED, CANCELLED, ENDED = EventType.CALL_FAILED, EventType.CALL_CANCELLED, EventType.CALL_ENDED


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


# one call event as the bridge would emit it (parties on every event)
ev = call_events(CALL, t0=T0, caller="101", callee="102", direction=Direction.INTERNAL)


# --- golden calls ---------------------------------------------------------------------------

ANSWERED_CALL = [
    ev(OFFERED, 0),
    ev(RINGING, 120, sip_code=180, reason="Ringing"),
    ev(ANSWERED, 3_400, sip_code=200, agent="102", reason="OK"),
    ev(ENDED, 65_400, hangup_by="101", duration_ms=62_000, reason="bye"),
]
BUSY_CALL = [ev(OFFERED, 0), ev(FAILED, 35, sip_code=486, reason="Busy Here")]
NOT_FOUND_CALL = [ev(OFFERED, 0), ev(FAILED, 8, sip_code=404, reason="Not Found")]
NO_ANSWER_CALL = [
    ev(OFFERED, 0),
    ev(RINGING, 90, sip_code=180),
    ev(FAILED, 20_090, sip_code=408, reason="Request Timeout"),
]
CANCELLED_CALL = [
    ev(OFFERED, 0),
    ev(RINGING, 100, sip_code=180),
    ev(CANCELLED, 7_250, sip_code=487, reason="Request Terminated"),
]
DECLINED_CALL = [
    ev(OFFERED, 0),
    ev(RINGING, 200, sip_code=180),
    ev(FAILED, 4_000, sip_code=603, reason="Decline"),
]
OUTSIDE = "+79261112233"
OUT = {"direction": Direction.OUTBOUND, "callee": OUTSIDE}
OUTBOUND_CALL = [  # 101 dials a client through the trunk; the client's side answers
    ev(OFFERED, 0, **OUT),
    ev(RINGING, 300, sip_code=180, **OUT),
    ev(ANSWERED, 6_000, sip_code=200, agent=OUTSIDE, **OUT),
    ev(ENDED, 36_000, hangup_by="101", duration_ms=30_000, reason="bye", **OUT),
]
OUTBOUND_NO_ANSWER = [ev(OFFERED, 0, **OUT), ev(FAILED, 20_000, sip_code=480, **OUT)]

GOLDEN = {
    "answered": (ANSWERED_CALL, {
        "disposition": Disposition.ANSWERED, "sip_code": 200, "agent": "102",
        "started_at": at(0), "answered_at": at(3_400), "ended_at": at(65_400),
        "ring_ms": 3_400, "talk_ms": 62_000, "hangup_by": "101", "reason": "bye",
        "closed": True, "version": 4,
    }),
    "busy 486": (BUSY_CALL, {
        "disposition": Disposition.BUSY, "sip_code": 486, "agent": None,
        "answered_at": None, "ended_at": at(35), "ring_ms": 35, "talk_ms": 0,
        "reason": "Busy Here", "closed": True, "version": 2,
    }),
    "not found 404": (NOT_FOUND_CALL, {
        "disposition": Disposition.FAILED, "sip_code": 404, "ended_at": at(8),
        "ring_ms": 8, "talk_ms": 0, "closed": True, "version": 2,
    }),
    "no answer 408": (NO_ANSWER_CALL, {
        "disposition": Disposition.NO_ANSWER, "sip_code": 408, "answered_at": None,
        "ended_at": at(20_090), "ring_ms": 20_090, "talk_ms": 0, "closed": True, "version": 3,
    }),
    "caller cancel 487": (CANCELLED_CALL, {
        "disposition": Disposition.CANCELLED, "sip_code": 487, "answered_at": None,
        "ended_at": at(7_250), "ring_ms": 7_250, "talk_ms": 0, "closed": True, "version": 3,
    }),
    "outbound answered by the client": (OUTBOUND_CALL, {
        "direction": "outbound", "callee": OUTSIDE, "agent": "101",  # who placed it
        "disposition": Disposition.ANSWERED, "ring_ms": 6_000, "talk_ms": 30_000,
        "closed": True, "version": 4,
    }),
    "outbound nobody answered": (OUTBOUND_NO_ANSWER, {
        "agent": "101", "disposition": Disposition.NO_ANSWER, "talk_ms": 0, "closed": True,
    }),
    "ringing then 603": (DECLINED_CALL, {
        "disposition": Disposition.FAILED, "sip_code": 603, "reason": "Decline",
        "ended_at": at(4_000), "ring_ms": 4_000, "talk_ms": 0, "closed": True, "version": 3,
    }),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_call_gives_the_expected_cdr(name: str) -> None:
    events, expected = GOLDEN[name]
    cdr = to_cdr(fold(CALL, events))
    got = {field: getattr(cdr, field) for field in expected}
    assert got == expected
    callee = events[0].callee  # 102, or the client of an outbound call
    assert (cdr.call_id, cdr.tenant, cdr.caller, cdr.callee) == (CALL, "acme", "101", callee)
    assert cdr.started_at == at(0) and cdr.event_count == cdr.version == len(events)
    assert cdr.last_event_ts == events[-1].ts


@pytest.mark.parametrize(("code", "disposition"), [
    (486, Disposition.BUSY), (600, Disposition.BUSY),
    (408, Disposition.NO_ANSWER), (480, Disposition.NO_ANSWER),
    (487, Disposition.CANCELLED), (404, Disposition.FAILED), (503, Disposition.FAILED),
    (None, Disposition.FAILED),
])
def test_failure_code_maps_to_disposition(code: int | None, disposition: Disposition) -> None:
    cdr = to_cdr(fold(CALL, [ev(OFFERED, 0), ev(FAILED, 10, sip_code=code)]))
    assert (cdr.disposition, cdr.sip_code, cdr.closed) == (disposition, code, True)


def test_call_is_in_progress_until_a_terminal_event() -> None:
    ringing = to_cdr(fold(CALL, ANSWERED_CALL[:2]))
    talking = to_cdr(fold(CALL, ANSWERED_CALL[:3]))
    assert (ringing.disposition, ringing.closed, ringing.sip_code) == (
        Disposition.IN_PROGRESS, False, None)
    assert (ringing.ended_at, ringing.ring_ms, ringing.talk_ms) == (None, 0, 0)
    assert (talking.disposition, talking.closed, talking.sip_code) == (
        Disposition.IN_PROGRESS, False, 200)
    assert (talking.answered_at, talking.ring_ms, talking.talk_ms) == (at(3_400), 3_400, 0)


def test_failure_after_answer_is_a_fork_branch_not_the_end() -> None:
    branch_cancel = ev(CANCELLED, 3_401, event_id="fork-487", sip_code=487)
    talking = to_cdr(fold(CALL, [*ANSWERED_CALL[:3], branch_cancel]))
    ended = to_cdr(fold(CALL, [*ANSWERED_CALL, branch_cancel]))
    assert (talking.disposition, talking.closed) == (Disposition.IN_PROGRESS, False)
    assert (ended.disposition, ended.talk_ms, ended.version) == (Disposition.ANSWERED, 62_000, 5)


def test_cancel_without_code_is_487() -> None:
    cdr = to_cdr(fold(CALL, [ev(OFFERED, 0), ev(CANCELLED, 500)]))
    assert (cdr.disposition, cdr.sip_code) == (Disposition.CANCELLED, 487)


# --- de-duplication, late events, ignored types ---------------------------------------------


def test_duplicate_event_changes_nothing() -> None:
    state = fold(CALL, ANSWERED_CALL)
    again = apply(state, ANSWERED_CALL[2])
    assert again is state
    resent = apply(state, ev(ANSWERED, 9_999, event_id=ANSWERED_CALL[2].event_id))
    assert resent is state and to_cdr(resent).answered_at == at(3_400)


def test_late_event_after_close_is_a_new_revision_of_the_same_call() -> None:
    without_ringing = [e for e in ANSWERED_CALL if e.type is not RINGING]
    closed = to_cdr(fold(CALL, without_ringing))
    revised = to_cdr(apply(fold(CALL, without_ringing), ANSWERED_CALL[1]))
    assert closed.closed and revised.closed
    assert (revised.call_id, revised.version) == (closed.call_id, closed.version + 1)
    assert revised == to_cdr(fold(CALL, ANSWERED_CALL))


def test_late_answer_corrects_the_timing_of_a_closed_call() -> None:
    lost_answer = [ANSWERED_CALL[0], ANSWERED_CALL[3]]
    estimated = to_cdr(fold(CALL, lost_answer))
    revised = to_cdr(fold(CALL, [*lost_answer, ANSWERED_CALL[2]]))
    # without call.answered the answer time comes from call.ended's duration
    assert (estimated.disposition, estimated.answered_at) == (Disposition.ANSWERED, at(3_400))
    assert (estimated.agent, revised.agent) == (None, "102")
    assert (revised.version, revised.talk_ms, revised.ring_ms) == (3, 62_000, 3_400)


def test_started_at_is_the_offer_and_no_late_event_moves_it() -> None:
    # the warehouse keys a call by the day of started_at (call_day): a revision must never
    # move it, even when a late event is stamped before the offer (another worker's clock)
    offered_just_after_midnight = call_events(CALL, t0=datetime(2026, 11, 27, tzinfo=UTC),
                                              caller="101", callee="102")
    events = [offered_just_after_midnight(OFFERED, 0),
              offered_just_after_midnight(RINGING, 150, sip_code=180)]
    first = to_cdr(fold(CALL, events))
    early = offered_just_after_midnight(FAILED, -5, sip_code=486, leg_id=f"{CALL}#b2")
    revised = to_cdr(apply(fold(CALL, events), early))
    assert revised.version == first.version + 1
    assert revised.started_at == first.started_at == datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.parametrize("kind", [EventType.AGENT_REGISTERED, EventType.AGENT_STATE_CHANGED])
def test_types_the_fold_does_not_interpret_are_ignored(kind: EventType) -> None:
    state = fold(CALL, BUSY_CALL)
    other = Event(event_id="x", type=kind, tenant="acme", ts=at(5), source="s",
                  call_id=CALL, agent="102")
    assert apply(state, other) is state


def test_cdr_needs_the_offer() -> None:
    with pytest.raises(IncompleteCall, match="no call.offered"):
        to_cdr(fold(CALL, ANSWERED_CALL[2:]))
    with pytest.raises(IncompleteCall, match="have: nothing"):
        to_cdr(CallState(CALL))


def test_event_of_another_call_is_refused() -> None:
    stranger = ev(OFFERED, 0).with_changes(call_id="other")
    with pytest.raises(ValueError, match="other"):
        apply(CallState(CALL), stranger)


def test_media_and_recording_reach_the_cdr() -> None:
    recording = Event(event_id="rec", type=EventType.CALL_RECORDING_READY, tenant="acme",
                      ts=at(70_000), source="s", call_id=CALL,
                      extra={"recording": "recordings/1-2345.wav"})
    ended = ANSWERED_CALL[3].with_changes(media={"mos": 4.3, "packet_loss": 0.5,
                                                 "jitter_ms": 2.0})
    cdr = to_cdr(fold(CALL, [*ANSWERED_CALL[:3], ended, recording]))
    assert (cdr.mos, cdr.packet_loss, cdr.jitter_ms) == (4.3, 0.5, 2.0)
    assert (cdr.recording, cdr.ended_at, cdr.last_event_ts) == (
        "recordings/1-2345.wav", at(65_400), at(70_000))


def test_state_round_trips_through_json() -> None:
    state = fold(CALL, ANSWERED_CALL)
    back = CallState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == state and to_cdr(back) == to_cdr(state)
    with pytest.raises(ValueError, match="format"):
        CallState.from_dict({"format": 99, "call_id": CALL, "events": []})


# --- arrival order does not matter ----------------------------------------------------------

SHAPES = [
    [OFFERED, RINGING, ANSWERED, ENDED],
    [OFFERED, FAILED],
    [OFFERED, RINGING, FAILED],
    [OFFERED, RINGING, CANCELLED],
    [OFFERED, ANSWERED, CANCELLED, ENDED],  # a forked call: one branch cancelled
    [OFFERED, RINGING, ANSWERED],
]


@st.composite
def calls(draw: st.DrawFn) -> list[Event]:
    """One call of a random shape, with gaps that may be 0 ms (same-millisecond ties)."""
    shape = draw(st.sampled_from(SHAPES))
    gaps = draw(st.lists(st.integers(0, 30_000), min_size=len(shape), max_size=len(shape)))
    code = draw(st.sampled_from([404, 408, 480, 486, 487, 503, 600, 603]))
    events, ms = [], 0
    for i, (kind, gap) in enumerate(zip(shape, gaps, strict=True)):
        ms += gap if i else 0
        extra = {"sip_code": code} if kind is FAILED else {}
        events.append(ev(kind, ms, event_id=f"e{i}", agent="102", **extra))
    return events


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=calls())
def test_any_arrival_order_gives_the_same_cdr(data: st.DataObject, events: list[Event]) -> None:
    shuffled = data.draw(st.permutations(events))
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=3))
    in_order = to_cdr(fold(CALL, events))
    assert to_cdr(fold(CALL, [*shuffled, *repeats])) == in_order
    assert cdr_from_json(cdr_to_json(in_order)) == in_order


# --- routing: group, route target, post-dial delay (issue 13) -----------------------------------


def test_the_cdr_names_the_group_the_call_was_routed_to():
    ev = call_events("g1", caller="+74951234567", callee="+74951230001",
                     direction=Direction.INBOUND, did="+74951230001")
    cdr = to_cdr(fold("g1", [
        ev(EventType.CALL_OFFERED, 0, extra={"route_target": "group:sales", "group": "sales"}),
        ev(EventType.CALL_RINGING, 100, leg_id="g1#1", agent="102", extra={"group": "sales"}),
        ev(EventType.CALL_ANSWERED, 4_000, agent="102", extra={"group": "sales"}),
        ev(EventType.CALL_ENDED, 9_000, agent="102")]))
    assert (cdr.route_target, cdr.route_group, cdr.pdd_ms) == ("group:sales", "sales", None)


def test_a_forward_to_a_group_names_the_group_from_the_events_after_it():
    ev = call_events("f1", caller="+74951234567", callee="101", direction=Direction.INBOUND)
    cdr = to_cdr(fold("f1", [
        ev(EventType.CALL_OFFERED, 0, extra={"route_target": "ext:101"}),
        ev(EventType.CALL_FORWARDED, 20_000, reason="no_answer",
           extra={"forwarded_from": "ext:101", "forwarded_to": "group:sales"}),
        ev(EventType.CALL_RINGING, 20_100, leg_id="f1#2", agent="103", extra={"group": "sales"}),
        ev(EventType.CALL_CANCELLED, 25_000)]))
    assert (cdr.route_target, cdr.route_group) == ("ext:101", "sales")


def test_pdd_of_a_trunk_call_is_invite_to_the_first_18x():
    ev = call_events("o1", caller="101", callee="+79161234567", direction=Direction.OUTBOUND)
    events = [ev(EventType.CALL_OFFERED, 0, extra={"route_target": "tel:+79161234567"}),
              ev(EventType.CALL_RINGING, 2_350, leg_id="o1#1"),
              ev(EventType.CALL_ANSWERED, 6_000, agent="+79161234567"),
              ev(EventType.CALL_ENDED, 9_000)]
    assert to_cdr(fold("o1", events)).pdd_ms == 2_350
    # no 18x: the answer is the first response that counts; arrival order does not matter
    assert to_cdr(fold("o1", [events[3], events[0], events[2]])).pdd_ms == 6_000
    # a masked client is a trunk call too; an internal call has no PDD
    masked = ev(EventType.CALL_OFFERED, 0, extra={"route_target": "mask:4501"})
    assert to_cdr(fold("o1", [masked, events[1]])).pdd_ms == 2_350
    internal = ev(EventType.CALL_OFFERED, 0, extra={"route_target": "ext:102"})
    assert to_cdr(fold("o1", [internal, events[1]])).pdd_ms is None
