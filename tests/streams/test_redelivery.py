"""A crash between the changelog write and the output send loses nothing.

Each agent writes its table row (the changelog) and then sends its records. A worker
killed in between restarts with the row rebuilt from the changelog and the event's offset
not committed: the event comes again and finds itself already folded. These tests play
that window exactly, in Faust's test context: deliver the events (the table is updated),
drop what the last delivery sent (it never reached Kafka), rebuild the table from its
changelog as a restarted worker does, deliver the same message again, and check that what
is sent now makes good what was dropped - the same records (for CDRs the same version),
plus the current records around the event, and nothing from the rest of the history.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faust_harness import OUTPUTS, Sent, deliver, recover, streams_on_channels
from test_callbacks_fold import CALLS, CLIENT, cdr

from core.agent_records import (
    AgentStateChange,
    AgentStats,
    CallbackItem,
    IntervalKind,
    record_from_json,
)
from core.events import Direction, Event, EventType, to_json
from core.records import Cdr, Disposition, cdr_from_json, cdr_to_json
from core.settings import load
from streams.agents import agent_stats as agent_stats_stage
from streams.app import Streams
from streams.folds.agent_state import AgentState, timeline
from streams.folds.agent_stats import stats
from streams.folds.callbacks import CallbackState, items
from streams.folds.cdr import CallState, to_cdr

DAY = datetime(2026, 11, 26, tzinfo=UTC)
T0 = DAY + timedelta(hours=9)
YESTERDAY = T0 - timedelta(days=1)


@pytest.fixture
def streams(tmp_path: Path) -> Streams:
    # no provisioning file: every tenant is in UTC, the zone the expected rows are cut in
    return streams_on_channels(load(environ={}, data_dir=tmp_path,
                                    provisioning_file=tmp_path / "none.toml"))


@pytest.fixture(autouse=True)
def no_version_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted worker numbers a row it takes over from the clock up
    (``agent_state.rebased``); here from the row's own count, so that a repeat's records
    can be compared with the first delivery's, version included."""
    monkeypatch.setattr(agent_stats_stage, "version_floor", lambda: 0)


def restart(streams: Streams, table: Any) -> None:
    """What a killed worker's successor holds: the rows rebuilt from the changelog (the
    agents keep nothing else between events)."""
    rows = dict(table)
    table.data.clear()
    asyncio.run(recover(table, rows))


# --- call assembly -----------------------------------------------------------------------


CALL = "r-1@127.0.0.1"


def call_event(kind: EventType, second: int, **fields: Any) -> Event:
    base: dict[str, Any] = {"caller": "+74951234567", "callee": "102", "call_id": CALL,
                            "direction": Direction.INBOUND}
    return Event(event_id=f"{CALL}/{kind.value}/{second}", type=kind, tenant="acme",
                 ts=T0 + timedelta(seconds=second), source="test", **(base | fields))


OFFERED = call_event(EventType.CALL_OFFERED, 0)
RINGING = call_event(EventType.CALL_RINGING, 1)
ANSWERED = call_event(EventType.CALL_ANSWERED, 5, agent="102")
ENDED = call_event(EventType.CALL_ENDED, 65, duration_ms=60_000)


def test_a_repeated_call_event_resends_the_lost_cdr_revision(streams: Streams) -> None:
    wire = [(CALL.encode(), to_json(e)) for e in (OFFERED, RINGING, ANSWERED, ENDED)]
    first = deliver(streams, "cdr", wire)
    lost = first[-1]["cdrs"]  # the closing revision: in the changelog, never sent
    assert [cdr_from_json(v).version for _, v in lost] == [4]
    restart(streams, streams.tables.calls)
    again = deliver(streams, "cdr", wire[-1:])[0]
    assert again["cdrs"] == lost  # the same bytes: same revision, same version
    assert again["dead_letter"] == []
    assert len(streams.tables.calls[CALL]["events"]) == 4


def test_any_repeated_call_event_resends_the_current_revision_only(streams: Streams) -> None:
    """An older event redelivered (it was folded before the crash window) sends what the
    call is now - one revision, not the one it first produced."""
    wire = [(CALL.encode(), to_json(e)) for e in (OFFERED, RINGING, ANSWERED, ENDED)]
    first = deliver(streams, "cdr", wire)
    restart(streams, streams.tables.calls)
    again = deliver(streams, "cdr", wire[:2])
    current = first[-1]["cdrs"]
    assert [sent["cdrs"] for sent in again] == [current, current]
    cdr_now = cdr_from_json(current[0][1])
    assert (cdr_now.version, cdr_now.closed, cdr_now.disposition) == (
        4, True, Disposition.ANSWERED)
    assert cdr_now == to_cdr(CallState.from_dict(streams.tables.calls[CALL]))


def test_a_repeated_event_sends_nothing_while_the_offer_is_missing(streams: Streams) -> None:
    wire = [(CALL.encode(), to_json(e)) for e in (RINGING, ANSWERED)]
    first = deliver(streams, "cdr", wire)
    assert [sent["cdrs"] for sent in first] == [[], []]  # held back: no call.offered yet
    again = deliver(streams, "cdr", wire[1:])[0]
    assert again == {name: [] for name in OUTPUTS}
    assert len(streams.tables.calls[CALL]["events"]) == 2


# --- agent state and statistics ----------------------------------------------------------


KEY = b"acme:102"


def agent_event(kind: EventType, at: datetime, call_id: str = "c1", **fields: Any) -> Event:
    base: dict[str, Any] = {"call_id": call_id, "caller": "101", "callee": "102",
                            "direction": Direction.INTERNAL}
    if kind in (EventType.AGENT_REGISTERED, EventType.AGENT_UNREGISTERED):
        base = {"agent": "102", "extra": {"expires": 7200}}
    return Event(event_id=f"{call_id}/{kind.value}/{at.isoformat()}", type=kind,
                 tenant="acme", ts=at, source="test", **(base | fields))


def history() -> list[Event]:
    """Yesterday: registered, one answered call. Today: registered, a call that rang from
    09:01 and was cancelled at 09:01:20."""
    def at(base: datetime, second: int) -> datetime:
        return base + timedelta(seconds=second)
    return [
        agent_event(EventType.AGENT_REGISTERED, at(YESTERDAY, 0), call_id="r0"),
        agent_event(EventType.CALL_RINGING, at(YESTERDAY, 60), call_id="c0"),
        agent_event(EventType.CALL_ANSWERED, at(YESTERDAY, 70), call_id="c0", agent="102"),
        agent_event(EventType.CALL_ENDED, at(YESTERDAY, 130), call_id="c0"),
        agent_event(EventType.AGENT_REGISTERED, at(T0, 0), call_id="r1"),
        agent_event(EventType.CALL_RINGING, at(T0, 60)),
        agent_event(EventType.CALL_CANCELLED, at(T0, 80)),
    ]


def _agent_rows(sent: dict[str, Sent]) -> tuple[list[AgentStateChange], list[AgentStats]]:
    assert {k for k, _ in sent["agent_states"] + sent["agent_stats"]} <= {KEY}
    return ([record_from_json(AgentStateChange, v) for _, v in sent["agent_states"]],
            [record_from_json(AgentStats, v) for _, v in sent["agent_stats"]])


def _current(streams: Streams, since: datetime
             ) -> tuple[list[AgentStateChange], list[AgentStats]]:
    """The agent's records as the table holds them now, from ``since`` on."""
    state = AgentState.from_dict(streams.tables.agents[KEY.decode()])
    segments = [AgentStateChange("acme", "102", s.since, s.state, s.until, state.accepted)
                for s in timeline(state) if s.until is None or s.until > since]
    return segments, list(stats(state, since=since).values())


def _content(record: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(record).items() if k != "version"}


def test_a_repeated_agent_event_resends_what_its_first_delivery_sent(streams: Streams) -> None:
    """The lost delivery is a late answer by a colleague at 09:01:05: the ring ends there,
    so the 'available since 09:01:20' segment is retracted and one since 09:01:05 begins.
    The repeat sends those very records (retraction included, same versions), the
    agent's current segments from the answer on and the day's interval rows - none of
    yesterday's, nor the day's earlier segments (a busy line holds a thousand)."""
    late_answer = agent_event(EventType.CALL_ANSWERED, T0 + timedelta(seconds=65),
                              agent="103")
    wire = [(KEY, to_json(e)) for e in (*history(), late_answer)]
    first = deliver(streams, "agent_stats", wire)
    lost_changes, lost_stats = _agent_rows(first[-1])
    assert [(c.since, c.deleted) for c in lost_changes] == [
        (T0 + timedelta(seconds=60), False), (T0 + timedelta(seconds=65), False),
        (T0 + timedelta(seconds=80), True)]
    assert lost_stats  # the ring time moved from ringing to available
    restart(streams, streams.tables.agents)

    again = deliver(streams, "agent_stats", wire[-1:])[0]
    changes, rows = _agent_rows(again)
    assert set(first[-1]["agent_states"]) <= set(again["agent_states"])  # same bytes
    assert set(first[-1]["agent_stats"]) <= set(again["agent_stats"])
    # the rest is the agent's current segments from the answer on and interval rows of
    # the day (same content, current version); no segment before the ring it cut short
    segments, _ = _current(streams, T0 + timedelta(seconds=65))
    _, intervals = _current(streams, DAY)
    kept = [c for c in changes if not c.deleted]
    assert kept == [lost_changes[0], *segments]
    assert [(c.since, c.until) for c in kept] == [
        (T0 + timedelta(seconds=60), T0 + timedelta(seconds=65)),
        (T0 + timedelta(seconds=65), None)]
    assert rows == intervals
    assert min(r.interval_start for r in rows) == DAY
    state = AgentState.from_dict(streams.tables.agents[KEY.decode()])
    assert state.accepted == 8  # all 8 folded; yesterday's call is final and let go
    assert set(state.calls) == {"c1"} and [f.ts for f in state.registrations] == [T0]


def test_a_repeated_agent_event_that_changed_nothing_resends_from_its_time_only(
    streams: Streams,
) -> None:
    """call.offered at 09:00:30 changes no span and is older than the newest event: its
    first delivery sent nothing. Its repeat sends the segments from its time on and the
    interval rows of its day - a bounded set, equal in content to what the table's state
    says - not the history."""
    offered = agent_event(EventType.CALL_OFFERED, T0 + timedelta(seconds=30), call_id="c9")
    wire = [(KEY, to_json(e)) for e in (*history(), offered)]
    first = deliver(streams, "agent_stats", wire)
    assert _agent_rows(first[-1]) == ([], [])
    before_crash = {name: [v for sent in first for _, v in sent[name]]
                    for name in ("agent_states", "agent_stats")}
    restart(streams, streams.tables.agents)

    changes, rows = _agent_rows(deliver(streams, "agent_stats", wire[-1:])[0])
    assert changes == _current(streams, T0 + timedelta(seconds=30))[0]
    assert [c.since for c in changes] == [T0, T0 + timedelta(seconds=60),
                                          T0 + timedelta(seconds=80)]
    assert rows == _current(streams, DAY)[1]
    assert {(r.interval_kind, r.interval_start) for r in rows} == {
        (IntervalKind.QUARTER, T0), (IntervalKind.HOUR, T0), (IntervalKind.DAY, DAY)}
    all_rows = stats(AgentState.from_dict(streams.tables.agents[KEY.decode()]))
    # yesterday's rows (09:00-11:00 logged in: 8 quarters, 2 hours, the day) are final:
    # the row let go of them, and they are not sent again
    assert len(all_rows) == 3
    # what is sent again is what was last sent for each key, but for the version
    last: dict[Any, dict[str, Any]] = {}
    for raw in before_crash["agent_stats"]:
        row = record_from_json(AgentStats, raw)
        last[(row.interval_kind, row.interval_start)] = _content(row)
    assert [_content(r) for r in rows] == [last[(r.interval_kind, r.interval_start)]
                                           for r in rows]
    assert {r.version for r in rows} == {8}


def test_agent_router_sends_a_redelivered_event_again(streams: Streams) -> None:
    """The router keeps no state: a redelivered event goes to every agent again, where
    it is a repeat (above)."""
    ringing = to_json(agent_event(EventType.CALL_RINGING, T0))
    first, again = deliver(streams, "agent_router", [(b"c1", ringing)] * 2)
    assert first["agent_events"] == again["agent_events"] == [
        (b"acme:101", ringing), (KEY, ringing)]


# --- callbacks ---------------------------------------------------------------------------


CLIENT_KEY = f"acme:{CLIENT}".encode()


def _items(sent: dict[str, Sent]) -> list[CallbackItem]:
    assert {k for k, _ in sent["callbacks"]} <= {CLIENT_KEY}
    return [record_from_json(CallbackItem, v) for _, v in sent["callbacks"]]


def test_a_repeated_cdr_revision_resends_the_clients_items(streams: Streams) -> None:
    """The last revision folded (m3 missed: opens item m3) lost its output; the repeat
    sends item m3 again, same version, and the client's other current item (m1)."""
    wire = [(CLIENT_KEY, cdr_to_json(c)) for c in CALLS[:5]]
    first = deliver(streams, "callbacks", wire)
    lost = _items(first[-1])
    assert [(i.item_id, i.deleted) for i in lost] == [("m3", False)]
    restart(streams, streams.tables.callbacks)

    again = deliver(streams, "callbacks", wire[-1:])[0]
    assert set(first[-1]["callbacks"]) <= set(again["callbacks"])  # same bytes
    state = CallbackState.from_dict(streams.tables.callbacks[CLIENT_KEY.decode()])
    assert _items(again) == items(state)
    assert [i.item_id for i in _items(again)] == ["m1", "m3"]


def test_a_repeated_revision_resends_the_retraction_it_made(streams: Streams) -> None:
    """m1 arrives after m2 and merges item m2 into item m1 (two attempts): the lost
    output held item m1 and the retraction of m2; the repeat sends both again."""
    m1, m2 = CALLS[0], CALLS[1]
    wire = [(CLIENT_KEY, cdr_to_json(m2)), (CLIENT_KEY, cdr_to_json(m1))]
    first = deliver(streams, "callbacks", wire)
    assert [(i.item_id, i.attempts, i.deleted) for i in _items(first[-1])] == [
        ("m1", 2, False), ("m2", 1, True)]
    restart(streams, streams.tables.callbacks)
    again = deliver(streams, "callbacks", wire[-1:])[0]
    assert again["callbacks"] == first[-1]["callbacks"]


def test_an_older_revision_of_a_known_call_resends_the_current_items(
    streams: Streams,
) -> None:
    """The CDR agent re-sends a call's current revision on a repeat, and the callback
    router re-keys whatever it is given: an older revision arriving again is a repeat
    too, and sends the items as they are now (m1 missed: its in-progress revision changes
    nothing)."""
    ringing = cdr("m1", CALLS[0].started_at, Disposition.IN_PROGRESS, version=1)
    wire = [(CLIENT_KEY, cdr_to_json(CALLS[0])), (CLIENT_KEY, cdr_to_json(ringing))]
    first, again = deliver(streams, "callbacks", wire)
    assert again["callbacks"] == first["callbacks"]
    assert [(i.item_id, i.version) for i in _items(again)] == [("m1", 3)]


def test_a_revision_of_another_client_or_an_unknown_call_sends_nothing(
    streams: Streams,
) -> None:
    """Only a revision the client's state holds is a repeat: a call too old for the kept
    history was ignored the first time and is ignored again."""
    recent = cdr("m9", CALLS[0].started_at + timedelta(days=40), Disposition.BUSY)
    too_old: Cdr = CALLS[0]
    wire = [(CLIENT_KEY, cdr_to_json(recent)), (CLIENT_KEY, cdr_to_json(too_old)),
            (CLIENT_KEY, cdr_to_json(too_old))]
    sent = deliver(streams, "callbacks", wire)
    assert [len(s["callbacks"]) for s in sent] == [1, 0, 0]


def test_callback_router_sends_a_redelivered_revision_again(streams: Streams) -> None:
    raw = cdr_to_json(CALLS[0])
    first, again = deliver(streams, "callback_router", [(b"m1", raw)] * 2)
    assert first["callback_cdrs"] == again["callback_cdrs"] == [(CLIENT_KEY, raw)]
