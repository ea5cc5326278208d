"""Routing facts from agent states and CRM lookups (streams.folds.routing): pure folds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.agent_records import AgentStateChange, AgentStatus
from core.routing import FactKind, RoutingFact, fact_from_json, fact_key, fact_to_json
from streams.folds.routing import (
    agent_fact,
    idle_order,
    manager_fact,
    manager_of,
    remember_lookup,
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
