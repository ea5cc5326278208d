"""Routing facts from agent states and CRM lookups (streams.folds.routing): pure folds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.agent_records import AgentStateChange, AgentStats, AgentStatus, IntervalKind
from core.routing import FactKind, RoutingFact, fact_from_json, fact_key, fact_to_json
from streams.folds.routing import (
    agent_fact,
    calls_changed,
    calls_fact,
    idle_order,
    least_calls_order,
    manager_fact,
    manager_of,
    remember_lookup,
    round_robin_order,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S = AgentStatus


def revisions(timeline: list[tuple[AgentStatus, int]]) -> list[AgentStateChange]:
    """What the agent fold publishes as the timeline grows one segment per version:
    the previous segment closed, then the new open one (``since`` order)."""
    out: list[AgentStateChange] = []
    since = T0
    for version, (state, gap_s) in enumerate(timeline, start=1):
        start = since + timedelta(seconds=gap_s)
        if out:
            last = out[-1]
            out.append(AgentStateChange("acme", "101", last.since, last.state, start, version))
        out.append(AgentStateChange("acme", "101", start, state, None, version))
        since = start
    return out


def fold(changes: list[AgentStateChange]) -> RoutingFact | None:
    fact = None
    for change in changes:
        fact = agent_fact(fact, change) or fact
    return fact


timelines = st.lists(st.tuples(st.sampled_from(list(AgentStatus)),
                               st.integers(min_value=1, max_value=600)), min_size=1,
                     max_size=12)


@given(timelines)
def test_the_fact_is_the_newest_open_segment(timeline: list[tuple[AgentStatus, int]]) -> None:
    changes = revisions(timeline)
    fact = fold(changes)
    last = changes[-1]
    assert fact == RoutingFact(FactKind.AGENT, "acme", "101", last.state.value, last.since,
                               last.version)


@given(timelines, st.data())
def test_redelivered_older_revisions_change_nothing(timeline: list[tuple[AgentStatus, int]],
                                                    data: st.DataObject) -> None:
    changes = revisions(timeline)
    again = data.draw(st.lists(st.sampled_from(changes), max_size=10))
    assert fold(changes + again) == fold(changes)


def test_wrap_up_then_available_from_its_end() -> None:
    bye, free = T0, T0 + timedelta(seconds=15, milliseconds=200)
    fact = fold([AgentStateChange("acme", "101", T0 - timedelta(seconds=60), S.ON_CALL, bye, 7),
                 AgentStateChange("acme", "101", bye, S.WRAP_UP, free, 7),
                 AgentStateChange("acme", "101", free, S.AVAILABLE, None, 7)])
    assert fact is not None and (fact.value, fact.since) == ("available", free)


def test_a_retracted_current_segment_is_not_routed_to() -> None:
    open_ = AgentStateChange("acme", "101", T0, S.AVAILABLE, None, 3)
    fact = agent_fact(agent_fact(None, open_), AgentStateChange(
        "acme", "101", T0, S.AVAILABLE, None, 4, deleted=True))
    assert fact is not None and fact.value == "offline"


def test_an_unchanged_fact_is_not_sent_again() -> None:
    change = AgentStateChange("acme", "101", T0, S.AVAILABLE, None, 3)
    assert agent_fact(agent_fact(None, change), change) is None


def test_the_newest_lookup_that_found_a_manager_wins() -> None:
    lookups = remember_lookup({}, "amocrm", "101", 1000)
    lookups = remember_lookup(lookups, "bitrix24", "102", 2000)
    assert manager_of(lookups) == ("102", "bitrix24", 2000)
    # the manager changed in amoCRM: its next lookup wins
    lookups = remember_lookup(lookups, "amocrm", "103", 3000)
    assert manager_of(lookups) == ("103", "amocrm", 3000)
    # a CRM that no longer knows the client does not erase what the other one knows
    lookups = remember_lookup(lookups, "amocrm", None, 4000)
    assert manager_of(lookups) == ("102", "bitrix24", 2000)
    # an older lookup arriving late is ignored
    assert remember_lookup(lookups, "amocrm", "109", 3500) == lookups
    assert manager_fact("acme", "+79160000001", {"onec": (None, 5)}).value is None


@given(st.dictionaries(st.sampled_from(["101", "102", "103", "104", "105"]),
                       st.integers(min_value=0, max_value=100)),
       st.integers(min_value=0, max_value=100))
def test_idle_order_takes_the_available_idle_the_longest_first(
        since: dict[str, int], now: int) -> None:
    members = ["103", "101", "105", "102"]
    order = idle_order(members, since, now)
    assert set(order) == {m for m in members if m in since and since[m] <= now}
    keys = [(since[m], members.index(m)) for m in order]
    assert keys == sorted(keys)


def test_facts_round_trip_and_are_keyed_by_subject() -> None:
    fact = RoutingFact(FactKind.MANAGER, "acme", "+79160000001", "103", None, 5, "amocrm")
    assert fact_from_json(fact_to_json(fact)) == fact
    assert fact_key(fact) == "manager:acme:+79160000001"


def day_row(day: int, answered: int, version: int, kind: IntervalKind = IntervalKind.DAY,
            agent: str = "101") -> AgentStats:
    start = datetime(2026, 12, day, tzinfo=UTC)
    return AgentStats("acme", agent, kind, start, version, 0, 0, 0, 0, 0, answered + 1,
                      answered, 1, answered, 0, None, None, start)


def day_end(row: AgentStats) -> datetime:
    return row.interval_start + timedelta(days=1)


def fold_calls(rows: list[AgentStats]) -> RoutingFact | None:
    fact = None
    for row in rows:
        fact = calls_fact(fact, row, day_end(row)) or fact
    return fact


day_rows = st.lists(st.tuples(st.integers(min_value=1, max_value=3),
                              st.integers(min_value=0, max_value=20),
                              st.integers(min_value=1, max_value=9)), min_size=1, max_size=15)


@given(day_rows, st.randoms(use_true_random=False))
def test_calls_today_is_the_newest_revision_of_the_newest_day_in_any_order(
        rows: list[tuple[int, int, int]], rnd) -> None:
    """Late revisions of a past day and redelivered older ones never win: the fact is a
    function of the set of rows, not of the order they come in."""
    # one answered count per (day, version): a revision is one content
    content = {(d, v): a for d, a, v in rows}
    records = [day_row(d, a, v) for (d, v), a in content.items()]
    newest_day = max(d for d, _ in content)
    newest_version = max(v for d, v in content if d == newest_day)
    shuffled = records[:]
    rnd.shuffle(shuffled)
    for order in (records, shuffled):
        fact = fold_calls(order)
        assert fact is not None
        assert (fact.kind, fact.subject, fact.value) == (
            FactKind.CALLS, "101", str(content[(newest_day, newest_version)]))
        assert fact.since == datetime(2026, 12, newest_day, tzinfo=UTC)
        assert fact.until == fact.since + timedelta(days=1)


def test_calls_today_counts_day_rows_only_and_sends_a_changed_count_once() -> None:
    assert calls_fact(None, day_row(1, 3, 1, IntervalKind.HOUR), T0) is None
    first = calls_fact(None, day_row(1, 3, 1), T0)
    assert first is not None and first.value == "3" and fact_key(first) == "calls:acme:101"
    again = calls_fact(first, day_row(1, 3, 2), T0)  # same count, a newer revision
    assert again is not None and not calls_changed(first, again)
    assert calls_fact(again, day_row(1, 5, 1), T0) is None  # an older revision
    assert fact_from_json(fact_to_json(first)) == first


members_available = st.dictionaries(st.sampled_from(["101", "102", "103", "104", "105"]),
                                    st.integers(min_value=0, max_value=100))


@given(members_available, st.dictionaries(st.sampled_from(["101", "102", "103", "104", "105"]),
                                          st.integers(min_value=0, max_value=5)),
       st.integers(min_value=0, max_value=100))
def test_least_calls_rings_the_fewest_calls_first_ties_by_idle_then_order(
        since: dict[str, int], calls: dict[str, int], now: int) -> None:
    members = ["103", "101", "105", "102"]
    order = least_calls_order(members, since, calls, now)
    assert set(order) == {m for m in members if m in since and since[m] <= now}
    keys = [(calls.get(m, 0), since[m], members.index(m)) for m in order]
    assert keys == sorted(keys)


def test_least_calls_prefers_fewer_calls_over_longer_idle() -> None:
    order = least_calls_order(["101", "102"], {"101": 10, "102": 50}, {"101": 4, "102": 1}, 60)
    assert order == ["102", "101"]


@given(members_available, st.integers(min_value=-1, max_value=8),
       st.integers(min_value=0, max_value=100))
def test_round_robin_starts_after_the_last_member_and_skips_the_unavailable(
        since: dict[str, int], last: int, now: int) -> None:
    members = ["103", "101", "105", "102"]
    order = round_robin_order(members, since, last, now)
    available = [m for m in members if m in since and since[m] <= now]
    assert sorted(order) == sorted(available)
    start = 0 if last < 0 else (last + 1) % len(members)
    positions = [(members.index(m) - start) % len(members) for m in order]
    assert positions == sorted(positions)


def test_round_robin_rotates_over_consecutive_calls() -> None:
    """Each call rings the first of its order; the next starts after it (rrmemory), and a
    busy member (no available fact) is passed over."""
    members = ["101", "102", "103"]
    since = {"101": 0, "102": 0, "103": 0}
    last, picked = -1, []
    for busy in (None, None, None, "102", None):
        free = {m: s for m, s in since.items() if m != busy}
        first = round_robin_order(members, free, last, 10)[0]
        picked.append(first)
        last = members.index(first)
    assert picked == ["101", "102", "103", "101", "102"]
    assert round_robin_order(members, {"101": 0, "103": 0}, 0, 10) == ["103", "101"]
