"""The event orders that broke the CDR fold on real calls (issue 13, items 3-6).

Each call is written the way the edge emits it (decoded as the bridge does: ``leg_id``
is always set, a leg's own events name its agent): group pickup with the picker's answer
stamped before or after ``call.picked_up``, a blind transfer to a busy target, a hold
whose 200 is stamped after the BYE, and a transferred call recorded in both dialogs.
Expected values come from the rules in ``streams/folds/cdr.py``'s docstring.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from builders import T0, call_events
from hypothesis import given, settings
from hypothesis import strategies as st

from core.agent_records import AgentStatus
from core.events import Direction, Event, EventType
from core.records import Disposition, Leg, LegOutcome
from streams.folds.agent_state import AgentState, agent_keys, apply, timeline
from streams.folds.cdr import fold, to_cdr

E, O, S = EventType, LegOutcome, AgentStatus  # noqa: E741
CALL = "40-pick@127.0.0.1"
NEW = "41-xfer@127.0.0.1"
"""The SIP Call-ID of the transferee's new dialog (events name it in leg_id)."""

ev = call_events(CALL, caller="101", callee="102", direction=Direction.INTERNAL,
                 leg_id=CALL)


def at(ms: int) -> Any:
    return T0 + timedelta(milliseconds=ms)


def leg(leg_id: str, target: str, start: int, until: int, outcome: LegOutcome) -> Leg:
    return Leg(leg_id, target, at(start), at(until), outcome is O.ANSWERED, outcome)


def timelines(events: list[Event]) -> dict[str, list[tuple[AgentStatus, int, int | None]]]:
    """Each agent's timeline (state, since, until in ms from T0), as the agent fold
    routes the events (agent_keys) - every agent registered at -1 s."""
    rows: dict[str, AgentState] = {}
    for event in events:
        for key in agent_keys(event):
            agent = key.split(":", 1)[1]
            if agent not in rows:
                reg = ev(E.AGENT_REGISTERED, -1_000, event_id=f"reg-{agent}", agent=agent,
                         extra={"expires": 3600})
                rows[agent] = apply(AgentState("acme", agent), reg)
            rows[agent] = apply(rows[agent], event)

    def ms(t: Any) -> int | None:
        return None if t is None else (t - T0) // timedelta(milliseconds=1)

    return {a: [(s.state, ms(s.since), ms(s.until)) for s in timeline(row)]
            for a, row in sorted(rows.items())}


# --- 3. group pickup -------------------------------------------------------------------------


def pickup_call(answer_ms: int, picked_ms: int, elsewhere_ms: int) -> list[Event]:
    """101 calls 102 (ringing, branch 0); 103 dials *8 and the edge adds branch 1 toward
    103's phone, which rings and answers. The picker's 200 gives call.picked_up and the
    487 of 102's leg (one worker), call.answered comes from dialog:start (maybe another)."""
    return [
        ev(E.CALL_OFFERED, 0, extra={"route_target": "ext:102"}),
        ev(E.CALL_RINGING, 100, leg_id=f"{CALL}#0", agent="102", sip_code=180,
           extra={"leg_to": "102"}),
        ev(E.CALL_RINGING, 3_000, leg_id=f"{CALL}#1", agent="103", sip_code=180,
           extra={"leg_to": "103"}),
        ev(E.CALL_PICKED_UP, picked_ms, agent="103", extra={"picked_up_by": "103"}),
        ev(E.CALL_FAILED, elsewhere_ms, leg_id=f"{CALL}#0", agent="102", sip_code=487,
           reason="Call completed elsewhere"),
        ev(E.CALL_ANSWERED, answer_ms, agent="103", sip_code=200),
        ev(E.CALL_ENDED, 9_000, agent="103", hangup_by="101", reason="bye",
           duration_ms=9_000 - answer_ms),
    ]


@pytest.mark.parametrize(("answer_ms", "picked_ms", "elsewhere_ms"), [
    (4_001, 4_000, 4_000),  # the edge's usual order
    (4_000, 4_001, 4_001),  # the order that broke it: call.answered 1 ms early
    (4_001, 4_001, 4_000),  # 102's 487 stamped first
], ids=["pickup first", "answer first", "leg failure first"])
def test_pickup_gives_one_answered_leg_for_the_picker_whatever_comes_first(
        answer_ms: int, picked_ms: int, elsewhere_ms: int) -> None:
    events = pickup_call(answer_ms, picked_ms, elsewhere_ms)
    cdr = to_cdr(fold(CALL, events))
    first = min(answer_ms, picked_ms)
    assert cdr.legs == (
        leg(f"{CALL}#0", "102", 100, min(first, elsewhere_ms), O.PICKED_UP),
        leg(f"{CALL}#1", "103", 3_000, first, O.ANSWERED))
    assert (cdr.disposition, cdr.agent, cdr.answered_at, cdr.closed) == (
        Disposition.ANSWERED, "103", at(answer_ms), True)
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr
    # 102 rang until the pickup, 103 rang on its own branch, then talked
    lines = timelines(events)
    end_of_ring = min(answer_ms, elsewhere_ms)
    assert lines["102"] == [(S.AVAILABLE, -1_000, 100), (S.RINGING, 100, end_of_ring),
                            (S.AVAILABLE, end_of_ring, None)]
    assert lines["103"] == [(S.AVAILABLE, -1_000, 3_000), (S.RINGING, 3_000, answer_ms),
                            (S.ON_CALL, answer_ms, 9_000), (S.AVAILABLE, 9_000, None)]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), answer_ms=st.integers(3_998, 4_002), picked_ms=st.integers(3_998, 4_002),
       elsewhere_ms=st.integers(3_998, 4_002))
def test_pickup_any_stamps_and_arrival_order_give_the_picker_the_one_answered_leg(
        data: st.DataObject, answer_ms: int, picked_ms: int, elsewhere_ms: int) -> None:
    """Kamailio workers stamp the answer, the pickup and 102's 487 within a few ms of
    each other in any order; the events also arrive in any order."""
    events = pickup_call(answer_ms, picked_ms, elsewhere_ms)
    cdr = to_cdr(fold(CALL, data.draw(st.permutations(events))))
    assert [(lg.target, lg.outcome) for lg in cdr.legs] == [("102", O.PICKED_UP),
                                                             ("103", O.ANSWERED)]
    assert cdr == to_cdr(fold(CALL, events))


@pytest.mark.parametrize(("answer_ms", "picked_ms"), [(4_000, 4_001), (4_001, 4_000)])
def test_the_pickers_ringing_stamped_after_its_answer_is_the_same_leg(
        answer_ms: int, picked_ms: int) -> None:
    """The picker's phone answers at once: its 180 and 200 are handled by two workers
    and the ringing is stamped after the answer. Still one leg for 103, its branch."""
    events = [e.with_changes(ts=at(4_002)) if e.leg_id == f"{CALL}#1" else e
              for e in pickup_call(answer_ms, picked_ms, 4_001)]
    cdr = to_cdr(fold(CALL, events))
    first = min(answer_ms, picked_ms)
    assert cdr.legs == (leg(f"{CALL}#0", "102", 100, first, O.PICKED_UP),
                        leg(f"{CALL}#1", "103", first, first, O.ANSWERED))
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr
    assert [s for s, _, _ in timelines(events)["103"]] == [S.AVAILABLE, S.ON_CALL,
                                                            S.AVAILABLE]


def test_pickup_whose_branch_never_rang_makes_up_the_pickers_leg_in_either_order() -> None:
    base = [e for e in pickup_call(4_000, 4_001, 4_001) if e.leg_id != f"{CALL}#1"]
    swapped = [e.with_changes(ts=at(4_001)) if e.type is E.CALL_ANSWERED
               else e.with_changes(ts=at(4_000)) if e.type is E.CALL_PICKED_UP else e
               for e in base]
    for events in (base, swapped):
        cdr = to_cdr(fold(CALL, events))
        assert cdr.legs == (leg(f"{CALL}#0", "102", 100, 4_000, O.PICKED_UP),
                            leg(f"{CALL}#pickup:103", "103", 4_000, 4_000, O.ANSWERED))


# --- 4. blind transfer to a busy target ------------------------------------------------------


def in_new(kind: EventType, ms: int, leg_id: str = NEW, **fields: Any) -> Event:
    return ev(kind, ms, event_id=f"new-{kind.value}@{ms}-{leg_id}", leg_id=leg_id, **fields)


def transfer_to_busy(transferor_hangs_up_ms: int) -> list[Event]:
    """101 calls 102, 102 REFERs 101 to 103 (busy), 101's INVITE to 103 gets 486: the
    leg's own call.failed (agent 103) and the new dialog's failure. 102 hangs up right
    after the REFER, or only later (the transfer failed, 102 took the call back)."""
    return [
        ev(E.CALL_OFFERED, 0), ev(E.CALL_RINGING, 100, leg_id=f"{CALL}#0", agent="102",
                                  sip_code=180, extra={"leg_to": "102"}),
        ev(E.CALL_ANSWERED, 2_000, agent="102", sip_code=200),
        ev(E.CALL_TRANSFERRED, 30_000, caller="102", callee="103",
           extra={"transferee": "101", "kind": "blind"}),
        ev(E.CALL_ENDED, transferor_hangs_up_ms, agent="102", hangup_by="102", reason="bye",
           duration_ms=transferor_hangs_up_ms - 2_000),
        in_new(E.CALL_OFFERED, 30_060, callee="103", extra={"transferred_from": CALL}),
        in_new(E.CALL_FAILED, 30_100, leg_id=f"{NEW}#0", callee="103", agent="103",
               sip_code=486, reason="Busy Here"),
        in_new(E.CALL_FAILED, 30_100, callee="103", sip_code=486, reason="Busy Here"),
    ]


def test_blind_transfer_to_a_busy_target_ends_when_the_parties_hung_up() -> None:
    events = transfer_to_busy(30_050)
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.disposition, cdr.sip_code, cdr.closed) == (Disposition.ANSWERED, 200, True)
    assert (cdr.ended_at, cdr.talk_ms, cdr.hangup_by, cdr.reason) == (
        at(30_050), 28_050, "102", "bye")
    # the failed attempt: 103's leg, busy, never rang
    assert cdr.legs == (leg(f"{CALL}#0", "102", 100, 2_000, O.ANSWERED),
                        leg(f"{NEW}#0", "103", 30_100, 30_100, O.BUSY))
    assert [(t.transferred_to, t.kind) for t in cdr.transfers] == [("103", "blind")]
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr
    # until the new dialog failed the call was still open (the transfer could succeed)
    assert not to_cdr(fold(CALL, events[:6])).closed
    lines = timelines(events)
    assert lines["102"] == [(S.AVAILABLE, -1_000, 100), (S.RINGING, 100, 2_000),
                            (S.ON_CALL, 2_000, 30_050), (S.AVAILABLE, 30_050, None)]
    assert lines["101"] == [(S.AVAILABLE, -1_000, 2_000), (S.ON_CALL, 2_000, 30_050),
                            (S.AVAILABLE, 30_050, None)]
    assert lines["103"] == [(S.AVAILABLE, -1_000, None)]  # busy elsewhere, never rang here


def test_a_failed_transfer_the_transferor_takes_back_ends_at_its_later_bye() -> None:
    cdr = to_cdr(fold(CALL, transfer_to_busy(75_000)))
    assert (cdr.closed, cdr.ended_at, cdr.talk_ms, cdr.hangup_by) == (
        True, at(75_000), 73_000, "102")


# --- 5. hold bounded by the dialog's end -----------------------------------------------------


def held_call(held_ms: int, recording_ms: int = 300_000) -> list[Event]:
    return [
        ev(E.CALL_OFFERED, 0), ev(E.CALL_ANSWERED, 1_000, agent="102", sip_code=200),
        ev(E.CALL_HELD, held_ms, agent="102", extra={"held_by": "102"}),
        ev(E.CALL_ENDED, 60_000, agent="102", hangup_by="101", reason="bye",
           duration_ms=59_000, extra={"recorded": True}),
        ev(E.CALL_RECORDING_READY, recording_ms, extra={"file": "/rec/a.wav"}),
    ]


@pytest.mark.parametrize(("held_ms", "hold_ms"), [
    (60_001, 0),  # the hold's 200 stamped 1 ms after the BYE (another worker)
    (60_000, 0),  # in the same millisecond
    (50_000, 10_000),  # held at hang-up: up to the BYE, not to the recording
])
def test_a_hold_open_at_the_dialogs_end_stops_there(held_ms: int, hold_ms: int) -> None:
    events = held_call(held_ms)
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.hold_ms, cdr.closed) == (hold_ms, True)
    assert to_cdr(fold(CALL, held_call(held_ms, recording_ms=900_000))).hold_ms == hold_ms
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr


def test_a_hold_in_the_first_dialog_of_a_transferred_call_stops_at_its_end() -> None:
    """102 holds 101 before the REFER; its dialog ends, the transferee talks on with
    103 for a minute: the hold is 102's few seconds, not the rest of the call."""
    events = [
        ev(E.CALL_OFFERED, 0), ev(E.CALL_ANSWERED, 2_000, agent="102", sip_code=200),
        ev(E.CALL_HELD, 25_000, agent="102", extra={"held_by": "102"}),
        ev(E.CALL_ENDED, 30_050, agent="102", hangup_by="102", reason="bye"),
        ev(E.CALL_HELD, 30_051, event_id="late-held", agent="101", extra={"held_by": "101"}),
        in_new(E.CALL_OFFERED, 30_060, callee="103", extra={"transferred_from": CALL}),
        in_new(E.CALL_ANSWERED, 33_000, agent="103", sip_code=200),
        in_new(E.CALL_ENDED, 90_000, agent="103", hangup_by="101", reason="bye"),
    ]
    assert to_cdr(fold(CALL, events)).hold_ms == 5_050


# --- 6. a transferred call recorded in both dialogs ------------------------------------------


def recorded_transfer(first_ready_ms: int, second_ready_ms: int) -> list[Event]:
    return [
        ev(E.CALL_OFFERED, 0), ev(E.CALL_ANSWERED, 2_000, agent="102", sip_code=200),
        ev(E.CALL_TRANSFERRED, 30_000, caller="102", callee="103",
           extra={"transferee": "101", "kind": "blind"}),
        ev(E.CALL_ENDED, 30_050, agent="102", hangup_by="102", reason="bye",
           extra={"recorded": True}),
        in_new(E.CALL_OFFERED, 30_060, callee="103", extra={"transferred_from": CALL}),
        in_new(E.CALL_ANSWERED, 33_000, agent="103", sip_code=200),
        in_new(E.CALL_ENDED, 90_000, agent="103", hangup_by="101", reason="bye",
               extra={"recorded": True}),
        ev(E.CALL_RECORDING_READY, first_ready_ms, extra={
            "file": "/rec/first.wav", "recording": "/rec/first.wav", "size": 448_044,
            "duration": 28.0}),
        in_new(E.CALL_RECORDING_READY, second_ready_ms, extra={
            "file": "/rec/second.wav", "recording": "/rec/second.wav", "size": 912_044,
            "duration": 57.0}),
    ]


@pytest.mark.parametrize(("first_ready_ms", "second_ready_ms"), [
    (31_000, 91_000),  # each dialog's recording when its pcap closed
    (92_000, 91_000),  # the first dialog's conversion finished last
])
def test_a_transferred_call_points_to_its_second_dialogs_recording(
        first_ready_ms: int, second_ready_ms: int) -> None:
    events = recorded_transfer(first_ready_ms, second_ready_ms)
    cdr = to_cdr(fold(CALL, events))
    assert (cdr.recorded, cdr.recording, cdr.recording_bytes, cdr.recording_duration_ms) == (
        True, "/rec/second.wav", 912_044, 57_000)
    assert to_cdr(fold(CALL, list(reversed(events)))) == cdr
    # before the second dialog's recording is in, the first one's shows
    first_only = [e for e in events if not (e.type is E.CALL_RECORDING_READY
                                            and e.leg_id == NEW)]
    assert to_cdr(fold(CALL, first_only)).recording == "/rec/first.wav"


# --- the agents of a transferred call ---------------------------------------------------------


def test_the_transferee_is_on_a_call_until_its_last_dialog_ends() -> None:
    """101 talks to 102, is transferred and talks to 103 in a new dialog: 101 is on a
    call from 102's answer to the end of the talk with 103, not free once 102 hung up."""
    lines = timelines(recorded_transfer(31_000, 91_000))
    assert lines["101"] == [(S.AVAILABLE, -1_000, 2_000), (S.ON_CALL, 2_000, 90_000),
                            (S.AVAILABLE, 90_000, None)]
    assert lines["102"] == [(S.AVAILABLE, -1_000, 2_000), (S.ON_CALL, 2_000, 30_050),
                            (S.AVAILABLE, 30_050, None)]
    assert lines["103"] == [(S.AVAILABLE, -1_000, 33_000), (S.ON_CALL, 33_000, 90_000),
                            (S.AVAILABLE, 90_000, None)]


def test_a_transferred_call_stays_open_for_the_transferee_past_the_horizon() -> None:
    """The first dialog ended long ago, the second goes on past the agent row's horizon
    (a registration refresh moves it): the call is not finished, so the second dialog's
    BYE still ends the talk instead of being dropped as an event of a finished call."""
    events = [e for e in recorded_transfer(31_000, 91_000)
              if e.type is not E.CALL_RECORDING_READY]
    bye = events.pop()  # the second dialog's end, ten minutes later
    refresh = ev(E.AGENT_REGISTERED, 500_000, event_id="refresh-101", agent="101",
                 extra={"expires": 3600})
    late_bye = bye.with_changes(ts=at(600_000))
    row = AgentState("acme", "101")
    for event in [ev(E.AGENT_REGISTERED, -1_000, event_id="reg-101", agent="101",
                     extra={"expires": 3600}), *events, refresh, late_bye]:
        row = apply(row, event)
        row = AgentState.from_dict(row.to_dict())  # through the table's changelog
    assert row.dropped == 0
    assert [(s.state, s.until) for s in timeline(row)][-2:] == [
        (S.ON_CALL, at(600_000)), (S.AVAILABLE, None)]


def test_the_guard_settles_every_open_dialog_of_a_transferred_call() -> None:
    """A row over its size limit ends its open calls at the newest event: for a
    transferred call that is the new dialog still talking, not only the first one."""
    from streams.folds.agent_state import AgentConfig, guard

    config = AgentConfig(max_row_bytes=1)  # every trim step runs
    events = [e for e in recorded_transfer(31_000, 91_000)  # the new dialog not ended yet
              if e.type is not E.CALL_RECORDING_READY
              and not (e.type is E.CALL_ENDED and e.leg_id == NEW)]
    row = AgentState("acme", "101")
    for event in [ev(E.AGENT_REGISTERED, -1_000, event_id="reg-101", agent="101",
                     extra={"expires": 3600}), *events,
                  ev(E.AGENT_REGISTERED, 50_000, event_id="refresh", agent="101",
                     extra={"expires": 3600})]:
        row = apply(row, event)
    assert row.calls and timeline(row)[-1].state is S.ON_CALL  # still talking to 103
    trimmed = guard(row, config)
    assert trimmed.calls == {} and trimmed.trimmed == 1
    assert [(s.state, s.since, s.until) for s in timeline(trimmed)][-2:] == [
        (S.ON_CALL, at(2_000), at(50_000)), (S.AVAILABLE, at(50_000), None)]


# --- a DID call refused busy by the agent's phone -------------------------------------------


def test_a_did_call_refused_busy_without_ringing_names_the_agent_in_its_leg() -> None:
    """Seen end to end (tests/integration/test_inbound_matrix.py): the carrier calls a
    DID routed to 103, whose phone answers 486 at once. The edge sends the leg's
    call.failed (agent 103) and the call's; with no ringing before them the CDR had no
    leg at all, so nothing said which agent refused the call (the CDR's ``agent`` is who
    handled it: nobody)."""
    did = call_events(CALL, caller="+79160000077", callee="+74951238103",
                      direction=Direction.INBOUND, leg_id=CALL)
    events = [
        did(E.CALL_OFFERED, 0, extra={"route_target": "ext:103"}),
        did(E.CALL_FAILED, 40, leg_id=f"{CALL}#0", agent="103", sip_code=486,
            reason="Busy Here"),
        did(E.CALL_FAILED, 41, sip_code=486, reason="Busy Here"),
    ]
    for order in (events, events[::-1]):
        cdr = to_cdr(fold(CALL, order))
        assert (cdr.disposition, cdr.agent, cdr.closed) == (Disposition.BUSY, None, True)
        assert cdr.legs == (leg(f"{CALL}#0", "103", 40, 40, O.BUSY),)
    # the agent never rang: available throughout
    assert timelines(events)["103"] == [(S.AVAILABLE, -1_000, None)]
