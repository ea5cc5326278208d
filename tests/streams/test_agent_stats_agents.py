"""The agent-stats and callback agents in Faust's test context (no broker, memory store).

Output topics (and the repartition topics the routers write) are in-memory channels, so
the tests read back the keys and JSON the agents sent.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import call_events
from faust_harness import run, streams_on_channels
from test_callbacks_fold import CALLS, CLIENT

from core.agent_records import (
    AgentStateChange,
    AgentStats,
    AgentStatus,
    CallbackItem,
    CallbackStatus,
    IntervalKind,
    record_from_json,
)
from core.events import Direction, EventType, to_json
from core.records import cdr_to_json
from core.settings import load
from streams.agents import agent_stats as stage
from streams.agents.agent_stats import fold_into
from streams.app import Streams
from streams.folds.agent_state import AgentState, timeline

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


ev = call_events("c1", t0=T0, unit="s", source="test", caller="101", callee="102",
                 direction=Direction.INTERNAL)


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    return streams_on_channels(load(environ={}, data_dir=tmp_path))


def test_router_sends_each_event_to_every_extension_it_concerns(streams: Streams) -> None:
    ringing = to_json(ev(EventType.CALL_RINGING, 1))
    registered = to_json(ev(EventType.AGENT_REGISTERED, 0, agent="101"))
    out = run(streams, "agent_router",
              [(b"c1", ringing), (b"acme:101", registered), (b"x", b"{bad")])
    assert out["agent_events"] == [(b"acme:101", ringing), (b"acme:102", ringing),
                                   (b"acme:101", registered)]


def test_agent_fold_publishes_segments_and_interval_stats(streams: Streams) -> None:
    events = [ev(EventType.AGENT_REGISTERED, 0, agent="102"), ev(EventType.CALL_RINGING, 60),
              ev(EventType.CALL_ANSWERED, 70, agent="102"), ev(EventType.CALL_ENDED, 130)]
    messages = [(b"acme:102", to_json(e)) for e in events]
    # one repeated delivery: the day's records again
    out = run(streams, "agent_stats", messages + messages[1:2])
    assert {key for key, _ in out["agent_states"] + out["agent_stats"]} == {b"acme:102"}
    changes = [record_from_json(AgentStateChange, v) for _, v in out["agent_states"]]
    final = {c.since: c for c in changes}  # the highest revision of each segment
    assert [(c.state, c.since, c.until) for c in final.values()] == [
        (AgentStatus.AVAILABLE, at(0), at(60)), (AgentStatus.RINGING, at(60), at(70)),
        (AgentStatus.ON_CALL, at(70), at(130)), (AgentStatus.AVAILABLE, at(130), None)]
    # the repeat re-sent the four current segments (test_redelivery.py), as they were
    assert changes[-4:] == list(final.values())
    assert {c.version for c in changes[-4:]} == {4}
    assert [c.version for c in changes] == sorted(c.version for c in changes)
    rows = [record_from_json(AgentStats, v) for _, v in out["agent_stats"]]
    quarter = [r for r in rows if r.interval_kind is IntervalKind.QUARTER][-1]
    assert (quarter.talk_ms, quarter.ringing_ms, quarter.available_ms) == (60_000, 10_000, 60_000)
    assert (quarter.offered, quarter.answered, quarter.handled, quarter.version) == (1, 1, 1, 4)
    state = AgentState.from_dict(streams.tables.agents["acme:102"])
    assert timeline(state)[-1].state is AgentStatus.AVAILABLE


def test_callback_router_rekeys_cdrs_by_client(streams: Streams) -> None:
    internal = replace(CALLS[0], direction="internal", caller="101", callee="102")
    out = run(streams, "callback_router", [(b"m1", cdr_to_json(CALLS[0])),
                                           (b"i9", cdr_to_json(internal)), (b"junk", b"{")])
    assert out["callback_cdrs"] == [(f"acme:{CLIENT}".encode(), cdr_to_json(CALLS[0]))]


def test_callback_fold_publishes_item_revisions(streams: Streams) -> None:
    key = f"acme:{CLIENT}".encode()
    out = run(streams, "callbacks", [(key, cdr_to_json(c)) for c in CALLS])
    sent = [record_from_json(CallbackItem, v) for _, v in out["callbacks"]]
    assert {k for k, _ in out["callbacks"]} == {key}
    latest = {i.item_id: i for i in sent}
    assert [(i.item_id, i.status, i.attempts) for i in latest.values()] == [
        ("m1", CallbackStatus.CLOSED, 2), ("m3", CallbackStatus.OPEN, 1)]
    assert latest["m1"].called_back_by == "102"
    assert f"acme:{CLIENT}" in streams.tables.callbacks


def day_of_102() -> list[Any]:
    return [ev(EventType.AGENT_REGISTERED, 0, agent="102"), ev(EventType.CALL_RINGING, 60),
            ev(EventType.CALL_ANSWERED, 70, agent="102"), ev(EventType.CALL_ENDED, 130),
            ev(EventType.CALL_RINGING, 200, call_id="c2"),
            # not from the wire: microseconds, which the row cuts to milliseconds
            replace(ev(EventType.CALL_CANCELLED, 205, call_id="c2"),
                    ts=at(205) + timedelta(microseconds=1_500)),
            ev(EventType.AGENT_UNREGISTERED, 300, agent="102")]


def test_fold_into_keeps_nothing_but_the_table_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table row is the truth: a row replaced behind the stage's back (a changelog
    recovery after a rebalance, here a JSON round trip) is decoded afresh and gives the
    same outputs as the row left in place (whose decoded state the stage reuses; the
    take-over's version floor is 0 here), and an in-memory event with microseconds folds
    as its wire form (milliseconds) would."""
    monkeypatch.setattr(stage, "version_floor", lambda: 0)
    events = day_of_102()
    table: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    for event in events:
        table = json.loads(json.dumps(copy.deepcopy(table)))  # recovered from the changelog
        assert fold_into(table, "acme:102", event) == fold_into(reference, "acme:102", event)
    assert table == reference
    state = AgentState.from_dict(table["acme:102"])
    assert state.accepted == len(events)
    assert state.segments[-1].state is AgentStatus.OFFLINE
    assert timeline(state)[-2].until == at(300)


def test_a_row_taken_over_is_numbered_from_the_floor_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the first event of an agent finds its row in the table but not in
    the stage's memory: its records and the next ones are numbered from the floor up
    (above any record the previous owner sent ahead of its row)."""
    events = day_of_102()
    table: dict[str, Any] = {}
    for event in events[:4]:
        fold_into(table, "acme:102", event)
    floor = 10**15
    monkeypatch.setattr(stage, "version_floor", lambda: floor)
    table = json.loads(json.dumps(table))  # a new worker recovered it
    changes, rows = fold_into(table, "acme:102", events[4])
    assert changes and rows
    assert {c.version for c in changes} == {r.version for r in rows} == {floor + 1}
    changes, _ = fold_into(table, "acme:102", events[5])  # remembered now: the same owner
    assert {c.version for c in changes} == {floor + 2}
    assert AgentState.from_dict(table["acme:102"]).accepted == floor + 2


def test_a_row_left_in_place_is_not_decoded_again(monkeypatch) -> None:
    """The stage reuses the state it decoded while the table holds the very row it wrote
    (decoding was a third of the worker's time); any other object is decoded."""
    calls = []
    original = AgentState.from_dict.__func__

    def counting(cls, data, *args, **kwargs):
        calls.append(1)
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(AgentState, "from_dict", classmethod(counting))
    table: dict[str, Any] = {}
    for event in (ev(EventType.AGENT_REGISTERED, 0, agent="102"),
                  ev(EventType.CALL_RINGING, 60), ev(EventType.CALL_ANSWERED, 70, agent="102")):
        fold_into(table, "acme:102", event)
    assert calls == []
    table["acme:102"] = copy.deepcopy(table["acme:102"])  # recovered: another object
    fold_into(table, "acme:102", ev(EventType.CALL_ENDED, 130))
    assert calls == [1]
