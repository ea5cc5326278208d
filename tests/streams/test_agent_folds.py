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
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ingest.events import Direction, Event, EventType
from streams.agent_records import AgentStatus, IntervalKind
from streams.folds.agent_state import (
    AgentConfig,
    AgentState,
    Segment,
    agent_keys,
    apply,
    fold,
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


def test_the_day_gives_the_expected_timeline() -> None:
    assert timeline(agent_101(DAY_EVENTS)) == EXPECTED_TIMELINE


def test_events_reach_every_extension_of_the_call() -> None:
    internal = call("c9", R, at(10, 0), caller="101", callee="102")
    assert agent_keys(internal) == ["acme:101", "acme:102"]
    assert agent_keys(DAY_EVENTS[2]) == ["acme:101"]  # the client's number is not an agent
    assert agent_keys(reg(at(9, 0), agent="205")) == ["acme:205"]


def test_interval_stats_of_the_day() -> None:
    rows = stats(agent_101(DAY_EVENTS))
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
    rows = stats(agent_101(night))
    assert rows[(D, DAY)].talk_ms == rows[(D, DAY + timedelta(days=1))].talk_ms == 600_000
    assert rows[(H, at(23, 0))].talk_ms == 600_000


def test_wrap_up_period_after_each_call() -> None:
    config = AgentConfig(wrap_up_ms=30_000)
    segments = timeline(agent_101(DAY_EVENTS, config), config)
    assert Segment(S.WRAP_UP, at(9, 14, 10), at(9, 14, 30)) in segments  # c2 rings over it
    assert Segment(S.WRAP_UP, at(9, 35, 20), at(9, 35, 50)) in segments
    q0930 = stats(agent_101(DAY_EVENTS, config), config)[(Q, at(9, 30))]
    assert (q0930.wrap_up_ms, q0930.available_ms) == (30_000, 250_000)
    assert q0930.occupancy == (320 + 30) / (320 + 30 + 250)


def test_registration_lapses_without_a_refresh() -> None:
    events = [reg(at(8, 0), expires=600), reg(at(8, 9), expires=600),
              call("x", R, at(9, 0))]
    assert timeline(agent_101(events)) == [
        Segment(S.AVAILABLE, at(8, 0), at(8, 19)), Segment(S.OFFLINE, at(8, 19), at(9, 0)),
        Segment(S.RINGING, at(9, 0), None)]
    # the lapse is not assumed before the agent's newest event has passed it
    assert timeline(agent_101(events[:2])) == [Segment(S.AVAILABLE, at(8, 0), None)]


def test_state_changes_are_revisions_and_retractions() -> None:
    old = agent_101(DAY_EVENTS[:1])
    new = apply(old, DAY_EVENTS[2])  # c1 rings
    changes = state_changes(old, new)
    assert [(c.state, c.since, c.until, c.version) for c in changes] == [
        (S.AVAILABLE, at(9, 0), at(9, 10), 2), (S.RINGING, at(9, 10), None, 2)]
    # a late, earlier registration moves the available segment's start: the old is retracted
    later = apply(new, reg(at(8, 30)))
    retract = [c for c in state_changes(new, later) if c.deleted]
    assert [(c.since, c.state) for c in retract] == [(at(9, 0), S.AVAILABLE)]
    assert state_changes(new, apply(new, DAY_EVENTS[2])) == []  # a repeat changes nothing


def test_stats_changes_only_send_changed_intervals() -> None:
    old = agent_101(DAY_EVENTS[:-1])
    new = apply(old, DAY_EVENTS[-1])  # the unregister at 09:40 changes only 09:30-09:45
    keys = {(r.interval_kind, r.interval_start) for r in stats_changes(old, new)}
    assert keys == {(Q, at(9, 30)), (H, at(9, 0)), (D, DAY)}


def test_history_older_than_the_retention_is_pruned_without_changing_recent_records() -> None:
    config = AgentConfig(retention=timedelta(days=1))
    days = [DAY + timedelta(days=n) for n in range(4)]
    events = [reg(days[0] + timedelta(hours=8))]
    for n, day in enumerate(days):
        events += [call(f"d{n}", R, day + timedelta(hours=9)),
                   call(f"d{n}", A, day + timedelta(hours=9, seconds=5), agent="101"),
                   call(f"d{n}", E, day + timedelta(hours=9, minutes=3))]
    pruned = agent_101(events, config)
    full = agent_101(events, AgentConfig(retention=timedelta(days=30)))
    assert len(pruned.events) < len(full.events) and pruned.accepted == full.accepted
    limit = days[2]
    assert [s for s in timeline(pruned, config) if s.until is None or s.until > limit] == [
        s for s in timeline(full) if s.until is None or s.until > limit]
    assert stats(pruned, config, limit) == stats(full, config, limit)
    # an event older than the kept history is ignored
    assert apply(pruned, reg(days[0] + timedelta(hours=1)), config) is pruned


# --- property: arrival order does not matter ------------------------------------------------


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


@hsettings(max_examples=60, deadline=None)
@given(events=agent_day(), data=st.data())
def test_any_arrival_order_gives_the_same_timeline_and_stats(events, data) -> None:
    shuffled = data.draw(st.permutations(events + events[: len(events) // 3]))
    for agent in ("101", "102"):
        mine = fold("acme", agent, events)
        theirs = fold("acme", agent, shuffled)
        assert theirs.accepted == mine.accepted
        assert timeline(theirs) == timeline(mine)
        assert stats(theirs) == stats(mine)


@hsettings(max_examples=30, deadline=None)
@given(events=agent_day(), data=st.data())
def test_emitted_revisions_replay_to_the_final_rows(events, data) -> None:
    """Keeping the highest version per row key of everything emitted = the final answer."""
    shuffled = data.draw(st.permutations(events))
    state, rows, intervals = AgentState("acme", "101"), {}, {}
    for event in shuffled:
        new = apply(state, event)
        for change in state_changes(state, new):
            rows[change.since] = change
        for row in stats_changes(state, new):
            intervals[(row.interval_kind, row.interval_start)] = row
        state = new
    live = sorted((c for c in rows.values() if not c.deleted), key=lambda c: c.since)
    assert [Segment(c.state, c.since, c.until) for c in live] == timeline(state)
    final = stats(state)
    nonzero = {k: v for k, v in intervals.items() if k in final}
    assert {k: (v.talk_ms, v.offered, v.logged_in_ms) for k, v in nonzero.items()} == {
        k: (v.talk_ms, v.offered, v.logged_in_ms) for k, v in final.items()}


@pytest.mark.parametrize("bad", [{"format": 2}])
def test_unknown_state_format_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        AgentState.from_dict(bad)


def test_state_round_trips_through_its_dict() -> None:
    state = agent_101(DAY_EVENTS)
    assert AgentState.from_dict(state.to_dict()) == state


# --- the incremental fold equals the straightforward one, and stays linear ---------------


def _plain(state: AgentState) -> AgentState:
    """The same state without its derived data: every function recomputes from the events."""
    return AgentState.from_dict(state.to_dict())


def long_history(seed: int, days: int = 3, calls_per_day: int = 60) -> list[Event]:
    """Registrations (odd expires too), calls of every outcome incl. lost answers, internal
    calls and duplicates for agent 101 over ``days`` days, in a jittered, partly late order."""
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
    events.sort(key=lambda e: e.ts)
    arrival = [(i + (rnd.uniform(0, 30) if rnd.random() < 0.3 else 0), e)
               for i, e in enumerate(events)]
    arrival += [(rnd.uniform(0, len(events)), e) for e in rnd.sample(events, len(events) // 20)]
    return [e for _, e in sorted(arrival, key=lambda x: x[0])]


@pytest.mark.parametrize("config", [DEFAULT, AgentConfig(wrap_up_ms=20_000,
                                                         retention=timedelta(days=1))])
def test_the_incremental_fold_gives_what_recomputing_everything_gives(config) -> None:
    """Every step of a long history (pruning included): same state, records and revisions
    as the straightforward path (states without derived data recompute from their events)."""
    state = AgentState("acme", "101")
    for event in long_history(seed=5, days=4, calls_per_day=25):
        new = apply(state, event, config)
        plain_old, plain_new = _plain(state), _plain(new)
        assert apply(plain_old, event, config) == new  # same events kept, same version
        assert state_changes(state, new, config) == state_changes(plain_old, plain_new, config)
        assert stats_changes(state, new, config) == stats_changes(plain_old, plain_new, config)
        state = new
    assert timeline(state, config) == timeline(_plain(state), config)
    assert stats(state, config) == stats(_plain(state), config)


def test_the_work_per_event_does_not_grow_with_the_history(monkeypatch) -> None:
    """Counted, not timed: each event is serialised once, the timeline sweep and the interval
    splits visit a bounded number of points per event, however long the agent's history."""
    from streams.folds import agent_state as state_module
    from streams.folds import agent_stats as stats_module

    counted = {"json": 0, "sweep": 0, "split": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(state_module, "_event_json", counting("json", state_module._event_json))
    monkeypatch.setattr(state_module, "_status_of", counting("sweep", state_module._status_of))
    monkeypatch.setattr(stats_module, "split", counting("split", stats_module.split))

    def work(days: int) -> dict[str, float]:
        counted.update(json=0, sweep=0, split=0)
        config = AgentConfig(retention=timedelta(days=30))  # nothing pruned: history grows
        events = sorted(long_history(seed=9, days=days, calls_per_day=100),
                        key=lambda e: e.ts)  # in order, as a live agent mostly sees them
        state = AgentState("acme", "101")
        for event in events:
            new = apply(state, event, config)
            state_changes(state, new, config)
            stats_changes(state, new, config)
            new.to_dict()
            state = new
        return {name: n / len(events) for name, n in counted.items()}

    short, long = work(1), work(6)  # 6x the history, the same traffic per hour
    assert short["json"] <= 1 and long["json"] <= 1, (short, long)  # once per new event
    for name in ("sweep", "split"):  # quadratic work would grow ~6x per event
        assert long[name] < 1.5 * short[name] + 2, (name, short, long)
