"""The folds' per-process caches never outvote the table: a row the table holds that this
process did not write last (recovered from the changelog, another worker's) is decoded
afresh, and the caches of pure functions give what the functions give."""

from __future__ import annotations

import copy

from builders import call_events

from core.events import Direction, EventType, from_json, to_json
from streams.agents import agent_stats as agent_stats_stage
from streams.agents import callbacks as callback_stage
from streams.agents import cdr as cdr_stage
from streams.folds.agent_state import AgentState
from streams.folds.agent_timeline import _call_of, call_of, fact_of


def _call(call_id: str = "c-cache") -> list:
    ev = call_events(call_id, caller="+74951234567", callee="101",
                     direction=Direction.INBOUND)
    return [ev(EventType.CALL_OFFERED, 0), ev(EventType.CALL_RINGING, 100, agent="101"),
            ev(EventType.CALL_ANSWERED, 3_000, agent="101"), ev(EventType.CALL_ENDED, 9_000)]


def test_a_cdr_row_the_table_got_elsewhere_is_decoded_not_taken_from_the_cache() -> None:
    offered, ringing, answered, ended = _call()
    table: dict = {}
    cdr_stage.fold_into(table, offered)
    early = copy.deepcopy(table["c-cache"])  # the row after the offer only
    cdr_stage.fold_into(table, ringing)
    cdr_stage.fold_into(table, answered)
    table["c-cache"] = early  # e.g. a changelog holding an older row after a restart
    got = cdr_stage.fold_into(table, ended)

    fresh: dict = {}
    for event in (offered, ended):
        expected = cdr_stage.fold_into(fresh, event)
    assert got == expected
    assert table["c-cache"] == fresh["c-cache"]


def test_a_callback_row_the_table_got_elsewhere_is_decoded_not_taken_from_the_cache() -> None:
    calls: dict = {}
    first, second, third = ([cdr_stage.fold_into(calls, e) for e in _call(call_id)][-1]
                            for call_id in ("c-a", "c-b", "c-c"))
    key = "acme:+74951234567"
    table: dict = {}
    callback_stage.fold_into(table, key, first)
    early = copy.deepcopy(table[key])  # the client's row with the first call only
    callback_stage.fold_into(table, key, second)
    table[key] = early
    got = callback_stage.fold_into(table, key, third)

    fresh: dict = {}
    callback_stage.fold_into(fresh, key, first)
    expected = callback_stage.fold_into(fresh, key, third)
    assert got == expected
    assert table[key] == fresh[key]


def test_decoding_the_same_bytes_again_gives_the_same_event() -> None:
    raw = to_json(_call()[2])
    assert cdr_stage.decode(raw) == from_json(raw)
    assert cdr_stage.decode(raw) is cdr_stage.decode(raw)


def test_call_of_remembered_equals_computed() -> None:
    facts = tuple(fact_of(e) for e in _call())
    for n in range(1, len(facts) + 1):
        part = facts[:n]
        assert call_of("101", "c-cache", part) == _call_of("101", "c-cache", part)
        assert call_of("102", "c-cache", part) == _call_of("102", "c-cache", part)
        assert call_of("101", "c-cache", list(part)) == _call_of("101", "c-cache", part)


def test_an_agent_row_written_with_the_prior_encodings_equals_one_encoded_afresh() -> None:
    """``AgentState.to_dict(prior=...)`` reuses the encodings of calls the event left
    alone; the row is still exactly the fresh encoding - after a fold from the cache,
    after a row decoded from the table (fresh objects) and against a prior of an older
    format (nothing reused)."""
    table: dict = {}
    events = [e for n in range(6) for e in _call(f"c-{n}")]
    events.sort(key=lambda e: e.ts)
    for n, event in enumerate(events):
        if n == 10:  # a restart: the row is read back from the changelog
            table["acme:101"] = copy.deepcopy(table["acme:101"])
        agent_stats_stage.fold_into(table, "acme:101", event)
        row = table["acme:101"]
        state = AgentState.from_dict(row)
        assert row == state.to_dict()
        assert state.to_dict(prior=(state, row)) == row
    state = AgentState.from_dict(table["acme:101"])
    assert len(state.calls) > 1  # the calls overlap: several encodings were lent
    assert state.to_dict(prior=(state, {"format": 1, "events": []})) == state.to_dict()
