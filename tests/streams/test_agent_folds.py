"""Agent state timeline and per-interval statistics on a hand-written day, plus properties.

Agent 101 of acme (all UTC, 2026-11-26; expected values worked out by hand below):

    09:00:00      agent.registered (no expires)             -> available
    09:10:00      c1 inbound rings 101                      -> ringing
    09:10:10      c1 answered by 101                        -> on_call
    09:14:10      c1 ended (talk 4 min, crosses nothing)    -> available
    09:14:30      c2 inbound rings 101                      -> ringing
    09:14:50      c2 cancelled by the caller (ring 20 s)    -> available   (missed)
    09:25:00      c3 outbound placed by 101, answered 09:25:20
    09:35:20      c3 ended: talk 09:25:20-09:35:20 crosses 09:30 -> 4:40 + 5:20
    09:40:00      agent.unregistered                        -> offline

Segments: available 09:00-09:10, ringing -09:10:10, on_call -09:14:10, available
-09:14:30, ringing -09:14:50, available -09:25:20, on_call -09:35:20, available -09:40,
offline from 09:40 (open).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.agent_records import AgentStats, AgentStatus, IntervalKind
from core.events import Direction, Event, EventType
from core.events import to_dict as event_to_dict
from streams.folds.agent_state import (
    AgentConfig,
    AgentState,
    Segment,
    agent_keys,
    apply,
    fold,
    row_size,
    state_changes,
    timeline,
)
from streams.folds.agent_stats import split, stats, stats_changes

S = AgentStatus
Q, H, D = IntervalKind.QUARTER, IntervalKind.HOUR, IntervalKind.DAY
DAY = datetime(2026, 11, 26, tzinfo=UTC)
CLIENT = "+74951234567"
DEFAULT = AgentConfig()


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return DAY + timedelta(hours=hh, minutes=mm, seconds=ss)


def reg(ts: datetime, kind: EventType = EventType.AGENT_REGISTERED, agent: str = "101",
        **extra: Any) -> Event:
    return Event(event_id=f"{kind.value}@{ts.isoformat()}@{agent}", type=kind, tenant="acme",
                 ts=ts, source="test", agent=agent, extra=extra)


def call(call_id: str, kind: EventType, ts: datetime, *, caller: str = CLIENT,
         callee: str = "101", **fields: Any) -> Event:
    direction = Direction.OUTBOUND if caller.isdigit() and len(caller) <= 6 else Direction.INBOUND
    if callee.startswith("+"):
        direction = Direction.OUTBOUND
    elif caller.isdigit() and len(caller) <= 6:
        direction = Direction.INTERNAL
    return Event(event_id=f"{call_id}/{kind.value}", type=kind, tenant="acme", ts=ts,
                 source="test", call_id=call_id, caller=caller, callee=callee,
                 direction=direction, **fields)


R, A, E = EventType.CALL_RINGING, EventType.CALL_ANSWERED, EventType.CALL_ENDED
DAY_EVENTS = [
    reg(at(9, 0)),
    call("c1", EventType.CALL_OFFERED, at(9, 9, 59)),
    call("c1", R, at(9, 10)),
    call("c1", A, at(9, 10, 10), agent="101"),
    call("c1", E, at(9, 14, 10)),
    call("c2", EventType.CALL_OFFERED, at(9, 14, 29)),
    call("c2", R, at(9, 14, 30)),
    call("c2", EventType.CALL_CANCELLED, at(9, 14, 50), sip_code=487),
    call("c3", EventType.CALL_OFFERED, at(9, 25), caller="101", callee="+74957654321"),
    call("c3", A, at(9, 25, 20), caller="101", callee="+74957654321", agent="+74957654321"),
    call("c3", E, at(9, 35, 20), caller="101", callee="+74957654321"),
    reg(at(9, 40), EventType.AGENT_UNREGISTERED),
]

EXPECTED_TIMELINE = [
    Segment(S.AVAILABLE, at(9, 0), at(9, 10)),
    Segment(S.RINGING, at(9, 10), at(9, 10, 10)),
    Segment(S.ON_CALL, at(9, 10, 10), at(9, 14, 10)),
    Segment(S.AVAILABLE, at(9, 14, 10), at(9, 14, 30)),
    Segment(S.RINGING, at(9, 14, 30), at(9, 14, 50)),
    Segment(S.AVAILABLE, at(9, 14, 50), at(9, 25, 20)),
    Segment(S.ON_CALL, at(9, 25, 20), at(9, 35, 20)),
    Segment(S.AVAILABLE, at(9, 35, 20), at(9, 40)),
    Segment(S.OFFLINE, at(9, 40), None),
]


def agent_101(events: list[Event], config: AgentConfig = DEFAULT) -> AgentState:
    return fold("acme", "101", events, config)


Key = tuple[IntervalKind, datetime]


def published(events: list[Event], config: AgentConfig = DEFAULT, agent: str = "101"
              ) -> tuple[list[Segment], dict[Key, AgentStats]]:
    """What a reader of the published records sees after folding ``events``: the last
    revision of every segment (retractions left out) and of every interval row (rows
    sent back with zeros left out). The row only keeps what can still change; this is
    the whole history."""
    state, segments, rows = AgentState("acme", agent), {}, {}
    for event in events:
        new = apply(state, event, config)
        segments.update((c.since, c) for c in state_changes(state, new, config))
        rows.update(((r.interval_kind, r.interval_start), r)
                    for r in stats_changes(state, new, config))
        state = new
    live = sorted((c for c in segments.values() if not c.deleted), key=lambda c: c.since)
    return ([Segment(c.state, c.since, c.until) for c in live],
            {k: r for k, r in sorted(rows.items()) if r.logged_in_ms or r.offered
             or r.handled or r.talk_ms or r.ringing_ms})


def test_the_day_gives_the_expected_timeline() -> None:
    assert published(DAY_EVENTS)[0] == EXPECTED_TIMELINE


def test_events_reach_every_extension_of_the_call() -> None:
    internal = call("c9", R, at(10, 0), caller="101", callee="102")
    assert agent_keys(internal) == ["acme:101", "acme:102"]
    assert agent_keys(DAY_EVENTS[2]) == ["acme:101"]  # the client's number is not an agent
    assert agent_keys(reg(at(9, 0), agent="205")) == ["acme:205"]


def test_interval_stats_of_the_day() -> None:
    rows = published(DAY_EVENTS)[1]
    q0900, q0915, q0930 = rows[(Q, at(9, 0))], rows[(Q, at(9, 15))], rows[(Q, at(9, 30))]
    # 09:00-09:15: available 10:00 + 0:20 + 0:10 = 630 s, ringing 10 + 20 s, talk 240 s
    assert (q0900.available_ms, q0900.ringing_ms, q0900.talk_ms) == (630_000, 30_000, 240_000)
    assert q0900.logged_in_ms == 900_000
    assert (q0900.offered, q0900.answered, q0900.missed) == (2, 1, 1)
    assert (q0900.handled, q0900.handled_talk_ms, q0900.aht_talk_ms) == (1, 240_000, 240_000)
    assert q0900.occupancy == 240 / (240 + 630)
    # 09:15-09:30: available 09:15-09:25:20 = 620 s, talk 09:25:20-09:30 = 280 s (split!)
    assert (q0915.available_ms, q0915.talk_ms, q0915.handled) == (620_000, 280_000, 0)
    assert q0915.aht_talk_ms is None and q0915.occupancy == 280 / 900
    # 09:30-09:45: talk 320 s (rest of c3), available 09:35:20-09:40 = 280 s, then offline
    assert (q0930.talk_ms, q0930.available_ms, q0930.logged_in_ms) == (320_000, 280_000, 600_000)
    assert (q0930.handled, q0930.handled_talk_ms) == (1, 600_000)  # c3 ends here, 10 min
    hour, day = rows[(H, at(9, 0))], rows[(D, DAY)]
    for row in (hour, day):
        assert (row.logged_in_ms, row.talk_ms, row.offered, row.missed, row.handled) == (
            2_400_000, 840_000, 2, 1, 2)
        assert row.aht_talk_ms == 420_000  # (240 + 600) / 2
    assert set(rows) == {(Q, at(9, 0)), (Q, at(9, 15)), (Q, at(9, 30)), (H, at(9, 0)),
                         (D, DAY)}


def test_a_duration_crossing_boundaries_is_split() -> None:
    assert list(split(at(9, 25, 20), at(10, 20), Q)) == [
        (at(9, 15), 280_000), (at(9, 30), 900_000), (at(9, 45), 900_000),
        (at(10, 0), 900_000), (at(10, 15), 300_000)]
    assert list(split(at(23, 50), at(23, 50) + timedelta(minutes=20), D)) == [
        (DAY, 600_000), (DAY + timedelta(days=1), 600_000)]
    # a call over midnight: talk goes to both days
    night = [reg(at(23, 0)), call("n1", A, at(23, 50), agent="101"),
             call("n1", E, at(23, 50) + timedelta(minutes=20))]
    rows = published(night)[1]
    assert rows[(D, DAY)].talk_ms == rows[(D, DAY + timedelta(days=1))].talk_ms == 600_000
    assert rows[(H, at(23, 0))].talk_ms == 600_000


def test_wrap_up_period_after_each_call() -> None:
    config = AgentConfig(wrap_up_ms=30_000)
    segments = published(DAY_EVENTS, config)[0]
    assert Segment(S.WRAP_UP, at(9, 14, 10), at(9, 14, 30)) in segments  # c2 rings over it
    assert Segment(S.WRAP_UP, at(9, 35, 20), at(9, 35, 50)) in segments
    q0930 = published(DAY_EVENTS, config)[1][(Q, at(9, 30))]
    assert (q0930.wrap_up_ms, q0930.available_ms) == (30_000, 250_000)
    assert q0930.occupancy == (320 + 30) / (320 + 30 + 250)


def test_registration_lapses_without_a_refresh() -> None:
    events = [reg(at(8, 0), expires=600), reg(at(8, 9), expires=600),
              call("x", R, at(9, 0))]
    assert published(events)[0] == [
        Segment(S.AVAILABLE, at(8, 0), at(8, 19)), Segment(S.OFFLINE, at(8, 19), at(9, 0)),
        Segment(S.RINGING, at(9, 0), None)]
    # the lapse is not assumed before the agent's newest event has passed it
    assert published(events[:2])[0] == [Segment(S.AVAILABLE, at(8, 0), None)]


def test_state_changes_are_revisions_and_retractions() -> None:
    old = agent_101([reg(at(9, 8))])
    new = apply(old, DAY_EVENTS[2])  # c1 rings
    changes = state_changes(old, new)
    assert [(c.state, c.since, c.until, c.version) for c in changes] == [
        (S.AVAILABLE, at(9, 8), at(9, 10), 2), (S.RINGING, at(9, 10), None, 2)]
    # a late (within the horizon), earlier registration moves the available segment's
    # start: the old one is retracted
    later = apply(new, reg(at(9, 6)))
    retract = [c for c in state_changes(new, later) if c.deleted]
    assert [(c.since, c.state) for c in retract] == [(at(9, 8), S.AVAILABLE)]
    assert state_changes(new, apply(new, DAY_EVENTS[2])) == []  # a repeat changes nothing


def test_stats_changes_only_send_changed_intervals() -> None:
    old = agent_101(DAY_EVENTS[:-1])
    new = apply(old, DAY_EVENTS[-1])  # the unregister at 09:40 changes only 09:30-09:45
    keys = {(r.interval_kind, r.interval_start) for r in stats_changes(old, new)}
    assert keys == {(Q, at(9, 30)), (H, at(9, 0)), (D, DAY)}


# --- the row stays bounded; what is let go was final ----------------------------------------


UNBOUNDED = AgentConfig(horizon=timedelta(days=30), late_window=timedelta(days=30))
"""A horizon longer than any test's history: nothing is ever let go (the reference)."""


def within_horizon(events: list[Event], seed: int,
                   delay: timedelta = timedelta(minutes=4)) -> list[Event]:
    """A delivery where each event is late by less than ``delay`` (under the horizon):
    ordered by event time plus a random delay."""
    rnd = random.Random(seed)
    keyed = [(e.ts + rnd.random() * delay, n, e) for n, e in enumerate(events)]
    return [e for _, _, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


def test_a_long_history_publishes_what_keeping_everything_publishes() -> None:
    days = [DAY + timedelta(days=n) for n in range(4)]
    events = [reg(days[0] + timedelta(hours=8))]
    for n, day in enumerate(days):
        events += [call(f"d{n}", R, day + timedelta(hours=9)),
                   call(f"d{n}", A, day + timedelta(hours=9, seconds=5), agent="101"),
                   call(f"d{n}", E, day + timedelta(hours=9, minutes=3))]
    bounded, full = agent_101(events), agent_101(events, UNBOUNDED)
    assert bounded.accepted == full.accepted
    assert len(bounded.counts) < len(full.counts)  # the first days' rows were let go
    assert published(events) == published(events, UNBOUNDED)
    # an event older than the late window is dropped (counted), nothing else moves
    late = apply(bounded, reg(days[0] + timedelta(hours=1)))
    assert late.dropped == 1 and replace(late, dropped=0) == bounded


def test_golden_records_of_the_unbounded_fold() -> None:
    """Bit for bit the records the fold published when its row kept two days of events
    (tests/streams/agent_golden.py: 2.5 days, inbound DID and internal calls, lost
    answers, lapsing registrations, each event up to 2 minutes late)."""
    import json

    from agent_golden import CONFIGS, digests, golden_events, golden_file

    for name, config in CONFIGS.items():
        expected = json.loads(golden_file(name).read_text())
        for seed, digest in expected.items():
            assert digests(golden_events(int(seed)), config) == digest, (name, seed)


# --- property: arrival order within the horizon does not matter -----------------------------


@st.composite
def agent_day(draw: st.DrawFn) -> list[Event]:
    """Registrations and calls of agents 101/102 scattered over one day, with duplicates."""
    events = []
    for agent in ("101", "102"):
        for n, minute in enumerate(sorted(draw(st.lists(st.integers(0, 1439), max_size=4)))):
            kind = EventType.AGENT_REGISTERED if n % 2 == 0 else EventType.AGENT_UNREGISTERED
            events.append(reg(DAY + timedelta(minutes=minute), kind, agent=agent,
                              **({"expires": draw(st.sampled_from([0, 3600, 7200]))}
                                 if kind is EventType.AGENT_REGISTERED else {})))
    for n in range(draw(st.integers(0, 5))):
        start = DAY + timedelta(seconds=draw(st.integers(0, 86_000)))
        callee = draw(st.sampled_from(["101", "102"]))
        caller = draw(st.sampled_from([CLIENT, "101", "102"]))
        if caller == callee:
            continue
        ring = draw(st.integers(0, 120))
        talk = draw(st.none() | st.integers(0, 3_000))
        cid = f"p{n}"
        events += [call(cid, R, start, caller=caller, callee=callee)]
        if talk is None:
            events.append(call(cid, EventType.CALL_FAILED, start + timedelta(seconds=ring),
                               caller=caller, callee=callee, sip_code=486))
        else:
            answered = start + timedelta(seconds=ring)
            events += [call(cid, A, answered, caller=caller, callee=callee, agent=callee),
                       call(cid, E, answered + timedelta(seconds=talk), caller=caller,
                            callee=callee)]
    return events


@st.composite
def late_delivery(draw: st.DrawFn, events: list[Event]) -> list[Event]:
    """The events (and some repeats) each delayed by 0-299 s of event time: under the
    5-minute horizon, so each arrives within it."""
    delays = [draw(st.integers(0, 299_000)) for _ in events]
    repeats = draw(st.lists(st.integers(0, max(len(events) - 1, 0)), max_size=len(events) // 3))
    keyed = [(e.ts + timedelta(milliseconds=d), n, e)
             for n, (e, d) in enumerate(zip(events, delays, strict=True))]
    keyed += [(keyed[i][0] + timedelta(seconds=draw(st.integers(0, 120))), -1 - i, events[i])
              for i in repeats if events]
    return [e for _, _, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


@hsettings(max_examples=60, deadline=None)
@given(events=agent_day(), data=st.data())
def test_any_arrival_order_within_the_horizon_gives_the_same_records(events, data) -> None:
    """Same row counters and the same published records (the last revision per key) as
    folding the events in time order, and as keeping every event for ever."""
    shuffled = data.draw(late_delivery(sorted(events, key=lambda e: e.ts)))
    in_order = sorted(events, key=lambda e: e.ts)
    for agent in ("101", "102"):
        mine = fold("acme", agent, in_order)
        theirs = fold("acme", agent, shuffled)
        assert theirs.accepted == mine.accepted
        assert theirs.counts == mine.counts and timeline(theirs) == timeline(mine)
        reference = published(in_order, UNBOUNDED, agent)
        assert strip(published(shuffled, DEFAULT, agent)) == strip(reference)


def strip(records: tuple[list[Segment], dict[Key, AgentStats]]) -> tuple[Any, Any]:
    """Published records but for versions (a delivery fact: see test_agent_stats_delivery)."""
    segments, rows = records
    return segments, {k: replace(r, version=0) for k, r in rows.items()}


@hsettings(max_examples=30, deadline=None)
@given(events=agent_day(), data=st.data())
def test_emitted_revisions_replay_to_the_rows_the_row_holds(events, data) -> None:
    """Keeping the highest version per row key of everything emitted = what the row
    holds for the intervals and segments it still holds."""
    shuffled = data.draw(late_delivery(sorted(events, key=lambda e: e.ts)))
    state, rows, intervals = AgentState("acme", "101"), {}, {}
    for event in shuffled:
        new = apply(state, event)
        for change in state_changes(state, new):
            rows[change.since] = change
        for row in stats_changes(state, new):
            intervals[(row.interval_kind, row.interval_start)] = row
        state = new
    held = timeline(state)
    assert [Segment(c.state, c.since, c.until) for c in sorted(
        rows.values(), key=lambda c: c.since) if not c.deleted][-len(held):] == held or not held
    assert strip(([], {k: intervals[k] for k in stats(state)})) == strip(([], stats(state)))


# --- late events beyond the horizon ---------------------------------------------------------


def test_a_call_later_than_the_horizon_is_counted_without_rewriting_the_timeline() -> None:
    """A whole call that reaches the row 20 minutes late (a lagging partition): offered
    and handled land in the intervals where it rang and ended, the state timeline already
    published stays as it was; a later event of a finished call is dropped."""
    on_time = [reg(at(9, 0)), call("x", R, at(9, 30)), call("x", A, at(9, 30, 5), agent="101"),
               call("x", E, at(9, 31))]
    late = [call("l", R, at(9, 10)), call("l", A, at(9, 10, 10), agent="101"),
            call("l", E, at(9, 14, 10))]
    state = agent_101(on_time)
    segments_before = timeline(state)
    rows = {}
    for event in late:
        new = apply(state, event)
        # nothing before the frontier is rewritten (while the late call rings, it shows
        # from the frontier on, and goes once its end comes in)
        assert all(c.since >= segments_before[0].since for c in state_changes(state, new))
        rows.update(((r.interval_kind, r.interval_start), r) for r in stats_changes(state, new))
        state = new
    assert state.late == 3 and state.dropped == 0 and timeline(state) == segments_before
    q0900 = rows[(Q, at(9, 0))]
    assert (q0900.offered, q0900.answered, q0900.handled, q0900.handled_talk_ms) == (
        1, 1, 1, 240_000)
    assert q0900.talk_ms == 0 and q0900.available_ms == 900_000  # the timeline stands
    assert rows[(H, at(9, 0))].offered == 2  # with the on-time call x
    # the late call is finished once the frontier next moves: from then on a new event
    # of it is dropped, not counted as another call
    state = apply(apply(state, reg(at(9, 33))), reg(at(9, 34)))
    assert "l" in state.finished
    again = apply(state, call("l", EventType.CALL_OFFERED, at(9, 9, 59)))
    assert again.dropped == 1 and stats(again) == stats(state)
    # a registration beyond the horizon is dropped too
    assert apply(state, reg(at(9, 5), EventType.AGENT_UNREGISTERED)).dropped == 1


def test_an_unanswered_call_holds_the_frontier_back_so_its_answer_stays_exact() -> None:
    """Ringing since 09:00 and the answer (09:00:10) comes once the newest event is 09:20:
    the open call kept the frontier at 09:00 (a BYE could still rebuild a lost answer
    back to there), so the answer is folded exactly."""
    state = agent_101([reg(at(8, 55)), call("r", R, at(9, 0)), reg(at(9, 20))])
    new = apply(state, call("r", A, at(9, 0, 10), agent="101"))
    assert new.late == 0 and new.frontier == at(9, 0)
    assert Segment(S.ON_CALL, at(9, 0, 10), None) == timeline(new)[-1]


def test_a_late_answer_beyond_the_held_frontier_shows_from_the_frontier_on() -> None:
    """The same answer once the newest event is 10:30: the frontier is held back at most
    ``late_window`` (1 hour), to 09:30. The answer is counted; the timeline turns on_call
    at the frontier, not before it."""
    state = agent_101([reg(at(8, 55), expires=7200), call("r", R, at(9, 0)),
                       reg(at(10, 30), expires=7200)])
    assert timeline(state)[-1].state is S.RINGING
    new = apply(state, call("r", A, at(9, 0, 10), agent="101"))
    assert new.late == 1 and new.frontier == at(9, 30)
    assert timeline(new)[-1] == Segment(S.ON_CALL, at(9, 30), None)
    assert stats(new)[(Q, at(9, 0))].answered == 1


# --- the row and its format -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"format": 99}])
def test_unknown_state_format_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        AgentState.from_dict(bad)


def test_state_round_trips_through_its_dict() -> None:
    for n in range(len(DAY_EVENTS) + 1):
        state = agent_101(DAY_EVENTS[:n], AgentConfig(wrap_up_ms=30_000))
        assert AgentState.from_dict(state.to_dict()) == state


def test_a_format_1_row_is_upgraded_by_folding_its_events() -> None:
    """Rows written before the row was bounded (every event kept) still load."""
    old = {"format": 1, "tenant": "acme", "agent": "101", "accepted": 40,
           "events": [event_to_dict(e) for e in DAY_EVENTS]}
    state = AgentState.from_dict(old)
    assert state.accepted == 40
    assert replace(state, accepted=len(DAY_EVENTS)) == agent_101(DAY_EVENTS)


def long_history(seed: int, days: int = 3, calls_per_day: int = 60) -> list[Event]:
    """Registrations (odd expires too), calls of every outcome incl. lost answers, internal
    calls and duplicates for agent 101 over ``days`` days, in time order."""
    rnd = random.Random(seed)
    events = []
    for n in range(days * 24):
        kind = EventType.AGENT_UNREGISTERED if rnd.random() < 0.2 else EventType.AGENT_REGISTERED
        expires = rnd.choice([None, 0, 600, 3600, 7200, "x"])
        events.append(reg(DAY + timedelta(hours=n, minutes=rnd.randrange(60)), kind,
                          **({"expires": expires} if expires is not None else {})))
    for n in range(days * calls_per_day):
        start = DAY + timedelta(seconds=rnd.randrange(days * 86_400))
        caller, callee = rnd.choice([(CLIENT, "101"), ("101", "+74957654321"), ("102", "101")])
        ring, talk = timedelta(seconds=rnd.randrange(60)), timedelta(seconds=rnd.randrange(900))
        answerer = rnd.choice([callee, callee, "102"])
        evs = [call(f"h{n}", R, start, caller=caller, callee=callee)]
        if rnd.random() < 0.2:
            evs.append(call(f"h{n}", EventType.CALL_FAILED, start + ring, caller=caller,
                            callee=callee, sip_code=486))
        else:
            if rnd.random() < 0.8:
                evs.append(call(f"h{n}", A, start + ring, caller=caller, callee=callee,
                                agent=answerer))
            evs.append(call(f"h{n}", E, start + ring + talk, caller=caller, callee=callee,
                            agent=answerer, duration_ms=talk // timedelta(milliseconds=1)))
        events += evs
    return sorted(events, key=lambda e: e.ts)


@pytest.mark.parametrize("config", [DEFAULT, AgentConfig(wrap_up_ms=20_000)])
def test_the_bounded_row_publishes_what_keeping_every_event_publishes(config) -> None:
    """Every step of a long history delivered within the horizon: the same records as a
    fold that lets nothing go, and a row that decodes to itself."""
    events = within_horizon(long_history(seed=5, days=4, calls_per_day=25), seed=5)
    reference = replace(config, horizon=UNBOUNDED.horizon, late_window=UNBOUNDED.late_window)
    state, full = AgentState("acme", "101"), AgentState("acme", "101")
    for event in events:
        new, new_full = apply(state, event, config), apply(full, event, reference)
        assert AgentState.from_dict(new.to_dict(), config) == new
        assert state_changes(state, new, config) == state_changes(full, new_full, reference)
        assert stats_changes(state, new, config) == stats_changes(full, new_full, reference)
        state, full = new, new_full


def test_the_row_and_the_work_per_event_do_not_grow_with_the_history(monkeypatch) -> None:
    """Counted, not timed: the row's size and the interval splits per event stay the
    same whether the agent has one day of history or six."""
    from streams.folds import agent_intervals

    counted = {"split": 0}
    real_split = agent_intervals.split

    def counting(*args: Any) -> Any:
        counted["split"] += 1
        return real_split(*args)

    monkeypatch.setattr(agent_intervals, "split", counting)

    def work(days: int) -> tuple[float, int]:
        counted["split"] = 0
        state, biggest = AgentState("acme", "101"), 0
        events = long_history(seed=9, days=days, calls_per_day=100)
        for event in events:
            new = apply(state, event)
            state_changes(state, new)
            stats_changes(state, new)
            biggest = max(biggest, row_size(new))
            state = new
        return counted["split"] / len(events), biggest

    (short, short_size), (long, long_size) = work(1), work(6)
    assert long < 1.5 * short + 2, (short, long)
    assert long_size < 1.5 * short_size, (short_size, long_size)


# --- the timeline swept from the change (agent_state._resweep) -----------------------------


def busy_line(calls: int, every_s: float = 2.5) -> list[Event]:
    """An agent registered once, then answering a 0.5 s call every ``every_s`` seconds: a
    horizon of 5 minutes holds some 120 of its calls."""
    events = [reg(at(9, 0))]
    for n in range(calls):
        start = at(9, 1) + timedelta(seconds=n * every_s)
        cid = f"b{n}"
        events += [call(cid, EventType.CALL_OFFERED, start), call(cid, R, start),
                   call(cid, A, start + timedelta(milliseconds=100), agent="101"),
                   call(cid, E, start + timedelta(milliseconds=600))]
    return events


def checked_resweep(kept: list[int]) -> Any:
    """``agent_state._resweep`` checked against the whole sweep from the frontier."""
    from streams.folds import agent_state

    real = agent_state._resweep

    def both(state, regs, calls_, newest, changed, config):  # type: ignore[no-untyped-def]
        segments, same = real(state, regs, calls_, newest, changed, config)
        whole = agent_state.sweep(agent_state._spans(state, regs, calls_, newest, config),
                                  state.frontier, agent_state._base(state))
        assert list(segments) == whole
        assert all(segments[i] is state.segments[i] for i in range(same))
        kept.append(same)
        return segments, same

    return mock.patch.object(agent_state, "_resweep", both)


@hsettings(max_examples=40, deadline=None)
@given(events=agent_day(), data=st.data())
def test_the_timeline_swept_from_the_change_is_the_whole_sweep(events, data) -> None:
    """Any arrival order within the horizon (repeats and late events included): after
    every event the timeline kept up to the change and swept from there is the one a
    sweep of every span from the frontier gives, and what it kept is the old segments."""
    shuffled = data.draw(late_delivery(sorted(events, key=lambda e: e.ts)))
    with checked_resweep([]):
        for agent in ("101", "102"):
            fold("acme", agent, shuffled)


def test_a_busy_line_keeps_its_timeline_and_sweeps_only_the_new_call() -> None:
    """An agent taking a call every 2.5 s: each event keeps all but the last few segments
    (not swept again: the check above holds them to the whole sweep), and the states the
    sweep evaluates per event do not grow with the calls the horizon holds (counted, not
    timed: before, each event swept all ~120 calls of the horizon)."""
    from streams.folds import agent_timeline

    evaluated = {"n": 0}
    real_status = agent_timeline._status_of

    def counting(counters: list[int]) -> Any:
        evaluated["n"] += 1
        return real_status(counters)

    def per_event(calls: int) -> float:
        evaluated["n"] = 0
        events = busy_line(calls)
        fold("acme", "101", events)
        return evaluated["n"] / len(events)

    kept: list[int] = []
    with checked_resweep(kept):
        fold("acme", "101", busy_line(240))
    assert sum(1 for k in kept if k > 0) > 0.7 * len(kept), kept
    with mock.patch.object(agent_timeline, "_status_of", counting):
        few, many = per_event(20), per_event(240)
    assert many < 1.5 * few + 2, (few, many)
