"""Calls whose end was lost, closed by ingest's reconciler: the CDR and the agents.

The interruption events are the ones ``ingest.reconcile`` makes from the same events the
folds see. The orders that matter: the interruption after an answer, after ringing only
(a ring-all group), a second interruption (a repeat, or one with other ids), and a real
end arriving after the interruption. Asserted: the CDR is closed ``interrupted`` at the
last known time and stays so; every agent is released at that time and a late end
changes neither the CDR's figures nor any agent's states or counts.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from builders import call_events, event

from core.agent_records import AgentStatus, IntervalKind
from core.events import Direction, Event, EventType
from core.records import Disposition, LegOutcome
from ingest.reconcile import OpenCalls, interruption
from streams.folds import cdr as cdr_fold
from streams.folds.agent_state import AgentState, agent_keys, apply, timeline
from streams.folds.agent_stats import stats

E, S = EventType, AgentStatus
REG = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
CLIENT, DID = "+79035550101", "+74951230102"
DETECTED = T0 + timedelta(minutes=5)


def t(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def inbound(call_id: str = "c1"):
    return call_events(call_id, t0=T0, caller=CLIENT, callee=DID, did=DID,
                       direction=Direction.INBOUND)


def answered_call() -> list[Event]:
    ev = inbound()
    return [ev(E.CALL_OFFERED, 0),
            ev(E.CALL_RINGING, 50, leg_id="c1#0", agent="102", extra={"leg_to": "102"}),
            ev(E.CALL_ANSWERED, 5_000, agent="102"),
            ev(E.CALL_HELD, 8_000, agent="102", extra={"held_by": "102"})]


def ringing_group() -> list[Event]:
    ev = inbound()
    group = {"group": "sales"}
    return [ev(E.CALL_OFFERED, 0, extra=group),
            ev(E.CALL_RINGING, 50, leg_id="c1#0", agent="102", extra=group | {"leg_to": "102"}),
            ev(E.CALL_RINGING, 60, leg_id="c1#1", agent="103", extra=group | {"leg_to": "103"}),
            ev(E.CALL_RINGING, 70, leg_id="c1#2", agent="104", extra=group | {"leg_to": "104"}),
            ev(E.CALL_FAILED, 900, leg_id="c1#2", agent="104", sip_code=486, extra=group)]


def interrupted(events: list[Event], why: str = "edge_lost") -> list[Event]:
    calls = OpenCalls()
    for ev in events:
        calls.track(ev)
    return interruption(calls.calls["c1"], why, DETECTED, "kamailio@test")


def registrations(*agents: str) -> list[Event]:
    return [event(E.AGENT_REGISTERED, REG, event_id=f"reg-{a}", agent=a,
                  extra={"expires": 3600}) for a in agents]


def fold_agents(events: list[Event]) -> dict[str, AgentState]:
    rows: dict[str, AgentState] = {}
    for ev in events:
        for key in agent_keys(ev):
            tenant, agent = key.split(":", 1)
            rows[agent] = apply(rows.get(agent, AgentState(tenant, agent)), ev)
    return rows


def segments(state: AgentState) -> list[tuple[AgentStatus, datetime, datetime | None]]:
    return [(s.state, s.since, s.until) for s in timeline(state)]


def day(state: AgentState) -> dict[str, int]:
    (row,) = [r for (kind, _), r in stats(state).items() if kind is IntervalKind.DAY]
    return {n: getattr(row, n) for n in ("offered", "answered", "missed", "handled",
                                         "ringing_ms", "talk_ms")}


def cdr_of(events: list[Event]):
    return cdr_fold.to_cdr(cdr_fold.fold("c1", events))


def figures(cdr) -> dict:
    """Everything but the revision counters and the time of the newest event received."""
    return {k: v for k, v in vars(cdr).items()
            if k not in ("version", "event_count", "last_event_ts")}


# --- the CDR ---------------------------------------------------------------------------------


def test_an_answered_call_whose_end_was_lost_closes_interrupted_at_its_last_event() -> None:
    events = answered_call()
    cdr = cdr_of([*events, *interrupted(events)])

    assert cdr.closed and cdr.disposition is Disposition.INTERRUPTED
    assert cdr.reason == "interrupted" and cdr.hangup_by is None
    assert (cdr.answered_at, cdr.ended_at) == (t(5_000), t(8_000))
    assert (cdr.ring_ms, cdr.talk_ms, cdr.hold_ms) == (5_000, 3_000, 0)
    assert (cdr.agent, cdr.sip_code) == ("102", 200)


def test_a_ringing_group_call_whose_end_was_lost_closes_with_its_legs() -> None:
    events = ringing_group()
    cdr = cdr_of([*events, *interrupted(events)])

    assert cdr.closed and cdr.disposition is Disposition.INTERRUPTED
    assert (cdr.answered_at, cdr.ended_at, cdr.ring_ms, cdr.talk_ms) == (None, t(900), 900, 0)
    assert (cdr.agent, cdr.sip_code) == (None, None)
    assert [(leg.target, leg.outcome, leg.rang_until) for leg in cdr.legs] == [
        ("102", LegOutcome.CANCELLED, t(900)), ("103", LegOutcome.CANCELLED, t(900)),
        ("104", LegOutcome.BUSY, t(900))]


def test_a_second_interruption_changes_nothing() -> None:
    events = answered_call()
    once = [*events, *interrupted(events)]
    state = cdr_fold.fold("c1", once)
    # the same events again (ingest died before saving): ignored outright
    assert cdr_fold.fold("c1", [*once, *interrupted(events)]) == state
    # another detection later (other ids, same facts): same figures
    other = [replace(e, event_id=e.event_id + "-2") for e in interrupted(events, "max_age")]
    assert figures(cdr_of([*once, *other])) == figures(cdr_fold.to_cdr(state))


@pytest.mark.parametrize("late", ["before", "after"])
def test_a_real_end_after_the_interruption_keeps_the_one_interrupted_cdr(late: str) -> None:
    events = answered_call()
    real_end = inbound()(E.CALL_ENDED, 20_000, agent="102", reason="bye", hangup_by=CLIENT,
                         duration_ms=15_000)
    stops = interrupted(events)
    # arrival order does not matter: the fold sorts by event time
    order = [*events, *stops, real_end] if late == "after" else [*events, real_end, *stops]
    cdr = cdr_of(order)

    assert figures(cdr) == figures(cdr_of([*events, *stops]))
    assert cdr.disposition is Disposition.INTERRUPTED and cdr.ended_at == t(8_000)


# --- the agents -----------------------------------------------------------------------------


def test_the_answering_agent_is_released_at_the_last_known_time() -> None:
    events = answered_call()
    rows = fold_agents([*registrations("102"), *events, *interrupted(events)])

    assert segments(rows["102"]) == [(S.AVAILABLE, REG, t(50)), (S.RINGING, t(50), t(5_000)),
                                     (S.ON_CALL, t(5_000), t(8_000)),
                                     (S.AVAILABLE, t(8_000), None)]
    assert day(rows["102"])["handled"] == 1 and day(rows["102"])["talk_ms"] == 3_000


def test_every_ringing_agent_of_a_group_is_released() -> None:
    events = ringing_group()
    rows = fold_agents([*registrations("102", "103", "104"), *events, *interrupted(events)])

    assert set(rows) == {"102", "103", "104"}
    for agent, rang in (("102", 50), ("103", 60), ("104", 70)):
        assert segments(rows[agent]) == [(S.AVAILABLE, REG, t(rang)),
                                         (S.RINGING, t(rang), t(900)),
                                         (S.AVAILABLE, t(900), None)], agent


def test_without_the_interruption_the_agent_stays_on_call() -> None:
    """The bug: nothing else ever releases the agent."""
    rows = fold_agents([*registrations("102"), *answered_call()])
    assert timeline(rows["102"])[-1] == replace(timeline(rows["102"])[-1], state=S.ON_CALL,
                                                until=None)


def test_a_real_end_after_the_interruption_changes_no_agent_figure() -> None:
    events = answered_call()
    base = [*registrations("102"), *events, *interrupted(events)]
    real_end = inbound()(E.CALL_ENDED, 20_000, agent="102", reason="bye", hangup_by=CLIENT,
                         duration_ms=15_000)
    before, after = fold_agents(base)["102"], fold_agents([*base, real_end])["102"]

    assert segments(after) == segments(before)
    assert day(after) == day(before)
