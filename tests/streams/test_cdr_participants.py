"""Participants of the CDR: legs, forwards, transfers, pickup, recording and media.

Golden calls, one per shape, written by hand the way the ingest bridge emits Kamailio's
events (``call.ringing`` once per leg with ``leg_id`` "<call>#<branch>" and ``leg_to`` in
``extra``; ``call.forwarded`` with reason and ``kind:name`` targets). Expected legs are
worked out from the rules in ``streams/folds/cdr.py``'s docstring, not by running the fold.
Then a property: any arrival order of a multi-leg call's events, with repeats, gives the
same CDR.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import call_events
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import Direction, Event, EventType
from core.records import (
    Disposition,
    Forward,
    Leg,
    LegOutcome,
    Transfer,
    cdr_from_json,
    cdr_to_json,
)
from streams.folds.cdr import fold, to_cdr

T0 = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)
CALL = "7-777@127.0.0.1"
MOBILE = "+79161234567"

E = EventType
O = LegOutcome  # noqa: E741


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


ev = call_events(CALL, t0=T0, caller="101", callee="600", direction=Direction.INTERNAL,
                 leg_id=CALL)


def ring(ms: int, branch: int, target: str) -> Event:
    return ev(E.CALL_RINGING, ms, event_id=f"ring-{branch}", sip_code=180,
              leg_id=f"{CALL}#{branch}", extra={"leg_to": target})


def answer(ms: int, agent: str) -> Event:
    return ev(E.CALL_ANSWERED, ms, event_id=f"answer-{agent}", sip_code=200, agent=agent)


def end(ms: int, talk_ms: int, by: str = "101") -> Event:
    return ev(E.CALL_ENDED, ms, hangup_by=by, duration_ms=talk_ms, reason="bye")


def forward(ms: int, reason: str, source: str, target: str, hop: int = 1) -> Event:
    return ev(E.CALL_FORWARDED, ms, reason=reason,
              extra={"forwarded_from": source, "forwarded_to": target, "hop": hop})


def leg_failed(ms: int, branch: int, code: int) -> Event:
    return ev(E.CALL_FAILED, ms, event_id=f"leg-fail-{branch}", sip_code=code,
              leg_id=f"{CALL}#{branch}")


def leg(branch: int | str, target: str, start: int, until: int | None,
        outcome: LegOutcome) -> Leg:
    leg_id = branch if isinstance(branch, str) else f"{CALL}#{branch}"
    return Leg(leg_id, target, at(start), at(until) if until is not None else None,
               outcome is O.ANSWERED, outcome)


GOLDEN: dict[str, tuple[list[Event], dict[str, Any]]] = {
    "simple answered": ([
        ev(E.CALL_OFFERED, 0, callee="102"), ring(120, 0, "102"), answer(3_400, "102"),
        end(65_400, 62_000)], {
        "disposition": Disposition.ANSWERED, "agent": "102", "ring_ms": 3_400,
        "talk_ms": 62_000, "sip_code": 200, "hangup_by": "101",
        "legs": (leg(0, "102", 120, 3_400, O.ANSWERED),), "forwards": ()}),
    "busy": ([
        ev(E.CALL_OFFERED, 0, callee="103"), ev(E.CALL_FAILED, 35, sip_code=486)], {
        "disposition": Disposition.BUSY, "sip_code": 486, "agent": None, "ring_ms": 35,
        "legs": ()}),
    "no answer": ([
        ev(E.CALL_OFFERED, 0, callee="104"), ring(90, 0, "104"),
        ev(E.CALL_FAILED, 20_090, sip_code=408)], {
        "disposition": Disposition.NO_ANSWER, "sip_code": 408, "ring_ms": 20_090,
        "legs": (leg(0, "104", 90, 20_090, O.NO_ANSWER),)}),
    "caller cancels": ([
        ev(E.CALL_OFFERED, 0, callee="105"), ring(100, 0, "105"),
        ev(E.CALL_CANCELLED, 7_250, sip_code=487)], {
        "disposition": Disposition.CANCELLED, "sip_code": 487, "ring_ms": 7_250,
        "legs": (leg(0, "105", 100, 7_250, O.CANCELLED),)}),
    "group ring-all, one answers": ([
        ev(E.CALL_OFFERED, 0), ring(100, 0, "102"), ring(110, 1, "103"), ring(130, 2, "104"),
        answer(5_000, "103"), end(65_000, 60_000)], {
        "disposition": Disposition.ANSWERED, "agent": "103", "ring_ms": 5_000,
        "talk_ms": 60_000,
        "legs": (leg(0, "102", 100, 5_000, O.CANCELLED),
                 leg(1, "103", 110, 5_000, O.ANSWERED),
                 leg(2, "104", 130, 5_000, O.CANCELLED))}),
    "sequential group, second member answers": ([
        ev(E.CALL_OFFERED, 0), ring(100, 0, "102"), leg_failed(10_100, 0, 408),
        ring(10_150, 1, "103"), answer(12_000, "103"), end(42_000, 30_000)], {
        "disposition": Disposition.ANSWERED, "agent": "103", "ring_ms": 12_000,
        "talk_ms": 30_000,
        "legs": (leg(0, "102", 100, 10_100, O.NO_ANSWER),
                 leg(1, "103", 10_150, 12_000, O.ANSWERED))}),
    "sequential group, nobody answers (member busy, member times out)": ([
        ev(E.CALL_OFFERED, 0), ring(100, 0, "102"), leg_failed(2_100, 0, 486),
        ring(2_150, 1, "103"), leg_failed(12_150, 1, 408),
        ev(E.CALL_FAILED, 12_160, sip_code=480)], {
        "disposition": Disposition.NO_ANSWER, "sip_code": 480, "closed": True,
        "legs": (leg(0, "102", 100, 2_100, O.BUSY),
                 leg(1, "103", 2_150, 12_150, O.NO_ANSWER))}),
    "forward on no answer to a mobile": ([
        ev(E.CALL_OFFERED, 0, callee="104"), ring(100, 0, "104"),
        forward(20_100, "no_answer", "ext:104", f"tel:{MOBILE}"),
        ring(20_400, 1, MOBILE), answer(25_000, MOBILE), end(85_000, 60_000)], {
        "disposition": Disposition.ANSWERED, "agent": MOBILE, "ring_ms": 25_000,
        "legs": (leg(0, "104", 100, 20_100, O.NO_ANSWER),
                 leg(1, MOBILE, 20_400, 25_000, O.ANSWERED)),
        "forwards": (Forward(at(20_100), "ext:104", f"tel:{MOBILE}", "no_answer", 1),)}),
    "forward on busy": ([
        ev(E.CALL_OFFERED, 0, callee="103"),
        forward(40, "busy", "ext:103", "ext:105"), ring(80, 0, "105"),
        answer(3_000, "105"), end(13_000, 10_000, by="105")], {
        "disposition": Disposition.ANSWERED, "agent": "105", "hangup_by": "105",
        "legs": (leg(0, "105", 80, 3_000, O.ANSWERED),),
        "forwards": (Forward(at(40), "ext:103", "ext:105", "busy", 1),)}),
    "unregistered, forwarded, then no answer": ([
        ev(E.CALL_OFFERED, 0, callee="106"),
        forward(5, "unregistered", "ext:106", "ext:107"), ring(50, 0, "107"),
        ev(E.CALL_FAILED, 20_050, sip_code=408)], {
        "disposition": Disposition.NO_ANSWER, "sip_code": 408, "agent": None,
        "legs": (leg(0, "107", 50, 20_050, O.NO_ANSWER),),
        "forwards": (Forward(at(5), "ext:106", "ext:107", "unregistered", 1),)}),
    "blind transfer": ([
        ev(E.CALL_OFFERED, 0, callee="102"), ring(100, 0, "102"), answer(2_000, "102"),
        ev(E.CALL_TRANSFERRED, 30_000, agent="102",
           extra={"transferred_from": "102", "transferred_to": "103", "kind": "blind"}),
        ring(30_100, 1, "103"), answer(33_000, "103"), end(90_000, 88_000)], {
        "disposition": Disposition.ANSWERED, "agent": "102", "ring_ms": 2_000,
        "talk_ms": 88_000,
        "legs": (leg(0, "102", 100, 2_000, O.ANSWERED),
                 leg(1, "103", 30_100, 33_000, O.ANSWERED)),
        "transfers": (Transfer(at(30_000), "102", "103", "blind"),)}),
    "pickup by a colleague": ([
        ev(E.CALL_OFFERED, 0, callee="102"), ring(100, 0, "102"),
        ev(E.CALL_PICKED_UP, 4_000, agent="103", extra={"picked_up_from": "102"}),
        answer(4_000, "103"), end(24_000, 20_000)], {
        "disposition": Disposition.ANSWERED, "agent": "103", "ring_ms": 4_000,
        "legs": (leg(0, "102", 100, 4_000, O.PICKED_UP),
                 leg(f"{CALL}#pickup:103", "103", 4_000, 4_000, O.ANSWERED))}),
    "answered without a ringing event": ([
        ev(E.CALL_OFFERED, 0, callee="102"), answer(40, "102"), end(1_040, 1_000)], {
        "disposition": Disposition.ANSWERED, "agent": "102",
        "legs": (leg(f"{CALL}#102", "102", 0, 40, O.ANSWERED),)}),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_call_gives_the_expected_participants(name: str) -> None:
    events, expected = GOLDEN[name]
    cdr = to_cdr(fold(CALL, events))
    assert {k: getattr(cdr, k) for k in expected} == expected
    assert cdr.closed and cdr.version == len(events)
    assert all(leg.rang_until is not None for leg in cdr.legs), "a closed call rings no more"
    assert cdr.hold_ms == 0  # none of these calls is put on hold
    assert cdr_from_json(cdr_to_json(cdr)) == cdr


def test_serial_hunting_without_leg_events_ends_every_leg_at_the_answer() -> None:
    """Today's edge sends nothing between two members of a serial group (documented)."""
    events = [ev(E.CALL_OFFERED, 0), ring(100, 0, "102"), ring(10_150, 1, "103"),
              answer(12_000, "103"), end(42_000, 30_000)]
    legs = to_cdr(fold(CALL, events)).legs
    assert legs == (leg(0, "102", 100, 12_000, O.CANCELLED),
                    leg(1, "103", 10_150, 12_000, O.ANSWERED))


def test_a_leg_failure_is_not_the_end_of_the_call() -> None:
    events = [ev(E.CALL_OFFERED, 0), ring(100, 0, "102"), ring(110, 1, "103"),
              leg_failed(900, 0, 486)]
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.disposition, cdr.closed, cdr.ended_at) == (Disposition.IN_PROGRESS, False, None)
    assert cdr.legs == (leg(0, "102", 100, 900, O.BUSY), leg(1, "103", 110, None, O.RINGING))


def test_recording_and_media_counters_reach_the_cdr() -> None:
    ended = end(65_400, 62_000).with_changes(
        media={"packets": 3100.0, "bytes": 533200.0, "errors": 0.0, "mos": 4.3,
               "packet_loss": 0.0, "jitter_ms": 2.0},
        extra={"recorded": True})
    ready = ev(E.CALL_RECORDING_READY, 66_000,
               extra={"file": "/rec/7-777.wav", "recording": "/rec/7-777.wav",
                      "size": 992044, "duration": 62.003})
    events = [ev(E.CALL_OFFERED, 0, callee="102"), answer(3_400, "102"), ended]
    before = to_cdr(fold(CALL, events))
    after = to_cdr(fold(CALL, [*events, ready]))
    assert (before.recorded, before.recording, before.recording_bytes) == (True, None, None)
    assert (after.recording, after.recording_bytes, after.recording_duration_ms) == (
        "/rec/7-777.wav", 992044, 62_003)
    assert (after.rtp_packets, after.rtp_bytes, after.rtp_errors) == (3100, 533200, 0)
    assert (after.mos, after.packet_loss, after.jitter_ms) == (4.3, 0.0, 2.0)


def test_a_revision_of_an_older_worker_still_reads() -> None:
    cdr = to_cdr(fold(CALL, GOLDEN["simple answered"][0]))
    old = {k: v for k, v in json.loads(cdr_to_json(cdr)).items()
           if k not in ("legs", "forwards", "transfers", "hold_ms", "recorded",
                        "recording_bytes", "recording_duration_ms", "rtp_packets",
                        "rtp_bytes", "rtp_errors")}
    back = cdr_from_json(json.dumps(old))
    assert (back.legs, back.hold_ms, back.recorded) == ((), 0, False)
    assert back.call_id == cdr.call_id and back.version == cdr.version


# --- transfers: the transferee's new dialog under the same call id --------------------------

NEW = "8-888@127.0.0.1"
"""The SIP Call-ID of the transferee's new dialog; events carry it in leg_id."""


def in_new(kind: EventType, ms: int, leg_id: str = NEW, **fields: Any) -> Event:
    return ev(kind, ms, event_id=f"new-{kind.value}@{ms}", leg_id=leg_id, **fields)


def blind_transfer(target_outcome: str) -> list[Event]:
    """101 calls 102, 102 REFERs 101 to 103 and hangs up, 101 calls 103 (new Call-ID)."""
    events = [
        ev(E.CALL_OFFERED, 0, callee="102"), ring(100, 0, "102"), answer(2_000, "102"),
        ev(E.CALL_TRANSFERRED, 30_000, caller="102", callee="103",
           extra={"transferee": "101", "kind": "blind"}),
        end(30_050, 28_050, by="102"),
        in_new(E.CALL_OFFERED, 30_060, callee="103", extra={"transferred_from": CALL}),
        in_new(E.CALL_RINGING, 30_100, leg_id=f"{NEW}#0", sip_code=180,
               extra={"leg_to": "103"})]
    if target_outcome == "answer":
        events += [in_new(E.CALL_ANSWERED, 33_000, agent="103", sip_code=200),
                   in_new(E.CALL_ENDED, 90_000, hangup_by="101", duration_ms=57_000,
                          reason="bye")]
    elif target_outcome == "busy":
        events.append(in_new(E.CALL_FAILED, 30_200, sip_code=486, reason="Busy Here"))
    return events


def test_blind_transfer_with_a_new_dialog_is_one_cdr_until_the_last_dialog_ends() -> None:
    cdr = to_cdr(fold(CALL, blind_transfer("answer")))
    assert (cdr.disposition, cdr.closed, cdr.agent, cdr.hangup_by) == (
        Disposition.ANSWERED, True, "102", "101")
    assert (cdr.answered_at, cdr.ended_at, cdr.talk_ms, cdr.ring_ms) == (
        at(2_000), at(90_000), 88_000, 2_000)
    assert cdr.legs == (leg(0, "102", 100, 2_000, O.ANSWERED),
                        leg(f"{NEW}#0", "103", 30_100, 33_000, O.ANSWERED))
    assert cdr.transfers == (Transfer(at(30_000), "102", "103", "blind"),)


def test_blind_transfer_closes_with_the_transferor_and_reopens_with_the_new_dialog() -> None:
    events = blind_transfer("answer")
    before = to_cdr(fold(CALL, events[:5]))  # the transferor hung up, nothing else yet
    assert (before.closed, before.ended_at, before.hangup_by) == (True, at(30_050), "102")
    ringing = to_cdr(fold(CALL, events[:7]))
    assert (ringing.closed, ringing.disposition, ringing.ended_at) == (
        False, Disposition.IN_PROGRESS, None)
    assert ringing.version > before.version


def test_transfer_target_busy_closes_the_call_when_the_new_dialog_fails() -> None:
    """Closed once the new dialog failed; the talk ended at the transferor's BYE."""
    cdr = to_cdr(fold(CALL, blind_transfer("busy")))
    assert (cdr.closed, cdr.disposition, cdr.sip_code) == (True, Disposition.ANSWERED, 200)
    assert (cdr.ended_at, cdr.hangup_by, cdr.talk_ms) == (at(30_050), "102", 28_050)
    assert cdr.legs[-1] == leg(f"{NEW}#0", "103", 30_100, 30_200, O.BUSY)


def test_attended_transfer_the_consultation_call_stays_its_own_call() -> None:
    """102 consults 103 (its own call, CONSULT), then REFERs 101 with Replaces: 101's
    INVITE to 103 (NEW) joins the original call; CONSULT ends when 103 hangs it up."""
    consult = "9-999@127.0.0.1"
    events = [
        ev(E.CALL_OFFERED, 0, callee="102"), answer(1_000, "102"),
        ev(E.CALL_TRANSFERRED, 20_000, caller="102", callee="103",
           extra={"transferee": "101", "kind": "attended"}),
        in_new(E.CALL_OFFERED, 20_010, callee="103",
               extra={"transferred_from": CALL, "replaces": consult}),
        in_new(E.CALL_ANSWERED, 20_050, agent="103", sip_code=200),
        end(20_100, 19_100, by="102"),
        in_new(E.CALL_ENDED, 50_000, hangup_by="103", duration_ms=29_950, reason="bye")]
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.closed, cdr.ended_at, cdr.hangup_by, cdr.talk_ms) == (
        True, at(50_000), "103", 49_000)
    assert [(t.transferred_to, t.kind) for t in cdr.transfers] == [("103", "attended")]
    assert [(lg.target, lg.outcome) for lg in cdr.legs] == [
        ("102", O.ANSWERED), ("103", O.ANSWERED)]


# --- hold ------------------------------------------------------------------------------------


def hold(kind: EventType, ms: int, by: str, leg_id: str = CALL) -> Event:
    return ev(kind, ms, event_id=f"{kind.value}-{by}@{ms}", leg_id=leg_id, agent=by,
              extra={"held_by": by})


def answered_call(*extra_events: Event, end_ms: int = 60_000) -> list[Event]:
    return [ev(E.CALL_OFFERED, 0), answer(1_000, "102"), *extra_events,
            end(end_ms, end_ms - 1_000)]


@pytest.mark.parametrize(("holds", "hold_ms"), [
    ((hold(E.CALL_HELD, 10_000, "101"), hold(E.CALL_RESUMED, 14_500, "101")), 4_500),
    ((hold(E.CALL_HELD, 10_000, "101"), hold(E.CALL_RESUMED, 12_000, "101"),
      hold(E.CALL_HELD, 20_000, "102"), hold(E.CALL_RESUMED, 21_000, "102")), 3_000),
    # both hold at once: the call is on hold from the first hold to the last resume
    ((hold(E.CALL_HELD, 10_000, "101"), hold(E.CALL_HELD, 11_000, "102"),
      hold(E.CALL_RESUMED, 12_000, "101"), hold(E.CALL_RESUMED, 15_000, "102")), 5_000),
    # held until the hang-up
    ((hold(E.CALL_HELD, 50_000, "102"),), 10_000),
    # a resume without a hold, a repeated hold: nothing counted twice
    ((hold(E.CALL_RESUMED, 5_000, "101"), hold(E.CALL_HELD, 10_000, "101"),
      hold(E.CALL_HELD, 11_000, "101").with_changes(event_id="again"),
      hold(E.CALL_RESUMED, 13_000, "101")), 3_000),
], ids=["one hold", "two holds", "overlapping", "held at hang-up", "stray events"])
def test_hold_time_is_the_time_on_hold_in_event_time(holds: tuple[Event, ...],
                                                      hold_ms: int) -> None:
    events = answered_call(*holds)
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.hold_ms, cdr.closed, cdr.talk_ms) == (hold_ms, True, 59_000)
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr
    assert cdr_from_json(cdr_to_json(cdr)).hold_ms == hold_ms


def test_a_call_still_on_hold_counts_up_to_its_latest_event() -> None:
    events = answered_call(hold(E.CALL_HELD, 10_000, "101"))[:-1]
    assert to_cdr(fold(CALL, events)).hold_ms == 0
    later = ev(E.CALL_RECORDING_READY, 16_000, extra={"file": "/rec/x.wav"})
    assert to_cdr(fold(CALL, [*events, later])).hold_ms == 6_000


def test_hold_in_the_transferees_dialog_counts_for_the_call() -> None:
    events = [*blind_transfer("answer"), hold(E.CALL_HELD, 40_000, "103", leg_id=NEW),
              hold(E.CALL_RESUMED, 41_250, "103", leg_id=NEW)]
    assert to_cdr(fold(CALL, events)).hold_ms == 1_250


# --- arrival order does not matter, multi-leg calls -----------------------------------------


@st.composite
def multi_leg_calls(draw: st.DrawFn) -> list[Event]:
    """A call that rings 1-4 legs (in parallel or one after another, some failing on their
    own, some forwarded), then is answered by one of them, fails or is cancelled; gaps may be
    0 ms so same-millisecond ties happen."""
    events = [ev(E.CALL_OFFERED, 0)]
    ms, targets = 0, []
    for branch in range(draw(st.integers(1, 4))):
        ms += draw(st.integers(0, 3_000))
        target = draw(st.sampled_from(["102", "103", "104", MOBILE]))
        targets.append(target)
        events.append(ring(ms, branch, target))
        step = draw(st.sampled_from(["parallel", "leg_fails", "forward"]))
        if step == "leg_fails":
            ms += draw(st.integers(0, 10_000))
            events.append(leg_failed(ms, branch, draw(st.sampled_from([408, 480, 486, 603]))))
        elif step == "forward":
            ms += draw(st.integers(0, 10_000))
            events.append(forward(ms, draw(st.sampled_from(["busy", "no_answer"])),
                                  f"ext:{target}", "ext:105", hop=branch + 1).with_changes(
                event_id=f"fwd-{branch}"))
    ms += draw(st.integers(0, 20_000))
    finish = draw(st.sampled_from(["answer", "fail", "cancel", "open"]))
    if finish == "answer":
        agent = draw(st.sampled_from(targets))
        events += [answer(ms, agent), end(ms + draw(st.integers(0, 60_000)), 0)]
        if draw(st.booleans()):
            events.append(ev(E.CALL_TRANSFERRED, ms + 1, agent=agent,
                             extra={"transferred_from": agent, "transferred_to": "103"}))
        if draw(st.booleans()):
            held = ms + draw(st.integers(0, 5_000))
            events += [hold(E.CALL_HELD, held, agent),
                       hold(E.CALL_RESUMED, held + draw(st.integers(0, 5_000)), agent)]
    elif finish == "fail":
        events.append(ev(E.CALL_FAILED, ms, sip_code=draw(st.sampled_from([408, 480, 486]))))
    elif finish == "cancel":
        events.append(ev(E.CALL_CANCELLED, ms, sip_code=487))
    return events


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=multi_leg_calls())
def test_any_arrival_order_gives_the_same_multi_leg_cdr(data: st.DataObject,
                                                         events: list[Event]) -> None:
    shuffled = data.draw(st.permutations(events))
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=3))
    in_order = to_cdr(fold(CALL, events))
    assert to_cdr(fold(CALL, [*shuffled, *repeats])) == in_order
    assert cdr_from_json(cdr_to_json(in_order)) == in_order
    # whatever the order: at most one leg answers per answer, and a closed call rings no more
    answers = sum(e.type is E.CALL_ANSWERED for e in events)
    assert sum(leg.answered for leg in in_order.legs) <= answers
    if in_order.closed:
        assert all(leg.rang_until is not None for leg in in_order.legs)
        assert all(leg.outcome is not O.RINGING for leg in in_order.legs)
